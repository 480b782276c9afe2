"""Crossmatch of two hosted director tables (czar/crossmatch/hosted.py): ADQL/Qserv SQL, the
Python API and ``qengine xmatch --against``, differential against astropy, with positions at
chunk edges and corners, RA 0/360 and the poles; and the radius/chunking limits."""
from __future__ import annotations

import argparse
import math

import astropy.units as u
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord, match_coordinates_sky, search_around_sky

from czar.crossmatch.cli import add_arguments
from czar.crossmatch.cli import run as cli_run
from czar.crossmatch.hosted import crossmatch_hosted
from czar.local import LocalCluster
from qengine.catalog import Column, Partitioning, Table
from qengine.chunker import Chunker
from qengine.errors import QueryError
from tests.helpers import DB, PART, build_store, edge_positions

TOL = 1e-9  # degrees
FAR = Table(name="Far", role="director", id_column="gid", ra_column="ra", dec_column="dec",
            columns=(Column("gid", "long", nullable=False), Column("ra", "double", unit="deg", ucd="pos.eq.ra;meta.main"),
                     Column("dec", "double", unit="deg", ucd="pos.eq.dec;meta.main"),
                     Column("gmag", "float", unit="mag", ucd="phot.mag;em.opt")))
THIN = Partitioning(num_stripes=PART.num_stripes, num_sub_stripes=PART.num_sub_stripes, overlap=0.01)
OTHER = Partitioning(num_stripes=12, num_sub_stripes=6, overlap=0.5)


def _far_rows(obj: pa.Table, seed: int) -> pa.Table:
    """Object positions moved by up to 0.4 deg (so pairs straddle chunk edges), exact copies, and
    edge/corner/pole/RA-wrap points of their own."""
    rng = np.random.default_rng(seed)
    n = obj.num_rows
    idx = rng.integers(0, n, n)
    c0 = SkyCoord(obj["ra"].to_numpy()[idx] * u.deg, obj["decl"].to_numpy()[idx] * u.deg)
    moved = c0.directional_offset_by(rng.uniform(0, 360, n) * u.deg, rng.uniform(0, 0.4, n) * u.deg)
    ra, dec = moved.ra.deg, moved.dec.deg
    ra[: n // 10], dec[: n // 10] = c0.ra.deg[: n // 10], c0.dec.deg[: n // 10]
    era, edec = edge_positions(Chunker(PART.num_stripes, PART.num_sub_stripes, PART.overlap), rng, n // 3)
    ra, dec = np.concatenate([ra, era]), np.concatenate([dec, edec])
    return pa.table({"gid": pa.array(np.arange(ra.size, dtype=np.int64) + 10**6), "ra": ra, "dec": dec,
                     "gmag": pa.array(rng.uniform(10, 20, ra.size).astype(np.float32))})


@pytest.fixture(scope="module")
def hosted(tmp_path_factory):
    from partitioner.ingest import IngestOptions, ingest

    tmp = tmp_path_factory.mktemp("xmatch-hosted")
    root = tmp / "root"
    tables = build_store(root, n_objects=1500, rows_per_file=1500)
    far = _far_rows(tables["Object"], 11)
    pq.write_table(far, tmp / "far.parquet")
    opts = IngestOptions(progress=False, rows_per_file=1000, row_group_rows=500)
    ingest(root, DB, FAR, [tmp / "far.parquet"], partitioning=PART, options=opts)
    for name, part in (("Thin", THIN), ("Other", OTHER)):
        t = Table(name=name, role=FAR.role, id_column="gid", ra_column="ra", dec_column="dec", columns=FAR.columns)
        ingest(root, DB, t, [tmp / "far.parquet"], partitioning=part, options=opts)
    with LocalCluster(root, workers=2) as qe:
        yield qe, tables["Object"], far, root


def _astropy(obj: pa.Table, far: pa.Table, radius: float) -> dict:
    c1 = SkyCoord(obj["ra"].to_numpy() * u.deg, obj["decl"].to_numpy() * u.deg)
    c2 = SkyCoord(far["ra"].to_numpy() * u.deg, far["dec"].to_numpy() * u.deg)
    i1, i2, d2, _ = search_around_sky(c1, c2, radius * u.deg)
    a, b = obj["objectId"].to_numpy(), far["gid"].to_numpy()
    return {(int(a[i]), int(b[j])): float(s) for i, j, s in zip(i1, i2, d2.deg)}


def _same(got: dict, want: dict) -> None:
    assert set(got) == set(want), (sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5])
    for k, s in want.items():
        assert abs(got[k] - s) <= TOL, (k, got[k], s)


SQL_FORMS = [
    ("adql", ("SELECT o.objectId, g.gid, DISTANCE(POINT('ICRS', o.ra, o.decl), POINT('ICRS', g.ra, g.dec)) AS d "
              "FROM {db}.Object AS o JOIN {db}.Far AS g "
              "ON 1 = CONTAINS(POINT('ICRS', g.ra, g.dec), CIRCLE('ICRS', o.ra, o.decl, {r}))")),
    ("adql", ("SELECT o.objectId, g.gid, DISTANCE(POINT('ICRS', g.ra, g.dec), POINT('ICRS', o.ra, o.decl)) AS d "
              "FROM {db}.Far AS g, {db}.Object AS o "
              "WHERE DISTANCE(POINT('ICRS', o.ra, o.decl), POINT('ICRS', g.ra, g.dec)) < {r}")),
    ("qserv", ("SELECT o.objectId, g.gid, scisql_angSep(o.ra, o.decl, g.ra, g.dec) AS d "
               "FROM {db}.Object AS o JOIN {db}.Far AS g ON scisql_angSep(o.ra, o.decl, g.ra, g.dec) < {r}")),
]


@pytest.mark.parametrize("radius", [1e-4, 0.05, 0.49])
@pytest.mark.parametrize("lang,sql", SQL_FORMS)
def test_sql_equals_astropy(hosted, lang, sql, radius):
    """Every pair within r (up to the far table's overlap, 0.5 deg), found once, either table
    first in FROM, ON or WHERE."""
    qe, obj, far, _ = hosted
    res = qe.query(sql.format(db=DB, r=repr(radius)), lang=lang)
    want = _astropy(obj, far, radius)
    got = {(a, b): d for a, b, d in zip(res["objectId"].to_pylist(), res["gid"].to_pylist(), res["d"].to_pylist())}
    assert res.num_rows == len(got)  # no pair twice
    _same(got, want)
    assert len(want) > 50


def test_left_join_keeps_every_near_row(hosted):
    """LEFT JOIN with an extra ON condition: each Object once without a qualifying partner."""
    qe, obj, far, _ = hosted
    r = 0.22  # not a difference of the edge offsets (0.2, 0.25, 0.4, ...): no pair exactly at r
    res = qe.query(f"SELECT o.objectId, g.gid, g.gmag FROM {DB}.Object AS o LEFT JOIN {DB}.Far AS g "
                   f"ON 1 = CONTAINS(POINT('ICRS', g.ra, g.dec), CIRCLE('ICRS', o.ra, o.decl, {r})) AND g.gmag < 15")
    mag = dict(zip(far["gid"].to_pylist(), far["gmag"].to_pylist()))
    want = {k for k in _astropy(obj, far, r) if mag[k[1]] < 15}
    got = [(a, b) for a, b in zip(res["objectId"].to_pylist(), res["gid"].to_pylist())]
    assert {k for k in got if k[1] is not None} == want
    matched = {a for a, _ in want}
    unmatched = [a for a, b in got if b is None]
    assert sorted(unmatched) == sorted(set(obj["objectId"].to_pylist()) - matched)
    assert len(got) == len(want) + len(unmatched)


def test_aggregate_over_pairs(hosted):
    qe, obj, far, _ = hosted
    r = 0.1
    res = qe.query(f"SELECT COUNT(*) AS n, MIN(g.gid) AS lo FROM {DB}.Object AS o JOIN {DB}.Far AS g "
                   f"ON DISTANCE(POINT('ICRS', o.ra, o.decl), POINT('ICRS', g.ra, g.dec)) < {r} WHERE o.mag > 20")
    mags = dict(zip(obj["objectId"].to_pylist(), obj["mag"].to_pylist()))
    want = [k for k in _astropy(obj, far, r) if mags[k[0]] > 20]
    assert res["n"].to_pylist() == [len(want)]
    assert res["lo"].to_pylist() == [min(b for _, b in want)]


@pytest.mark.parametrize("nearest,outer", [(False, False), (True, False), (True, True)])
def test_api_equals_astropy(hosted, nearest, outer):
    qe, obj, far, _ = hosted
    r = 0.3
    res = crossmatch_hosted(qe.czar, f"{DB}.Object", f"{DB}.Far", r, nearest=nearest, outer=outer,
                            columns=["gid", "gmag"])
    assert res.column_names[:3] == ["objectId", "ra", "decl"] and res.column_names[-3:] == ["gid", "gmag",
                                                                                          "separation_arcsec"]
    got = {(a, b): s / 3600 for a, b, s in zip(res["objectId"].to_pylist(), res["gid"].to_pylist(),
                                                 res["separation_arcsec"].to_pylist()) if b is not None}
    pairs = _astropy(obj, far, r)
    if not nearest:
        _same(got, pairs)
        return
    c1 = SkyCoord(obj["ra"].to_numpy() * u.deg, obj["decl"].to_numpy() * u.deg)
    c2 = SkyCoord(far["ra"].to_numpy() * u.deg, far["dec"].to_numpy() * u.deg)
    _, d2, _ = match_coordinates_sky(c1, c2)
    ids = obj["objectId"].to_numpy()
    want = {int(ids[i]): float(s) for i, s in enumerate(d2.deg) if s <= r}
    assert {a for a, _ in got} == set(want) and len(got) == len(want)
    for (a, b), s in got.items():
        assert abs(s - want[a]) <= TOL and abs(pairs[(a, b)] - s) <= TOL
    assert res.num_rows == (obj.num_rows if outer else len(want))


def test_limits_explained(hosted):
    qe = hosted[0]
    with pytest.raises(QueryError, match=r"larger than the overlap stored with testdb.Thin.*0.01 deg"):
        qe.query(f"SELECT o.objectId FROM {DB}.Object AS o LEFT JOIN {DB}.Thin AS g "
                 "ON DISTANCE(POINT('ICRS', o.ra, o.decl), POINT('ICRS', g.ra, g.dec)) < 0.02")
    with pytest.raises(QueryError, match="chunked differently"):
        qe.query(f"SELECT o.objectId FROM {DB}.Object AS o JOIN {DB}.Other AS g "
                 "ON DISTANCE(POINT('ICRS', o.ra, o.decl), POINT('ICRS', g.ra, g.dec)) < 0.01")
    with pytest.raises(QueryError, match="larger than the overlap"):
        crossmatch_hosted(qe.czar, f"{DB}.Object", f"{DB}.Far", 0.6)


def test_inner_join_reads_the_wider_overlap(hosted):
    """An inner join with a narrow-overlap table first: the other one is read with its overlap."""
    qe, obj, far, _ = hosted
    res = qe.query(f"SELECT o.objectId, g.gid FROM {DB}.Thin AS g JOIN {DB}.Object AS o "
                   "ON DISTANCE(POINT('ICRS', o.ra, o.decl), POINT('ICRS', g.ra, g.dec)) < 0.3")
    want = _astropy(obj, far, 0.3)  # Thin holds the rows of Far
    assert set(zip(res["objectId"].to_pylist(), res["gid"].to_pylist())) == set(want)


def test_cli_against(hosted, tmp_path, capsys):
    _, obj, far, root = hosted
    p = argparse.ArgumentParser()
    add_arguments(p)
    out = tmp_path / "m.parquet"
    args = p.parse_args(["--root", str(root), "--table", f"{DB}.Far", "--against", f"{DB}.Object", "--radius",
                         "0.1deg", "--nearest", "--columns", "gid", "--out", str(out)])
    assert cli_run(args) == 0
    res = pq.read_table(out)
    c1 = SkyCoord(obj["ra"].to_numpy() * u.deg, obj["decl"].to_numpy() * u.deg)
    c2 = SkyCoord(far["ra"].to_numpy() * u.deg, far["dec"].to_numpy() * u.deg)
    _, d2, _ = match_coordinates_sky(c1, c2)
    assert res.num_rows == int((d2.deg <= 0.1).sum())
    assert math.isclose(max(res["separation_arcsec"].to_pylist()) / 3600, max(d2.deg[d2.deg <= 0.1]), abs_tol=TOL)
    bad = p.parse_args(["--root", str(root), "--table", f"{DB}.Far", "--against", f"{DB}.Object", "--radius",
                        "1deg"])
    assert cli_run(bad) == 2
    assert "larger than the overlap" in capsys.readouterr().err


def test_units_and_ucds(hosted):
    qe = hosted[0]
    res = qe.query(f"SELECT o.objectId, g.gmag, g.ra, scisql_angSep(o.ra, o.decl, g.ra, g.dec) * 3600 AS sep "
                   f"FROM {DB}.Object AS o JOIN {DB}.Far AS g ON scisql_angSep(o.ra, o.decl, g.ra, g.dec) < 0.1",
                   lang="qserv")
    meta = {f.name: {k.decode(): v.decode() for k, v in (f.metadata or {}).items()} for f in res.schema}
    assert meta["sep"] == {"unit": "arcsec", "ucd": "pos.angDistance"}
    assert meta["gmag"] == {"unit": "mag", "ucd": "phot.mag;em.opt"}
    assert meta["ra"]["ucd"] == "pos.eq.ra;meta.main"
    api = crossmatch_hosted(qe.czar, f"{DB}.Object", f"{DB}.Far", 0.1, columns=["gmag"])
    assert api.schema.field("separation_arcsec").metadata[b"ucd"] == b"pos.angDistance"
