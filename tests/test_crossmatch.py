"""Crossmatch of external tables (czar/crossmatch) on a LocalCluster, against astropy's
``search_around_sky`` / ``match_coordinates_sky`` (positions dense at chunk edges, RA 0/360 and
the poles, radii up to beyond the stored overlap), the SQL forms against one DuckDB over the
unpartitioned tables, bad input, real Hipparcos x Gaia positions and the ``xmatch`` CLI."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import astropy.units as u
import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.coordinates import SkyCoord, match_coordinates_sky, search_around_sky
from hypothesis import given, settings
from hypothesis import strategies as st

from czar.crossmatch import answer_crossmatch, crossmatch, max_radius
from czar.crossmatch.cells import grid_for
from czar.crossmatch.cli import add_arguments, parse_radius
from czar.crossmatch.cli import run as cli_run
from czar.crossmatch.io import read_table, write_table
from czar.dialects import parse, to_duckdb
from czar.local import LocalCluster
from qengine.catalog import Column, Partitioning, Table
from qengine.chunker import Chunker
from qengine.errors import CoordinateError, QEngineError, QueryError
from tests.helpers import DB, PART, build_store, edge_positions
from worker.sqlfuncs import register

DATA = Path(__file__).parent / "data"
HIP = Table(name="Hipparcos", role="director", id_column="hip", ra_column="ra", dec_column="dec",
            columns=(Column("hip", "long", nullable=False), Column("ra", "double", unit="deg", ucd="pos.eq.ra;meta.main"),
                     Column("dec", "double", unit="deg", ucd="pos.eq.dec;meta.main"), Column("hpmag", "float", unit="mag")))
HIP_PART = Partitioning(num_stripes=85, num_sub_stripes=12, overlap=0.01667)
T = f"{DB}.Object"
TOL = 1e-9  # degrees


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from partitioner.ingest import IngestOptions, ingest

    root = tmp_path_factory.mktemp("xmatch") / "root"
    tables = build_store(root, n_objects=3000, rows_per_file=1500)
    ingest(root, "hip", HIP, [DATA / "xmatch_hipparcos.parquet"], partitioning=HIP_PART,
           options=IngestOptions(progress=False, rows_per_file=1000, row_group_rows=500))
    with LocalCluster(root, workers=2) as qe:
        yield qe, tables, root


def _catalogue(tables) -> tuple[pa.Table, SkyCoord]:
    obj = tables["Object"]
    return obj, SkyCoord(obj["ra"].to_numpy() * u.deg, obj["decl"].to_numpy() * u.deg)


def _external(obj: pa.Table, seed: int, n: int, radius: float) -> pa.Table:
    """Catalogue positions moved by up to 1.5 radii, exact copies, and edge/pole/RA-wrap points."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, obj.num_rows, n)
    c0 = SkyCoord(obj["ra"].to_numpy()[idx] * u.deg, obj["decl"].to_numpy()[idx] * u.deg)
    moved = c0.directional_offset_by(rng.uniform(0, 360, n) * u.deg, rng.uniform(0, 1.5 * radius, n) * u.deg)
    ra, dec = moved.ra.deg, moved.dec.deg
    ra[: n // 10], dec[: n // 10] = c0.ra.deg[: n // 10], c0.dec.deg[: n // 10]
    era, edec = edge_positions(Chunker(PART.num_stripes, PART.num_sub_stripes, PART.overlap), rng, n // 4)
    ra, dec = np.concatenate([ra, era]), np.concatenate([dec, edec])
    return pa.table({"id": pa.array(np.arange(ra.size, dtype=np.int64)), "ra": ra, "dec": dec,
                     "flag": pa.array(rng.integers(0, 3, ra.size).astype(np.int32))})


def _pairs(res: pa.Table, sep_col: str = "separation_arcsec", scale: float = 3600.0) -> dict:
    return {(a, b): s / scale for a, b, s in zip(res["id"].to_pylist(), res["objectId"].to_pylist(),
                                                 res[sep_col].to_pylist()) if b is not None}


def _astropy_all(ext: pa.Table, obj: pa.Table, cat: SkyCoord, radius: float) -> dict:
    c1 = SkyCoord(ext["ra"].to_numpy() * u.deg, ext["dec"].to_numpy() * u.deg)
    i1, i2, d2, _ = search_around_sky(c1, cat, radius * u.deg)
    ids = obj["objectId"].to_numpy()
    return {(int(a), int(ids[b])): float(s) for a, b, s in zip(i1, i2, d2.deg)}


def _same_pairs(got: dict, want: dict) -> None:
    assert set(got) == set(want), (sorted(set(want) - set(got))[:5], sorted(set(got) - set(want))[:5])
    for k, s in want.items():
        assert abs(got[k] - s) <= TOL, (k, got[k], s)


# ------------------------------------------------------------------------------ differential
@settings(max_examples=10)
@given(seed=st.integers(0, 2**31), log_r=st.floats(math.log(1e-4), math.log(0.89)), outer=st.booleans())
def test_all_matches_equal_astropy(cluster, seed, log_r, outer):
    """Every pair within r (r up to 0.89 deg: beyond the stored overlap of 0.5 deg; not 0.9, which
    is exactly the separation of edge points 0.45 deg either side of a chunk edge, where astropy's
    chord distance and the exact predicate may round differently)."""
    qe, tables, _ = cluster
    obj, cat = _catalogue(tables)
    radius = math.exp(log_r)
    ext = _external(obj, seed, 300, radius)
    res = crossmatch(qe.czar, T, ext, radius, ra="ra", dec="dec", outer=outer, columns=["objectId", "mag"])
    want = _astropy_all(ext, obj, cat, radius)
    _same_pairs(_pairs(res), want)
    assert res.num_rows == len(want) + (len(set(range(ext.num_rows)) - {a for a, _ in want}) if outer else 0)
    if outer:
        unmatched = set(range(ext.num_rows)) - {a for a, _ in want}
        nulls = {a for a, b in zip(res["id"].to_pylist(), res["objectId"].to_pylist()) if b is None}
        assert nulls == unmatched
        assert all(s is None for s, b in zip(res["separation_arcsec"].to_pylist(), res["objectId"].to_pylist())
                   if b is None)
    assert res.column_names == ["id", "ra", "dec", "flag", "objectId", "mag", "separation_arcsec"]


@settings(max_examples=10)
@given(seed=st.integers(0, 2**31), log_r=st.floats(math.log(1e-4), math.log(0.89)), outer=st.booleans())
def test_nearest_equals_astropy(cluster, seed, log_r, outer):
    qe, tables, _ = cluster
    obj, cat = _catalogue(tables)
    radius = math.exp(log_r)
    ext = _external(obj, seed, 300, radius)
    res = crossmatch(qe.czar, T, ext, radius, nearest=True, outer=outer, columns=["objectId"])
    c1 = SkyCoord(ext["ra"].to_numpy() * u.deg, ext["dec"].to_numpy() * u.deg)
    idx, d2, _ = match_coordinates_sky(c1, cat)
    want = {i: float(s) for i, s in enumerate(d2.deg) if s <= radius}
    got = _pairs(res)
    assert {a for a, _ in got} == set(want)
    assert len(got) == len(want)  # one match per external row
    ids = obj["objectId"].to_numpy()
    all_seps = _astropy_all(ext, obj, cat, radius)
    for (a, oid), s in got.items():
        assert abs(s - want[a]) <= TOL
        # astropy's choice, or another catalogue row at the same distance (duplicated positions)
        assert oid == int(ids[idx[a]]) or abs(all_seps[(a, oid)] - want[a]) <= TOL
    assert res.num_rows == (ext.num_rows if outer else len(want))


def test_nearest_worker_side_pick(cluster, monkeypatch):
    """Nearest matches picked in the workers (dense catalogues, wide radii) equal those picked in
    the czar from every pair (the default when about one pair per row is expected)."""
    from czar.crossmatch import algorithms

    qe, tables, _ = cluster
    obj, _ = _catalogue(tables)
    ext = _external(obj, 7, 300, 0.3)
    czar_side = crossmatch(qe.czar, T, ext, 0.3, nearest=True, columns=["objectId"])
    monkeypatch.setattr(algorithms, "FEW_PAIRS", -1.0)
    worker_side = crossmatch(qe.czar, T, ext, 0.3, nearest=True, columns=["objectId"])
    assert czar_side.num_rows > 50
    assert worker_side.equals(czar_side)


def test_parallel_placement_equals_serial(cluster, monkeypatch):
    """Large uploads are located in two threads: the same placements and cells as one thread's.
    Each worker's share holds every cell of exactly the rows with a chunk of its, each once,
    with their positions, the zones of those cells and its chunks with external rows."""
    from czar.crossmatch import execute
    from czar.crossmatch.algorithms import grid_of
    from czar.crossmatch.cells import CELL, ZONE
    from czar.crossmatch.detect import EXT_DEC, EXT_RA
    from czar.crossmatch.job import CHUNKS, UPLOAD, XID, ZONES, MatchJob

    qe, tables, _ = cluster
    obj, _ = _catalogue(tables)
    ext = _external(obj, 9, 2000, 0.2)
    job = MatchJob(table=qe.czar.metadata.resolve(DB, "Object", None), radius=0.2, ext_ra=EXT_RA, ext_dec=EXT_DEC)
    ra, dec = ext["ra"].to_numpy(), ext["dec"].to_numpy()
    g = grid_of(job)
    one = execute._locate(job, g, ra, dec)
    monkeypatch.setattr(execute, "PARALLEL_ROWS", 10)
    two = execute._locate(job, g, ra, dec)
    for x, y in ((one.rows, two.rows), (one.chunks, two.chunks), (one.crow, two.crow), (one.cell, two.cell)):
        assert np.array_equal(x, y)
    places = set(zip(one.rows.tolist(), one.chunks.tolist()))
    assert len(places) == one.rows.size and np.array_equal(np.unique(one.rows), np.arange(ra.size))
    chunks = execute._distinct(one.chunks)
    assert np.array_equal(chunks, np.unique(one.chunks)) and chunks.size > 4
    assignment = {"w0": chunks[: chunks.size // 3], "w1": chunks[chunks.size // 3:]}
    shares = execute._shares(g, one, assignment, ra, dec, True)
    cells = set(zip(one.crow.tolist(), one.cell.tolist()))
    for w, cs in assignment.items():
        rows = {r for r, c in places if c in set(cs.tolist())}
        t = shares[w][UPLOAD]
        got = list(zip(t[XID].to_pylist(), t[CELL].to_pylist()))
        assert len(got) == len(set(got)) and set(got) == {(r, c) for r, c in cells if r in rows}
        x = t[XID].to_numpy()
        assert t.schema.field(XID).type == pa.int32()
        assert np.array_equal(t[EXT_RA].to_numpy(), ra[x]) and np.array_equal(t[EXT_DEC].to_numpy(), dec[x])
        assert shares[w][ZONES][ZONE].to_pylist() == sorted({c // 1_000_000_000 for _, c in got})
        assert shares[w][CHUNKS]["chunkId"].to_pylist() == sorted({c for r, c in places if c in set(cs.tolist())})
    # a worker given only chunks without external rows gets nothing
    empty = execute._shares(g, one, {"w0": chunks, "w1": np.array([10**6], np.int64)}, ra, dec, False)
    assert list(empty) == ["w0"] and CHUNKS not in empty["w0"]


def test_within_radius_sql_equals_macros(cluster):
    """The workers' within-radius query (one haversine per candidate, for the test and the
    separation) finds exactly the pairs of the ``qe_in_circle`` macro, with ``qe_distance``'s
    separations (chunk edges, poles and RA 0/360 included)."""
    from czar.crossmatch.algorithms import AllMatches
    from czar.crossmatch.detect import EXT_DEC, EXT_RA
    from czar.crossmatch.execute import match_pairs
    from czar.crossmatch.job import SEP, XID, MatchJob

    qe, tables, _ = cluster
    obj, _ = _catalogue(tables)
    ext = _external(obj, 13, 1500, 0.2)
    ra = np.concatenate([ext["ra"].to_numpy(), [0.0, 359.9999, 180.0, 45.0, 10.0]])
    dec = np.concatenate([ext["dec"].to_numpy(), [89.95, -89.95, 90.0, -90.0, 89.999]])
    info = qe.czar.metadata.resolve(DB, "Object", None)
    jobs = [MatchJob(table=info, radius=0.2, ext_ra=EXT_RA, ext_dec=EXT_DEC, columns=["objectId"]) for _ in "ab"]
    jobs[1].predicate = jobs[1].match_condition()  # the macro, as the SQL forms ship it
    sqls = [AllMatches().worker_sql(j) for j in jobs]
    assert "qe_in_circle" not in sqls[0] and "qe_distance" not in sqls[0] and "qe_in_circle" in sqls[1]
    got = []
    for job in jobs:
        t = match_pairs(qe.czar, job, ra, dec, AllMatches())
        got.append(dict(zip(zip(t[XID].to_pylist(), t["objectId"].to_pylist()), t[SEP].to_pylist())))
    assert len(got[0]) > 500 and got[0].keys() == got[1].keys()
    assert max(abs(got[0][k] - got[1][k]) for k in got[0]) <= 1e-12
    assert any(abs(dec[x]) > 89.9 for x, _ in got[0])


def test_pair_order_by_counting():
    """Pairs ordered by external row, separation, id and position (ties included), with and
    without unmatched rows: as one lexsort of them all."""
    from czar.crossmatch.algorithms import first_pairs, pair_order
    from czar.crossmatch.job import SEP, XID

    rng = np.random.default_rng(21)
    for n, m in ((50, 0), (50, 200), (1000, 1500)):
        xid = rng.integers(0, n, m)
        sep = rng.choice([0.1, 0.2, 0.3], m)
        cid = rng.integers(0, 4, m)
        pairs = pa.table({XID: xid, "id": cid, SEP: sep})
        want = np.lexsort([np.arange(m), cid, sep, xid])
        for cat_id in ("id", None):
            if cat_id is None:
                want = np.lexsort([np.arange(m), sep, xid])
            rows, take = pair_order(pairs, cat_id, n)
            assert np.array_equal(take, want) and np.array_equal(rows, xid[want])
            rows, take = pair_order(pairs, cat_id, n, outer=True)
            lonely = np.setdiff1d(np.arange(n), xid)
            assert np.array_equal(take[take >= 0], want)
            assert np.array_equal(np.sort(rows[take < 0]), lonely) and np.all(np.diff(rows) >= 0)
            assert rows.size == m + lonely.size
            # each row's first pair (the nearest match), by row
            firsts = want[np.r_[True, xid[want][1:] != xid[want][:-1]]] if m else want
            assert np.array_equal(first_pairs(pairs, cat_id, n), firsts)
            near = pairs.take(pa.array(firsts))
            rows, take = pair_order(near, cat_id, n)  # one pair per row, in row order
            assert np.array_equal(rows, xid[firsts]) and np.array_equal(take, np.arange(firsts.size))


@pytest.mark.parametrize("gap_rows", [0, 10**12])
def test_poles_and_ra_wrap(cluster, monkeypatch, gap_rows):
    """Pairs across RA 0/360 and over the poles, at the largest radius the chunking allows (with
    only the chunks of external rows visited, and with every gap between them filled)."""
    from czar.crossmatch import execute

    monkeypatch.setattr(execute, "ROW_GROUP_ROWS", gap_rows)
    qe, tables, _ = cluster
    obj, cat = _catalogue(tables)
    radius = 0.95 * max_radius(PART.num_stripes, PART.num_sub_stripes)
    ra = np.array([0.0, 359.999, 0.001, 180.0, 0.0, 90.0, 270.0, 45.0, 359.5, 0.5])
    dec = np.array([0.0, 10.0, -10.0, 90.0, -90.0, 89.7, -89.7, 89.999, 45.0, -45.0])
    ext = pa.table({"id": np.arange(ra.size), "ra": ra, "dec": dec})
    res = crossmatch(qe.czar, T, ext, radius, columns=["objectId"])
    want = _astropy_all(ext, obj, cat, radius)
    assert len(want) > 10
    _same_pairs(_pairs(res), want)


def test_grid_cells_cover_neighbours():
    """The SQL's bucketing rule in Python: a pair within reach is at most one zone and bin apart."""
    rng = np.random.default_rng(3)
    for reach, density in ((1 / 3600, None), (0.01, 242.0), (0.3, 0.05)):
        g = grid_for(reach, density)
        assert g.height >= g.cell >= reach
        for z in range(0, g.zones, max(1, g.zones // 50)):
            n = g.bins(z)
            assert n == 1 or 360.0 / n >= g.ra_reach(z, reach)
        assert g.bins(g.zones - 1) == 1 and g.bins(0) == 1
        dec = rng.uniform(-90, 90, 100)
        assert all(0 <= g.zone(d) < g.zones for d in dec)


def test_expand_finds_every_pair_cell():
    """The czar's bucketing of external rows: for random pairs within reach (poles, RA 0/360 and
    cell edges included), the catalogue row's own cell (the worker's SQL, in DuckDB) is one of
    the external row's cells (numpy)."""
    from czar.crossmatch.cells import expand, own_cells_sql, zone_table

    rng = np.random.default_rng(5)
    con = duckdb.connect()
    for reach, density in ((1 / 3600, 242.0), (0.01, None), (0.3, 0.05)):
        g = grid_for(reach, density)
        n = 4000
        ra = np.concatenate([rng.uniform(0, 360, n // 2), rng.choice([0.0, 359.9999999, 180.0], n // 4),
                             rng.uniform(0, 360, n - n // 2 - n // 4)])
        dec = np.concatenate([rng.uniform(-90, 90, n // 2), rng.uniform(-90, 90, n // 4),
                              rng.choice([90.0, -90.0, 89.99, -89.99, 0.0], n - n // 2 - n // 4)])
        dec[::7] = g.zone_of(dec[::7]) * g.height - 90.0  # on zone edges
        c1 = SkyCoord(ra * u.deg, dec * u.deg)
        c2 = c1.directional_offset_by(rng.uniform(0, 360, n) * u.deg, rng.uniform(0, 1, n) * reach * u.deg)
        rows, cells = expand(g, ra, dec)
        r2, c2_ = expand(g, ra, dec, by_row=False)
        assert sorted(zip(r2.tolist(), c2_.tolist())) == sorted(zip(rows.tolist(), cells.tolist()))
        con.register("zones", zone_table(g, cells))
        con.register("cat", pa.table({"chunkId": np.zeros(n, np.int32), "i": np.arange(n),
                                      "ra": c2.ra.deg, "dec": c2.dec.deg}))
        own = con.sql(own_cells_sql("cat", '"ra"', '"dec"', g, "zones") + " ORDER BY i").fetchnumpy()
        have = set(zip(rows.tolist(), cells.tolist()))
        missing = [i for i, c in zip(own["i"].tolist(), own["__xm_cell"].tolist()) if (i, c) not in have]
        assert own["i"].size == n and not missing, (reach, missing[:5])
        assert np.bincount(rows).max() <= 9
        # with a chunk filter: the rows of the listed chunks only
        for listed, kept in (([0], n), ([1], 0)):
            con.register("ks", pa.table({"chunkId": np.array(listed, np.int32)}))
            sql = own_cells_sql("cat", '"ra"', '"dec"', g, "zones", "ks")
            assert con.execute(f"SELECT count(*) FROM ({sql})").fetchall()[0][0] == kept


def test_visit_runs_fill_small_gaps():
    from czar.crossmatch import execute
    from czar.crossmatch.execute import visit_runs

    all_chunks = np.arange(0, 1000, 2, dtype=np.int64)
    rows = np.full(all_chunks.size, 1000, np.int64)
    wanted = np.array([10, 20, 600, 700], np.int64)
    # gaps of 4, 289 and 49 chunks of 1000 rows: under, over and under one row group
    old = execute.ROW_GROUP_ROWS
    try:
        execute.ROW_GROUP_ROWS = 100_000
        got = visit_runs(all_chunks, rows, wanted, 10)
        assert got.tolist() == list(range(10, 21, 2)) + list(range(600, 701, 2))
        got = visit_runs(all_chunks, rows, wanted, 1)  # one run: everything between
        assert got.tolist() == list(range(10, 701, 2))
    finally:
        execute.ROW_GROUP_ROWS = old
    assert visit_runs(all_chunks, rows, wanted[:1], 5).tolist() == [10]


# ------------------------------------------------------------------------------ the SQL forms
@pytest.fixture(scope="module")
def upload(cluster):
    _, tables, _ = cluster
    obj, _ = _catalogue(tables)
    return _external(obj, 11, 400, 0.2)


@pytest.fixture(scope="module")
def oracle(cluster, upload):
    _, tables, _ = cluster
    con = duckdb.connect()
    register(con)
    con.execute(f'CREATE SCHEMA "{DB}"')
    con.execute('CREATE SCHEMA "TAP_UPLOAD"')
    con.register("__obj", tables["Object"])
    con.execute(f'CREATE VIEW "{DB}"."Object" AS SELECT * FROM "__obj"')
    con.register("__mine", upload)
    con.execute('CREATE VIEW "TAP_UPLOAD"."mine" AS SELECT * FROM "__mine"')
    return con


def _rows(t: pa.Table) -> list[tuple]:
    out = []
    for r in zip(*[c.to_pylist() for c in t.columns]):
        out.append(tuple(round(x, 9) if isinstance(x, float) else x for x in r))
    return out


SQL_FORMS = [
    # ADQL CONTAINS, point from the catalogue
    (("SELECT m.id, o.objectId, o.mag FROM TAP_UPLOAD.mine AS m JOIN testdb.Object AS o "
     "ON 1 = CONTAINS(POINT('ICRS', o.ra, o.decl), CIRCLE('ICRS', m.ra, m.dec, 0.2))"), "adql", False),
    # point from the upload, circle on the catalogue; extra predicates on both sides in WHERE
    (("SELECT m.id, o.objectId FROM TAP_UPLOAD.mine AS m JOIN testdb.Object AS o "
     "ON CONTAINS(POINT('ICRS', m.ra, m.dec), CIRCLE('ICRS', o.ra, o.decl, 0.1)) = 1 "
     "WHERE o.mag < 20 AND m.flag > 0"), "adql", False),
    # DISTANCE < r, separation in arcsec, ORDER BY + TOP
    (("SELECT TOP 50 m.id, o.objectId, DISTANCE(POINT('ICRS', m.ra, m.dec), POINT('ICRS', o.ra, o.decl)) * 3600 "
     "AS sep FROM TAP_UPLOAD.mine m JOIN testdb.Object o ON DISTANCE(POINT('ICRS', m.ra, m.dec), "
     "POINT('ICRS', o.ra, o.decl)) < 0.15 ORDER BY sep, m.id, o.objectId"), "adql", True),
    # comma join, predicate in WHERE, aggregate
    (("SELECT m.flag, COUNT(*) AS n, MIN(o.mag) AS faint FROM TAP_UPLOAD.mine AS m, testdb.Object AS o "
     "WHERE 1 = CONTAINS(POINT('ICRS', o.ra, o.decl), CIRCLE('ICRS', m.ra, m.dec, 0.2)) GROUP BY m.flag "
     "ORDER BY m.flag"), "adql", True),
    # LEFT JOIN: unmatched external rows kept with NULLs; a catalogue condition in ON
    (("SELECT m.id, o.objectId, o.name FROM TAP_UPLOAD.mine AS m LEFT JOIN testdb.Object AS o "
     "ON 1 = CONTAINS(POINT('ICRS', o.ra, o.decl), CIRCLE('ICRS', m.ra, m.dec, 0.05)) AND o.mag > 18"), "adql", False),
    # LEFT JOIN with a NULL-accepting WHERE (must not be pushed into the workers)
    (("SELECT m.id, o.objectId FROM TAP_UPLOAD.mine AS m LEFT JOIN testdb.Object AS o "
     "ON 1 = CONTAINS(POINT('ICRS', o.ra, o.decl), CIRCLE('ICRS', m.ra, m.dec, 0.05)) "
     "WHERE o.mag < 19 OR o.objectId IS NULL"), "adql", False),
    # SELECT * (catalogue columns without chunkId/subChunkId)
    (("SELECT * FROM TAP_UPLOAD.mine AS m JOIN testdb.Object AS o "
     "ON 1 = CONTAINS(POINT('ICRS', o.ra, o.decl), CIRCLE('ICRS', m.ra, m.dec, 0.02))"), "adql", False),
    # Qserv: scisql_angSep
    (("SELECT m.id, o.objectId FROM TAP_UPLOAD.mine AS m JOIN testdb.Object AS o "
     "ON scisql_angSep(m.ra, m.dec, o.ra, o.decl) < 0.2"), "qserv", False),
]


@pytest.mark.parametrize("sql,lang,ordered", SQL_FORMS)
def test_sql_forms_equal_duckdb(cluster, oracle, upload, sql, lang, ordered):
    qe, _, _ = cluster
    got = answer_crossmatch(qe.czar, parse(sql, lang), sql, lang, None, {"mine": upload}, None)
    assert got is not None
    want = oracle.sql(to_duckdb(parse(sql, lang))).to_arrow_table()
    assert got.column_names == want.column_names
    g, w = _rows(got), _rows(want)
    if not ordered:
        g, w = sorted(g, key=repr), sorted(w, key=repr)
    assert g == w
    assert len(g) > 0


def test_sql_maxrec(cluster, upload):
    qe, _, _ = cluster
    sql = SQL_FORMS[0][0]
    got = answer_crossmatch(qe.czar, parse(sql), sql, "adql", None, {"mine": upload}, 5)
    assert got.num_rows == 5 and got.schema.metadata[b"qengine.overflow"] == b"true"


@pytest.mark.parametrize("sql,uploads", [
    ("SELECT COUNT(*) FROM testdb.Object", None),
    ("SELECT m.id FROM TAP_UPLOAD.mine AS m JOIN testdb.Object AS o ON m.id = o.objectId", {"mine": None}),
    (("SELECT m.id FROM TAP_UPLOAD.mine AS m JOIN testdb.Filter AS f "
     "ON 1 = CONTAINS(POINT('ICRS', m.ra, m.dec), CIRCLE('ICRS', 0, 0, 1))"), {"mine": None}),
    # a distance between upload columns only
    (("SELECT m.id FROM TAP_UPLOAD.mine AS m JOIN testdb.Object AS o "
     "ON DISTANCE(POINT('ICRS', m.ra, m.dec), POINT('ICRS', 0, 0)) < 1"), {"mine": None}),
    # RIGHT JOIN keeping catalogue rows: not a crossmatch of the upload
    (("SELECT m.id FROM TAP_UPLOAD.mine AS m RIGHT JOIN testdb.Object AS o "
     "ON 1 = CONTAINS(POINT('ICRS', o.ra, o.decl), CIRCLE('ICRS', m.ra, m.dec, 0.1))"), {"mine": None}),
])
def test_not_a_crossmatch(cluster, upload, sql, uploads):
    qe, _, _ = cluster
    ups = {k: upload for k in uploads} if uploads else None
    assert answer_crossmatch(qe.czar, parse(sql), sql, "adql", None, ups, None) is None


# ------------------------------------------------------------------------------ bad input
def _cm(cluster, ext, radius=0.1, **kw):
    qe, _, _ = cluster
    return crossmatch(qe.czar, T, ext, radius, **kw)


def test_bad_positions(cluster, monkeypatch):
    good = pa.table({"ra": [1.0, 2.0], "dec": [3.0, 4.0], "name": ["a", "b"]})
    with pytest.raises(QueryError, match="no RA column 'nope'"):
        _cm(cluster, good, ra="nope")
    with pytest.raises(QueryError, match="'name' is not numeric"):
        _cm(cluster, good, dec="name")
    with pytest.raises(CoordinateError, match=r"'dec' has 1 non-finite value\(s\); first at row 1: nan"):
        _cm(cluster, pa.table({"ra": [1.0, 2.0], "dec": [3.0, float("nan")]}))
    with pytest.raises(CoordinateError, match="'ra' is empty \\(NULL\\) at row 0"):
        _cm(cluster, pa.table({"ra": pa.array([None, 2.0], pa.float64()), "dec": [3.0, 4.0]}))
    with pytest.raises(CoordinateError, match="outside \\[-90, 90\\]; first at row 0: 91.0"):
        _cm(cluster, pa.table({"ra": [1.0], "dec": [91.0]}))
    monkeypatch.setenv("QENGINE_XMATCH_MAX_ROWS", "1")
    with pytest.raises(QueryError, match="2 rows exceed the crossmatch upload limit of 1 rows"):
        _cm(cluster, good)


@pytest.mark.parametrize("radius,message", [(0.0, "must be positive, got 0.0"), (-1.0, "must be positive"),
                                            (float("nan"), "finite number"), (1.5, "larger than the maximum")])
def test_bad_radius(cluster, radius, message):
    good = pa.table({"ra": [1.0], "dec": [3.0]})
    with pytest.raises(QueryError, match=message):
        _cm(cluster, good, radius=radius)
    qe, _, _ = cluster
    if math.isfinite(radius):
        sql = ("SELECT m.ra FROM TAP_UPLOAD.mine AS m JOIN testdb.Object AS o "
               f"ON 1 = CONTAINS(POINT('ICRS', o.ra, o.decl), CIRCLE('ICRS', m.ra, m.dec, {radius}))")
        with pytest.raises(QueryError, match=message):
            answer_crossmatch(qe.czar, parse(sql), sql, "adql", None, {"mine": good}, None)


def test_bad_sql_upload(cluster):
    qe, _, _ = cluster
    ext = pa.table({"ra": [1.0], "dec": [float("nan")], "label": ["x"]})
    sql = ("SELECT m.ra FROM TAP_UPLOAD.mine AS m JOIN testdb.Object AS o "
           "ON 1 = CONTAINS(POINT('ICRS', o.ra, o.decl), CIRCLE('ICRS', m.ra, m.raa, 0.1))")
    with pytest.raises(QueryError, match="no column 'raa'"):
        answer_crossmatch(qe.czar, parse(sql), sql, "adql", None, {"mine": ext}, None)
    with pytest.raises(CoordinateError, match="uploaded table mine: column 'dec'"):
        sql2 = sql.replace("m.raa", "m.dec")
        answer_crossmatch(qe.czar, parse(sql2), sql2, "adql", None, {"mine": ext}, None)
    with pytest.raises(QueryError, match="'label' is not numeric"):
        sql3 = sql.replace("m.raa", "m.label")
        answer_crossmatch(qe.czar, parse(sql3), sql3, "adql", None, {"mine": ext}, None)


def test_not_a_director(cluster):
    with pytest.raises(QueryError, match="crossmatch needs a director table"):
        crossmatch(cluster[0].czar, f"{DB}.Source", pa.table({"ra": [1.0], "dec": [1.0]}), 0.1)


# ------------------------------------------------------------------------------ real data
def test_hipparcos_x_gaia(cluster):
    """Real positions (Hipparcos-2 ingested, Gaia DR3 G < 10 uploaded): polar caps and RA 0/360."""
    qe, _, _ = cluster
    hip = pq.read_table(DATA / "xmatch_hipparcos.parquet")
    gaia = pq.read_table(DATA / "xmatch_gaia.parquet")
    radius = 5 / 3600
    res = crossmatch(qe.czar, "hip.Hipparcos", gaia, radius, columns=["hip", "hpmag"])
    cat = SkyCoord(hip["ra"].to_numpy() * u.deg, hip["dec"].to_numpy() * u.deg)
    c1 = SkyCoord(gaia["ra"].to_numpy() * u.deg, gaia["dec"].to_numpy() * u.deg)
    i1, i2, d2, _ = search_around_sky(c1, cat, radius * u.deg)
    sid, hid = gaia["source_id"].to_numpy(), hip["hip"].to_numpy()
    want = {(int(sid[a]), int(hid[b])): float(s) for a, b, s in zip(i1, i2, d2.deg)}
    got = {(a, b): s / 3600 for a, b, s in zip(res["source_id"].to_pylist(), res["hip"].to_pylist(),
                                               res["separation_arcsec"].to_pylist())}
    assert len(want) > 1000
    _same_pairs(got, want)
    near = crossmatch(qe.czar, "hip.Hipparcos", gaia, radius, nearest=True, columns=["hip"])
    idx, d2n, _ = match_coordinates_sky(c1, cat)
    want_n = {int(sid[i]): int(hid[idx[i]]) for i in range(gaia.num_rows) if d2n[i].deg <= radius}
    assert dict(zip(near["source_id"].to_pylist(), near["hip"].to_pylist())) == want_n
    # the same through ADQL with an upload
    sql = ("SELECT g.source_id, h.hip FROM TAP_UPLOAD.gaia AS g JOIN hip.Hipparcos AS h "
           "ON 1 = CONTAINS(POINT('ICRS', h.ra, h.dec), CIRCLE('ICRS', g.ra, g.dec, 5/3600.))")
    via_sql = answer_crossmatch(qe.czar, parse(sql), sql, "adql", None, {"gaia": gaia}, None)
    assert set(zip(via_sql["source_id"].to_pylist(), via_sql["hip"].to_pylist())) == set(want)


# ------------------------------------------------------------------------------ CLI
def test_parse_radius():
    assert parse_radius("1arcsec") == pytest.approx(1 / 3600)
    assert parse_radius('2"') == pytest.approx(2 / 3600)
    assert parse_radius("0.5arcmin") == pytest.approx(0.5 / 60)
    assert parse_radius("1e-3 deg") == pytest.approx(1e-3)
    for bad in ("1", "abc", "3 m"):
        with pytest.raises(QEngineError):
            parse_radius(bad)


@pytest.mark.parametrize("fin,fout", [("in.fits", "out.vot"), ("in.csv", "out.parquet")])
def test_cli_local(cluster, tmp_path, capsys, fin, fout):
    _, _, root = cluster
    gaia = pq.read_table(DATA / "xmatch_gaia.parquet").slice(0, 3000)
    write_table(gaia, tmp_path / fin)
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--root", str(root), "--table", "hip.Hipparcos", "--radius", "5arcsec", "--nearest",
                         "--outer", "--columns", "hip", "--workers", "1", "--out", str(tmp_path / fout),
                         str(tmp_path / fin)])
    assert cli_run(args) == 0
    out = read_table(tmp_path / fout)
    assert out.num_rows == gaia.num_rows  # --outer: every row, once (--nearest)
    assert out.column("source_id").to_pylist() == gaia.column("source_id").to_pylist()
    assert "xmatch:" in capsys.readouterr().err
    matched = [h for h in out.column("hip").to_pylist() if h is not None]
    assert 50 < len(matched) < gaia.num_rows


def test_cli_errors(tmp_path, capsys):
    p = argparse.ArgumentParser()
    add_arguments(p)
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    args = p.parse_args(["--root", str(tmp_path), "--table", "x.Y", "--radius", "1arcsec", str(tmp_path / "x.csv")])
    assert cli_run(args) == 2
    assert "no RA column found among a, b" in capsys.readouterr().err


def test_cli_cluster(cluster, tmp_path, capsys):
    """``--cluster URL``: the positions go to a running czar's TAP service as an UPLOAD."""
    from czar.server import HttpServer, make_app

    qe, _, _ = cluster
    gaia = pq.read_table(DATA / "xmatch_gaia.parquet").slice(0, 1500)
    write_table(gaia, tmp_path / "in.parquet")
    server = HttpServer(make_app(qe.czar, tmp_path / "jobs")).start()
    try:
        p = argparse.ArgumentParser()
        add_arguments(p)
        for extra in ([], ["--nearest", "--outer"]):
            out = tmp_path / f"out{len(extra)}.parquet"
            args = p.parse_args(["--cluster", server.url, "--table", "hip.Hipparcos", "--radius", "5arcsec",
                                 "--columns", "hip", "--out", str(out), *extra, str(tmp_path / "in.parquet")])
            assert cli_run(args) == 0, capsys.readouterr().err
            got = read_table(out)
            want = crossmatch(qe.czar, "hip.Hipparcos", gaia, 5 / 3600, columns=["hip"], nearest=bool(extra),
                              outer=bool(extra))
            assert got.column_names == want.column_names
            assert sorted(zip(got["source_id"].to_pylist(), got["hip"].to_pylist()), key=repr) == \
                sorted(zip(want["source_id"].to_pylist(), want["hip"].to_pylist()), key=repr)
            assert np.allclose(np.nan_to_num(got["separation_arcsec"].to_numpy(zero_copy_only=False)),
                               np.nan_to_num(want["separation_arcsec"].to_numpy(zero_copy_only=False)), atol=1e-6)
        bad = p.parse_args(["--cluster", server.url, "--table", "hip.Nope", "--radius", "5arcsec",
                            str(tmp_path / "in.parquet")])
        assert cli_run(bad) == 2
        assert "hip.Nope" in capsys.readouterr().err
    finally:
        server.shutdown()


# ------------------------------------------------------------------------------ units and UCDs
def _meta(t: pa.Table, name: str) -> dict:
    return {k.decode(): v.decode() for k, v in (t.schema.field(name).metadata or {}).items()}


def test_units_and_ucds(cluster):
    """Result columns carry units/UCDs for the TAP encoder: catalogue columns their catalogue's,
    uploaded ones the upload's, separations pos.angDistance in their unit."""
    qe, tables, _ = cluster
    obj, _ = _catalogue(tables)
    ext = _external(obj, 3, 40, 0.01)
    ext = ext.cast(pa.schema([f.with_metadata({"unit": "deg", "ucd": "pos.eq.ra"}) if f.name == "ra" else f
                              for f in ext.schema]))
    res = crossmatch(qe.czar, T, ext, 0.01, columns=["objectId", "ra"])
    assert _meta(res, "separation_arcsec")["unit"] == "arcsec"
    assert _meta(res, "separation_arcsec")["ucd"] == "pos.angDistance"
    assert _meta(res, "ra") == {"unit": "deg", "ucd": "pos.eq.ra"}
    sql = ("SELECT m.id, m.ra, o.objectId, DISTANCE(POINT('ICRS', m.ra, m.dec), POINT('ICRS', o.ra, o.decl)) * 3600 "
           "AS sep, DISTANCE(POINT('ICRS', m.ra, m.dec), POINT('ICRS', o.ra, o.decl)) AS d FROM TAP_UPLOAD.mine AS m "
           f"JOIN {T} AS o ON 1 = CONTAINS(POINT('ICRS', o.ra, o.decl), CIRCLE('ICRS', m.ra, m.dec, 0.01))")
    res = qe.query(sql, uploads={"mine": ext})
    assert res.num_rows > 0
    assert _meta(res, "sep") == {"unit": "arcsec", "ucd": "pos.angDistance"}
    assert _meta(res, "d") == {"unit": "deg", "ucd": "pos.angDistance"}
    assert _meta(res, "ra") == {"unit": "deg", "ucd": "pos.eq.ra"}
    from czar.tap.votable import to_votable

    xml = to_votable(res).decode() if isinstance(to_votable(res), bytes) else str(to_votable(res))
    assert 'name="sep"' in xml and 'ucd="pos.angDistance"' in xml and 'unit="arcsec"' in xml


def test_nearest_separation_via_adql_group_by(cluster):
    """ADQL has no nearest-match operator; the nearest separation per uploaded row is a GROUP BY
    over the crossmatch join (the partner's id needs the API's nearest=True or qengine xmatch
    --nearest): equal to astropy's match_coordinates_sky."""
    qe, tables, _ = cluster
    obj, cat = _catalogue(tables)
    r = 0.05
    ext = _external(obj, 21, 200, r)
    res = qe.query("SELECT m.id, MIN(DISTANCE(POINT('ICRS', m.ra, m.dec), POINT('ICRS', o.ra, o.decl))) AS d "
                   f"FROM TAP_UPLOAD.mine AS m JOIN {T} AS o "
                   f"ON 1 = CONTAINS(POINT('ICRS', o.ra, o.decl), CIRCLE('ICRS', m.ra, m.dec, {r})) GROUP BY m.id",
                   uploads={"mine": ext})
    _, d2, _ = match_coordinates_sky(SkyCoord(ext["ra"].to_numpy() * u.deg, ext["dec"].to_numpy() * u.deg), cat)
    want = {i: float(s) for i, s in enumerate(d2.deg) if s <= r}
    got = dict(zip(res["id"].to_pylist(), res["d"].to_pylist()))
    assert set(got) == set(want) and len(want) > 20
    assert all(abs(got[i] - want[i]) <= TOL for i in want)


def test_cli_cluster_with_a_token(cluster, tmp_path, capsys):
    """``--cluster URL --token T`` (or $QENGINE_TOKEN) reaches a czar that requires authentication;
    without the token the czar's refusal is reported."""
    from czar.server import HttpServer, make_app
    from qengine.users import AuthConfig, UserStore

    qe, _, _ = cluster
    store = UserStore(tmp_path / "users.json")
    store.add("ann", "power")
    store.grant("ann", "hip")
    token = store.new_token("ann")
    gaia = pq.read_table(DATA / "xmatch_gaia.parquet").slice(0, 300)
    write_table(gaia, tmp_path / "in.parquet")
    server = HttpServer(make_app(qe.czar, tmp_path / "jobs", auth=AuthConfig(store, anonymous=False))).start()
    try:
        p = argparse.ArgumentParser()
        add_arguments(p)
        common = ["--cluster", server.url, "--table", "hip.Hipparcos", "--radius", "5arcsec", "--columns", "hip"]
        out = tmp_path / "out.parquet"
        assert cli_run(p.parse_args([*common, "--token", token, "--out", str(out), str(tmp_path / "in.parquet")])) == 0, \
            capsys.readouterr().err
        want = crossmatch(qe.czar, "hip.Hipparcos", gaia, 5 / 3600, columns=["hip"])
        assert read_table(out).num_rows == want.num_rows > 0
        assert cli_run(p.parse_args([*common, "--token", "", str(tmp_path / "in.parquet")])) == 2
        assert "authentication required: send 'Authorization: Bearer <token>'" in capsys.readouterr().err
    finally:
        server.shutdown()
