"""Synthetic catalogue generators: catalogs/sky.py and catalogs/generate.py."""
from __future__ import annotations

import argparse
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalogs import sky
from catalogs.generate import add_arguments, generate, generate_tables, run
from qengine.catalog import load_catalog
from qengine.errors import ConfigError
from qengine.geometry import angular_separation

CATALOGS = ("lsst_dr", "sdss", "ukidss", "gaia")


def _tables(name: str, n: int, **kw) -> dict[str, pa.Table]:
    cat = load_catalog(name)
    batches: dict[str, list[pa.RecordBatch]] = {}
    for tname, batch in generate_tables(cat, n, **kw):
        batches.setdefault(tname, []).append(batch)
    return {t: pa.Table.from_batches(b, schema=cat.table(t).arrow_schema())
            for t, b in batches.items()}


@pytest.fixture(scope="module")
def lsst():
    return _tables("lsst_dr", 3000, seed=11, batch_size=1000)


@pytest.fixture(scope="module")
def sdss():
    return _tables("sdss", 6000, seed=3)


@pytest.fixture(scope="module")
def ukidss():
    return _tables("ukidss", 4000, seed=5)


@pytest.fixture(scope="module")
def gaia():
    return _tables("gaia", 20000, seed=2)


def _col(t: pa.Table, name: str) -> np.ndarray:
    return t.column(name).to_numpy(zero_copy_only=False)


# ---------------------------------------------------------------------------------- sky


def test_galactic_rotation_matches_astropy():
    from astropy.coordinates import SkyCoord
    import astropy.units as u

    ra, dec = sky.uniform_sphere(np.random.default_rng(0), 300)
    l, b = sky.icrs_to_galactic(ra, dec)
    ref = SkyCoord(ra=ra * u.deg, dec=dec * u.deg, frame="icrs").galactic
    sep = SkyCoord(l=l * u.deg, b=b * u.deg, frame="galactic").separation(ref).arcsec
    assert sep.max() < 0.1
    ra2, dec2 = sky.galactic_to_icrs(l, b)
    assert np.allclose(angular_separation(ra, dec, ra2, dec2), 0.0, atol=1e-9)


def test_htm_index_matches_sphgeom():
    import lsst.sphgeom as sg

    ra, dec = sky.uniform_sphere(np.random.default_rng(1), 300)
    era, edec = sky.edge_case_positions()
    ra, dec = np.concatenate([ra, era]), np.concatenate([dec, edec])
    for level in (0, 7, 20):
        pix = sg.HtmPixelization(level)
        ref = [pix.index(sg.UnitVector3d(sg.LonLat.fromDegrees(a, d))) for a, d in zip(ra, dec)]
        assert sky.htm_index(ra, dec, level).tolist() == ref


def test_star_density_rises_towards_the_galactic_plane():
    ra, dec = sky.StarModel().sample(np.random.default_rng(2), 100_000)
    b = np.abs(sky.icrs_to_galactic(ra, dec)[1])

    def per_sr(lo, hi):
        area = 4 * math.pi * (math.sin(math.radians(hi)) - math.sin(math.radians(lo)))
        return ((b >= lo) & (b < hi)).sum() / area

    assert per_sr(0, 10) > 5 * per_sr(60, 90)
    assert np.all((dec >= -90) & (dec <= 90)) and np.all((ra >= 0) & (ra < 360))


def test_galaxies_are_clustered():
    model = sky.GalaxyModel(4, n_clusters=200)
    ra, dec = model.sample(np.random.default_rng(3), 20_000)
    # Counts in ~1 deg^2 cells: clustering makes them far more variable than Poisson.
    cell = np.floor(dec).astype(int) * 400 + np.floor(ra * np.cos(np.radians(dec))).astype(int)
    counts = np.bincount(cell - cell.min())
    counts = counts[counts > 0]
    assert counts.var() > 3 * counts.mean()


def test_footprints_contain_their_samples():
    rng = np.random.default_rng(4)
    for name, fp in sky.FOOTPRINTS.items():
        ra, dec = fp.sample_uniform(rng, 2000)
        assert fp.contains(ra, dec).all(), name
        s_ra, s_dec = sky.StarModel().sample(rng, 500, fp)
        assert fp.contains(s_ra, s_dec).all(), name
    lsst = sky.footprint_for("survey", "lsst_dr", "Object")
    assert lsst.name == "lsst" and not lsst.contains(np.array([10.0]), np.array([30.0]))[0]
    with pytest.raises(ValueError):
        sky.footprint_for("nowhere")


def test_offsets_stay_valid_at_the_poles_and_ra_wrap():
    ra = np.array([0.0, 359.9999999, 10.0, 200.0])
    dec = np.array([90.0, 0.0, -90.0, 89.99999])
    out_ra, out_dec = sky.offset_positions(ra, dec, np.full(4, 0.4), np.full(4, 0.3))
    assert np.all((out_ra >= 0) & (out_ra < 360)) and np.all(np.abs(out_dec) <= 90)
    assert np.allclose(angular_separation(ra, dec, out_ra, out_dec) * 3600, 0.5, atol=1e-3)


# ---------------------------------------------------------------------------------- tables


@pytest.mark.parametrize("name", CATALOGS)
def test_every_catalogue_generates_with_its_schema(name):
    cat = load_catalog(name)
    seen = set()
    for tname, batch in generate_tables(cat, 600, seed=1, batch_size=250):
        table = cat.table(tname)
        assert batch.schema.equals(table.arrow_schema(), check_metadata=True), tname
        assert batch.num_rows <= 250, tname
        seen.add(tname)
    expected = {t.name for t in cat.tables.values() if t.role != "match"}
    assert expected <= seen


def test_fills_every_column_of_rubins_full_schemas():
    """Generic columns: every DP1 / DP0.2 Object, Source and ForcedSource column, any type."""
    import yaml
    from importlib.resources import files

    from qengine.catalog import Catalog, Column, Partitioning, Table

    for schema in ("dp1", "dp02_dc2"):
        doc = yaml.load((files("lsst.sdm.schemas") / f"{schema}.yaml").read_text(),
                        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        sdm = {t["name"]: t for t in doc["tables"]}

        def cols(name, extra=()):
            out = [Column(name=c["name"], datatype={"text": "string"}.get(c["datatype"], c["datatype"]),
                          unit=c.get("ivoa:unit") or c.get("fits:tunit"), ucd=c.get("ivoa:ucd"),
                          nullable=c.get("nullable", True) is not False)
                   for c in sdm[name]["columns"]]
            names = {c.name for c in out}
            return tuple(out + [c for c in extra if c.name not in names])

        oid = Column(name="objectId", datatype="long", ucd="meta.id", nullable=False)
        fsid = Column(name="forcedSourceId", datatype="long", ucd="meta.id", nullable=False)
        tables = {
            "Object": Table(name="Object", role="director", columns=cols("Object"),
                            id_column="objectId", ra_column="coord_ra", dec_column="coord_dec"),
            "Source": Table(name="Source", role="child", columns=cols("Source", [oid]),
                            id_column="sourceId", director="Object", foreign_key="objectId"),
            "ForcedSource": Table(name="ForcedSource", role="child",
                                  columns=cols("ForcedSource", [oid, fsid]),
                                  id_column="forcedSourceId", director="Object", foreign_key="objectId"),
        }
        cat = Catalog(name="lsst_full", database=schema, description=None,
                      partitioning=Partitioning(), tables=tables)
        rows = {}
        for tname, batch in generate_tables(cat, 300, seed=1):
            assert batch.schema.equals(tables[tname].arrow_schema(), check_metadata=True)
            rows[tname] = rows.get(tname, 0) + batch.num_rows
            if tname == "Object":
                flux = batch.column("g_psfFlux").to_numpy(zero_copy_only=False)
                assert np.nanmedian(flux) > 0
        assert rows["Object"] == 300 and rows["Source"] > 300 and rows["ForcedSource"] > 300


def test_same_seed_same_data_other_seed_other_data():
    a = _tables("lsst_dr", 1500, seed=7, batch_size=600)
    b = _tables("lsst_dr", 1500, seed=7, batch_size=600)
    c = _tables("lsst_dr", 1500, seed=8, batch_size=600)
    assert a.keys() == b.keys()
    for t in a:
        assert a[t].equals(b[t]), t
    assert not np.array_equal(_col(a["Object"], "coord_ra"), _col(c["Object"], "coord_ra"))
    assert not np.array_equal(_col(a["Object"], "objectId"), _col(c["Object"], "objectId"))


def test_ids_unique_and_foreign_keys_resolve(lsst, sdss, ukidss):
    obj = _col(lsst["Object"], "objectId")
    assert np.unique(obj).size == obj.size
    for child in ("Source", "ForcedSource"):
        t = lsst[child]
        own = load_catalog("lsst_dr").table(child).id_column
        ids = _col(t, own)
        assert np.unique(ids).size == ids.size
        assert np.isin(_col(t, "objectId"), obj).all()
    photo = _col(sdss["PhotoObjAll"], "objID")
    assert np.unique(photo).size == photo.size
    assert np.array_equal(np.sort(_col(sdss["Photoz"], "objID")), np.sort(photo))
    assert np.isin(_col(sdss["Neighbors"], "objID"), photo).all()
    assert np.isin(_col(sdss["Neighbors"], "neighborObjID"), photo).all()
    dxs = _col(ukidss["dxsSource"], "sourceID")
    assert np.unique(dxs).size == dxs.size
    assert np.array_equal(np.sort(_col(ukidss["dxsVariability"], "sourceID")), np.sort(dxs))
    assert np.unique(np.concatenate([dxs, _col(ukidss["lasSource"], "sourceID")])).size == 2 * dxs.size


def test_children_near_their_director(lsst):
    obj = lsst["Object"]
    pos = dict(zip(_col(obj, "objectId"), zip(_col(obj, "coord_ra"), _col(obj, "coord_dec"))))
    for child in ("Source", "ForcedSource"):
        t = lsst[child]
        ra0, dec0 = np.array([pos[i] for i in _col(t, "objectId")]).T
        sep = angular_separation(ra0, dec0, _col(t, "coord_ra"), _col(t, "coord_dec")) * 3600
        assert sep.max() < 1.0, child
    sep = angular_separation(ra0, dec0, _col(lsst["ForcedSource"], "coord_ra"),
                             _col(lsst["ForcedSource"], "coord_dec"))
    assert sep.max() == 0.0                 # forced photometry at the Object's position
    src = lsst["Source"]
    ra0, dec0 = np.array([pos[i] for i in _col(src, "objectId")]).T
    jitter = angular_separation(ra0, dec0, _col(src, "coord_ra"), _col(src, "coord_dec")) * 3600
    assert 0.01 < np.median(jitter) < 0.5


def test_children_counts_bands_times_and_visits(lsst):
    obj = _col(lsst["Object"], "objectId")
    for child, lo, hi in (("Source", 9.0, 15.0), ("ForcedSource", 14.0, 22.0)):
        ids, counts = np.unique(_col(lsst[child], "objectId"), return_counts=True)
        assert ids.size == obj.size and counts.min() >= 1 and counts.max() <= 300
        assert lo < counts.mean() < hi, (child, counts.mean())
    src = lsst["Source"]
    assert set(_col(src, "band")) == set("ugrizy")
    visit = lsst["Visit"]
    mjd = dict(zip(_col(visit, "visit"), _col(visit, "expMidptMJD")))
    vband = dict(zip(_col(visit, "visit"), _col(visit, "band")))
    assert np.isin(_col(src, "visit"), _col(visit, "visit")).all()
    assert all(vband[v] == b for v, b in zip(_col(src, "visit")[:2000], _col(src, "band")[:2000]))
    times = np.array([mjd[v] for v in _col(src, "visit")])
    assert times.min() >= 60000 and times.max() <= 63650
    assert np.isin(_col(src, "ccdVisitId"), _col(lsst["CcdVisit"], "ccdVisitId")).all()
    assert np.isin(_col(lsst["ForcedSource"], "ccdVisitId"), _col(lsst["CcdVisit"], "ccdVisitId")).all()


def test_batches_are_bounded():
    sizes = {}
    for tname, batch in generate_tables("lsst_dr", 2500, seed=1, batch_size=700):
        assert batch.num_rows <= 700, tname
        sizes.setdefault(tname, []).append(batch.num_rows)
    assert len(sizes["Object"]) == 4 and len(sizes["Source"]) > 4


@pytest.mark.parametrize("fixture", ["lsst", "sdss", "ukidss", "gaia"])
def test_positions_are_valid(fixture, request):
    tables = request.getfixturevalue(fixture)
    for tname, t in tables.items():
        for f in t.schema:
            ucd = (f.metadata or {}).get(b"ucd", b"").decode()
            unit = (f.metadata or {}).get(b"unit", b"").decode()
            if pa.types.is_floating(f.type) and unit == "deg" and ucd.startswith(("pos.eq.ra", "pos.eq.dec")):
                v = _col(t, f.name)
                v = v[~np.isnan(v)]
                if ucd.startswith("pos.eq.ra"):
                    assert np.all((v >= 0) & (v < 360)), (tname, f.name)
                else:
                    assert np.all((v >= -90) & (v <= 90)), (tname, f.name)


def test_stars_crowd_the_galactic_plane(gaia):
    b = np.abs(_col(gaia["gaia_source"], "b") if "b" in gaia["gaia_source"].column_names else
               sky.icrs_to_galactic(_col(gaia["gaia_source"], "ra"), _col(gaia["gaia_source"], "dec"))[1])
    near = (b < 10).mean() / math.sin(math.radians(10))
    far = (b > 60).mean() / (1 - math.sin(math.radians(60)))
    assert near > 4 * far


def test_sentinel_rates_are_sane(ukidss, sdss):
    cat = load_catalog("ukidss")
    rates = {}
    for col in cat.table("lasSource").columns:
        if col.sentinel is None:
            continue
        v = _col(ukidss["lasSource"], col.name)
        sentinel = np.asarray(col.sentinel).astype(v.dtype)
        rates[col.name] = float((v == sentinel).mean())
    assert max(rates.values()) < 0.7
    assert 0.005 < rates["kAperMag3"] < 0.6          # faint sources undetected in K
    assert rates["j_1AperMag3"] < rates["kAperMag3"]  # the survey is selected in J
    assert rates["yXi"] == rates["yClass"] <= rates["yAperMag3"]  # a band goes missing as a whole
    u = _col(sdss["PhotoObjAll"], "u")
    assert 0.0 < (u == np.float32(-9999.0)).mean() < 0.05


def test_nulls_only_where_allowed(lsst, gaia):
    for tables, name in ((lsst, "lsst_dr"), (gaia, "gaia")):
        cat = load_catalog(name)
        for tname, t in tables.items():
            for col in cat.table(tname).columns:
                nulls = t.column(col.name).null_count
                if not col.nullable or col.sentinel is not None:
                    assert nulls == 0, (tname, col.name)
    for col in ("u_psfFlux", "r_psfFlux"):
        frac = lsst["Object"].column(col).null_count / lsst["Object"].num_rows
        assert 0.0 < frac < 0.1
    flag = _col(lsst["Object"], "r_psfFlux_flag")
    assert np.array_equal(lsst["Object"].column("r_psfFlux").is_null().to_numpy(zero_copy_only=False), flag)


def test_number_counts_rise_to_the_faint_end(sdss, gaia):
    r = _col(sdss["PhotoObjAll"], "r")
    counts = np.histogram(r, bins=[16, 17, 18, 19, 20, 21, 22])[0]
    assert np.all(np.diff(counts) > 0), counts
    g = _col(gaia["gaia_source"], "phot_g_mean_mag")
    counts = np.histogram(g[np.isfinite(g)], bins=np.arange(10, 21))[0]
    assert np.all(np.diff(counts) > 0), counts


def test_photometry_is_consistent(sdss, lsst):
    r = _col(sdss["PhotoObjAll"], "r")
    err = _col(sdss["PhotoObjAll"], "err_r")
    assert np.median(err[(r > 21) & (r < 22)]) > 3 * np.median(err[(r > 17) & (r < 18)])
    # Bright point sources lie on the stellar locus: g - r and r - i rise together.
    t = sdss["PhotoObjAll"]
    typ = _col(t, "type")
    g, i = _col(t, "g"), _col(t, "i")
    star = (r > 0) & (r < 19) & (typ == 6) & (g > 0) & (i > 0)          # -9999: missing
    assert np.corrcoef((g - r)[star], (r - i)[star])[0, 1] > 0.6
    assert -0.5 < np.median((g - r)[star]) < 1.7
    # LSST fluxes are nJy: bright objects have small relative errors, faint ones large.
    obj = lsst["Object"]
    flux, ferr = _col(obj, "r_psfFlux"), _col(obj, "r_psfFluxErr")
    ok = np.isfinite(flux) & (flux > 0)
    mag = 31.4 - 2.5 * np.log10(flux[ok])
    rel = ferr[ok] / flux[ok]
    assert np.median(rel[mag < 21]) < 0.01 < np.median(rel[mag > 25])
    ext = _col(obj, "refExtendedness")
    assert 0.4 < np.nanmean(ext) < 0.95


def test_edge_cases_are_included():
    t = _tables("lsst_dr", 3000, seed=1, edge_cases=True, batch_size=1000)["Object"]
    ra, dec = _col(t, "coord_ra"), _col(t, "coord_dec")
    assert (dec == 90.0).any() and (dec == -90.0).any()
    assert (ra == 0.0).any() and (ra >= 360.0 - 1e-9).any() and ra.max() < 360.0
    for stripes in (85, load_catalog("lsst_dr").partitioning.num_stripes):
        for k in (1, 17, 42, stripes - 1):
            assert (dec == -90.0 + k * 180.0 / stripes).any(), (stripes, k)


def test_survey_footprints():
    t = _tables("lsst_dr", 1500, seed=2, footprint="survey")["Object"]
    assert _col(t, "coord_dec").max() < 12.01
    u = _tables("ukidss", 800, seed=2, footprint="survey", tables=["dxsSource"])
    fp = sky.FOOTPRINTS["ukidss_dxs"]
    ra, dec = _col(u["dxsSource"], "ra"), _col(u["dxsSource"], "decl")
    assert fp.contains(ra, dec).mean() > 0.97         # close pairs may poke out by < 20"
    with pytest.raises(ConfigError):
        list(generate_tables("gaia", 10, footprint="moon"))


def test_neighbors_are_true_pairs(sdss):
    t = sdss["PhotoObjAll"]
    pos = dict(zip(_col(t, "objID"), zip(_col(t, "ra"), _col(t, "decl"))))
    nb = sdss["Neighbors"]
    assert nb.num_rows > 0
    a = np.array([pos[i] for i in _col(nb, "objID")])
    b = np.array([pos[i] for i in _col(nb, "neighborObjID")])
    sep = angular_separation(a[:, 0], a[:, 1], b[:, 0], b[:, 1]) * 60
    assert np.allclose(sep, _col(nb, "distance"), atol=1e-9) and sep.max() < 0.5


def test_generate_writes_parquet(tmp_path):
    paths = generate("sdss", 2500, tmp_path, seed=4, batch_size=1000, rows_per_file=2000,
                     progress=False)
    cat = load_catalog("sdss")
    assert len(paths["PhotoObjAll"]) == 2
    assert [p.name for p in paths["PhotoObjAll"]] == ["part-00000.parquet", "part-00001.parquet"]
    for tname, files in paths.items():
        expected = cat.table(tname).arrow_schema()
        for f in files:
            assert f.parent == tmp_path / tname
            schema = pq.read_schema(f)
            assert schema.remove_metadata().equals(expected.remove_metadata())
            for field in expected:
                assert schema.field(field.name).metadata == field.metadata
            assert pq.read_metadata(f).row_group(0).column(0).compression == "ZSTD"
    total = sum(pq.read_metadata(f).num_rows for f in paths["PhotoObjAll"])
    assert total == 2500
    # The same seed gives byte-identical files.
    twin = generate("sdss", 2500, tmp_path / "twin", seed=4, batch_size=1000, rows_per_file=2000,
                    progress=False)
    for tname, files in paths.items():
        assert [f.read_bytes() for f in files] == [f.read_bytes() for f in twin[tname]], tname
    # Rerunning into the same directory replaces the files.
    again = generate("sdss", 2500, tmp_path, seed=4, batch_size=1000, rows_per_file=5000,
                     progress=False)
    assert len(again["PhotoObjAll"]) == 1
    assert sorted(p.name for p in (tmp_path / "PhotoObjAll").iterdir()) == ["part-00000.parquet"]


def test_cli_run_writes_files(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--catalog", "gaia", "--objects", "500", "--out", str(tmp_path),
                              "--seed", "3", "--no-progress", "--edge-cases"])
    assert run(args) == 0
    files = list((tmp_path / "gaia_source").glob("part-*.parquet"))
    assert files and pq.read_table(files[0]).num_rows == 500
    assert "generated gaia" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        run(parser.parse_args(["--catalog", "gaia", "--objects", "-1", "--out", str(tmp_path)]))


def test_module_help_runs():
    out = subprocess.run([sys.executable, "-m", "catalogs.generate", "--help"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                         timeout=60)
    assert out.returncode == 0 and "--objects" in out.stdout
