"""Catalogue metadata: shipped definitions, agreement with the archives, validation errors."""
from __future__ import annotations

import copy
import importlib.resources
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from qengine.catalog import (
    DATATYPES,
    Catalog,
    Column,
    Partitioning,
    Table,
    available_catalogs,
    load_catalog,
    validate_catalog,
)
from qengine.errors import CatalogError

CATALOG_DIR = Path(__file__).resolve().parents[1] / "catalogs"
SHIPPED = ("lsst_dr", "sdss", "ukidss", "gaia")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

ARROW = {
    "boolean": pa.bool_(), "byte": pa.int8(), "short": pa.int16(), "int": pa.int32(),
    "long": pa.int64(), "float": pa.float32(), "double": pa.float64(), "char": pa.string(),
    "string": pa.string(), "timestamp": pa.timestamp("us"),
}
NUMERIC = {"byte", "short", "int", "long", "float", "double"}


# --------------------------------------------------------------------------------------------
# shipped catalogues


def test_available_catalogs_lists_shipped_yaml():
    names = available_catalogs()
    assert set(SHIPPED) <= set(names)
    assert names == sorted(names)
    assert set(names) == {p.stem for p in CATALOG_DIR.glob("*.yaml")}


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_catalog_loads_and_roles_are_consistent(name):
    cat = load_catalog(name)
    assert cat.name == name
    assert cat.source and cat.source.endswith(f"{name}.yaml")
    p = cat.partitioning
    assert p.num_stripes >= 1 and p.num_sub_stripes >= 1
    assert 0 <= p.overlap <= 180 / (p.num_stripes * p.num_sub_stripes)
    assert cat.directors(), "every catalogue has a director"
    for tab in cat.tables.values():
        names = tab.column_names
        assert len({n.lower() for n in names}) == len(names)
        assert tab.role in ("director", "child", "replicated", "match")
        if tab.role == "director":
            assert tab.column(tab.id_column).datatype in {"byte", "short", "int", "long"}
            assert tab.column(tab.ra_column).datatype in {"float", "double"}
            assert tab.column(tab.dec_column).datatype in {"float", "double"}
            assert tab.column(tab.ra_column).unit == "deg"
            assert tab.column(tab.dec_column).unit == "deg"
            assert not tab.column(tab.id_column).nullable
        elif tab.role == "child":
            assert cat.table(tab.director).role == "director"
            fk = tab.column(tab.foreign_key)
            assert fk.datatype == cat.table(tab.director).column(
                cat.table(tab.director).id_column).datatype
            assert tab in cat.children_of(tab.director)
        elif tab.role == "match":
            assert len(tab.match_directors) == 2
            for dname, col in tab.match_directors:
                assert cat.table(dname).role == "director"
                assert col in names
            assert (tab.director, tab.foreign_key) == tab.match_directors[0]
        for alias, target in tab.aliases.items():
            assert tab.column(alias).name == target
        for col in tab.columns:
            assert col.datatype in DATATYPES
            if col.sentinel is not None:
                assert col.datatype in NUMERIC
    for d in cat.directors():
        for child in cat.children_of(d.name):
            assert child.role == "child" and child.director == d.name


@pytest.mark.parametrize("name", SHIPPED)
def test_arrow_schema_matches_datatypes(name):
    cat = load_catalog(name)
    for tab in cat.tables.values():
        schema = tab.arrow_schema()
        assert schema.names == tab.column_names
        for col, fld in zip(tab.columns, schema):
            assert fld.type == ARROW[col.datatype] == col.arrow_type()
            assert fld.nullable == col.nullable
            meta = fld.metadata or {}
            for key in ("unit", "ucd", "description"):
                value = getattr(col, key)
                if value is None:
                    assert key.encode() not in meta
                else:
                    assert meta[key.encode()] == value.encode()


def test_expected_tables_and_roles():
    roles = {n: {t.name: t.role for t in load_catalog(n).tables.values()} for n in SHIPPED}
    assert roles["lsst_dr"] == {"Object": "director", "Source": "child",
                                "ForcedSource": "child", "CcdVisit": "replicated",
                                "Visit": "replicated", "Filter": "replicated"}
    assert roles["sdss"] == {"PhotoObjAll": "director", "Photoz": "child", "Neighbors": "match"}
    assert roles["ukidss"] == {
        "lasSource": "director", "dxsSource": "director", "dxsDetection": "director",
        "dxsSourceXDetectionBestMatch": "child", "dxsVariability": "child",
        "Multiframe": "replicated", "MultiframeDetector": "replicated",
        "Filter": "replicated", "lasMergeLog": "replicated", "lasSourceNeighbours": "match"}
    assert roles["gaia"] == {"gaia_source": "director"}
    assert [load_catalog(n).database for n in SHIPPED] == ["dp02", "sdss", "ukidssdr8", "gaia"]


# --------------------------------------------------------------------------------------------
# LSST: metadata equals Rubin's published schema


@pytest.fixture(scope="module")
def sdm_tables():
    pytest.importorskip("lsst.sdm.schemas")
    resource = importlib.resources.files("lsst.sdm.schemas") / "dp02_dc2.yaml"
    doc = yaml.load(resource.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
    return {t["name"]: {c["name"]: c for c in t["columns"]} for t in doc["tables"]}


def test_lsst_columns_agree_with_sdm_schemas(sdm_tables):
    raw = yaml.load((CATALOG_DIR / "lsst_dr.yaml").read_text(), Loader=_YAML_LOADER)
    assert raw["sdm_schema"] == "dp02_dc2"
    cat = load_catalog("lsst_dr")
    checked = 0
    for tname, traw in raw["tables"].items():
        tab = cat.table(tname)
        sdm_table = traw.get("sdm_table")
        if sdm_table is None:  # hand-defined tables say so in their description
            assert tname == "Filter" and "Not part of DP0.2" in tab.description
        for craw in traw["columns"]:
            if sdm_table is None and "sdm_column" not in craw:
                continue
            ref_table, ref_col = (craw["sdm_column"].split(".") if "sdm_column" in craw
                                  else (sdm_table, craw["name"]))
            sdm = sdm_tables[ref_table][ref_col]
            col = tab.column(craw["name"])
            assert col.datatype == sdm["datatype"], col.name
            assert col.unit == (sdm.get("fits:tunit") or sdm.get("ivoa:unit") or None), col.name
            assert col.ucd == (sdm.get("ivoa:ucd") or None), col.name
            if "sdm_column" not in craw:
                assert col.description == " ".join(sdm["description"].split())
            checked += 1
    assert checked == sum(1 for t in raw["tables"].values() for c in t["columns"]
                          if t.get("sdm_table") or "sdm_column" in c)
    assert 60 <= len(cat.table("Object").columns) <= 90
    assert 20 <= len(cat.table("Source").columns) <= 40


def test_lsst_selection_contents():
    cat = load_catalog("lsst_dr")
    obj = cat.table("Object")
    assert (obj.id_column, obj.ra_column, obj.dec_column) == ("objectId", "coord_ra", "coord_dec")
    for name in ("detect_isPrimary", "refExtendedness", "tract", "patch", "shape_xx", "xErr"):
        assert obj.has_column(name)
    for band in "ugrizy":
        for stem in ("psfFlux", "psfFluxErr", "cModelFlux", "cModelFluxErr", "calibFlux"):
            assert obj.column(f"{band}_{stem}").unit == "nJy"
    src = cat.table("Source")
    assert (src.director, src.foreign_key, src.id_column) == ("Object", "objectId", "sourceId")
    for name in ("ra", "decl", "band", "ccdVisitId", "psfFlux", "psfFluxErr", "psfFlux_flag"):
        assert src.has_column(name)
    # DP0.2's Source has no objectId: the added key says so
    assert "NOT in DP0.2" in src.column("objectId").description
    fs = cat.table("ForcedSource")
    assert (fs.director, fs.foreign_key, fs.id_column) == ("Object", "objectId", "forcedSourceId")
    for name in ("ccdVisitId", "band", "psfFlux", "psfFluxErr", "psfDiffFlux", "psfDiffFluxErr"):
        assert fs.has_column(name)
    assert [c.name for c in cat.children_of("object")] == ["Source", "ForcedSource"]


def test_lsst_yaml_is_what_import_sdm_generates():
    pytest.importorskip("lsst.sdm.schemas")
    from catalogs import import_sdm

    assert import_sdm.render() == (CATALOG_DIR / "lsst_dr.yaml").read_text(encoding="utf-8"), \
        "catalogs/lsst_dr.yaml is stale: run python catalogs/import_sdm.py"
    assert import_sdm.main(["--check"]) == 0


# --------------------------------------------------------------------------------------------
# SDSS / UKIDSS / Gaia: the archives' real names (archive-schemas.md)

SDSS_PHOTO = ["objID", "ra", "decl", "type", "mode", "flags", "status", "run", "rerun", "camcol",
              "field", "htmID", "rowv", "colv", "rowvErr", "colvErr"] + [
    f.format(b=b) for b in "ugriz" for f in (
        "{b}", "err_{b}", "modelMag_{b}", "psfMag_{b}", "petroMag_{b}", "petroRad_{b}",
        "petroRadErr_{b}", "petroR50_{b}", "petroR90_{b}", "extinction_{b}", "fiberMag_{b}")]
WFCAM_FAMILY = ["{b}AperMag3", "{b}AperMag3Err", "{b}AperMag4", "{b}AperMag4Err", "{b}AperMag6",
                "{b}AperMag6Err", "{b}PetroMag", "{b}PsfMag", "{b}HallMag", "{b}Gausig",
                "{b}Ell", "{b}PA", "{b}ErrBits", "{b}Deblend", "{b}Class", "{b}ClassStat",
                "{b}ppErrBits", "{b}SeqNum", "{b}Xi", "{b}Eta"]
WFCAM_SOURCE = ["sourceID", "cuEventID", "frameSetID", "ra", "decl", "sigRa", "sigDec", "epoch",
                "cx", "cy", "cz", "htmID", "l", "b", "lambda", "eta", "priOrSec", "mergedClass",
                "mergedClassStat", "pStar", "pGalaxy", "pNoise", "pSaturated", "eBV", "aJ", "aH",
                "aK"]


def _assert_has(tab: Table, names):
    missing = [n for n in names if n not in tab.column_names]  # exact spelling
    assert not missing, f"{tab.name} lacks {missing}"


def test_sdss_real_names_types_and_sentinels():
    cat = load_catalog("sdss")
    photo = cat.table("PhotoObjAll")
    _assert_has(photo, SDSS_PHOTO)
    _assert_has(cat.table("Photoz"), ["objID", "z", "zErr", "nnObjID"])
    _assert_has(cat.table("Neighbors"), ["objID", "neighborObjID", "distance", "type",
                                         "neighborType", "mode", "neighborMode"])
    types = {n: photo.column(n).datatype for n in ("objID", "ra", "decl", "type", "mode", "flags",
                                                   "run", "camcol", "psfMag_r")}
    assert types == {"objID": "long", "ra": "double", "decl": "double", "type": "short",
                     "mode": "byte", "flags": "long", "run": "short", "camcol": "byte",
                     "psfMag_r": "float"}
    assert photo.column("dec").name == "decl"  # SkyServer's spelling
    assert photo.column("psfMag_r").sentinel == -9999.0
    assert photo.column("psfMag_r").ucd == "phot.mag;em.opt.R"
    assert cat.table("Neighbors").column("distance").unit == "arcmin"
    assert cat.table("Neighbors").match_directors == (("PhotoObjAll", "objID"),
                                                      ("PhotoObjAll", "neighborObjID"))
    assert cat.match_tables() == [cat.table("Neighbors")]
    assert cat.children_of("PhotoObjAll") == [cat.table("Photoz")]


def test_ukidss_real_names_types_and_sentinels():
    cat = load_catalog("ukidss")
    las, dxs = cat.table("lasSource"), cat.table("dxsSource")
    _assert_has(las, WFCAM_SOURCE + ["aY", "ymj_1Pnt", "ymj_1PntErr", "j_1mhPnt", "j_1mhPntErr",
                                     "hmkPnt", "hmkPntErr"])
    _assert_has(las, [f.format(b=b) for b in ("y", "j_1", "h", "k", "j_2") for f in WFCAM_FAMILY])
    _assert_has(dxs, WFCAM_SOURCE + ["jmhPnt", "jmhPntErr", "hmkPnt", "jmkPnt"])
    _assert_has(dxs, [f.format(b=b) for b in ("j", "h", "k") for f in WFCAM_FAMILY])
    assert not dxs.has_column("yAperMag3")
    _assert_has(cat.table("dxsDetection"), ["multiframeID", "extNum", "seqNum", "filterID", "ra",
                                            "decl", "aperMag3", "aperMag3Err", "ppErrBits",
                                            "class"])
    _assert_has(cat.table("dxsSourceXDetectionBestMatch"),
                ["sourceID", "multiframeID", "extNum", "seqNum", "flag"])
    _assert_has(cat.table("dxsVariability"), ["sourceID", "frameSetID", "ra", "decl",
                                              "variableClass"] + [
        f"{b}{s}" for b in "jhk" for s in ("nGoodObs", "meanMag", "medianMag", "MagRms",
                                           "MaxMag", "MinMag", "skewness", "probVar")])
    _assert_has(cat.table("Multiframe"), ["multiframeID", "fileName", "filterID", "mjdObs",
                                          "obsType", "frameType"])
    _assert_has(cat.table("MultiframeDetector"), ["multiframeID", "extNum"])
    _assert_has(cat.table("Filter"), ["filterID", "shortName"])
    _assert_has(cat.table("lasMergeLog"), ["frameSetID"] + [
        f"{b}{s}" for b in ("y", "j_1", "h", "k", "j_2") for s in ("mfID", "eNum")])
    assert las.column("sourceID").datatype == "long"
    assert las.column("ra").datatype == "double"
    assert las.column("yAperMag3").datatype == "float"
    assert las.column("kClass").datatype == "short"
    assert las.column("kppErrBits").datatype == "int"
    assert las.column("priOrSec").datatype == "long"
    assert las.column("yAperMag3").sentinel == pytest.approx(-0.9999995e9)
    assert las.column("kClass").sentinel == -9999
    assert las.column("ySeqNum").sentinel == -99999999
    assert las.column("yXi").unit == "arcsec"
    assert las.column("DEC").name == "decl"
    assert las.column("j_1AperMag3").ucd == "phot.mag;em.IR.J"
    assert "J_1" in las.column("j_1AperMag3").description
    assert cat.table("dxsVariability").director == "dxsSource"


def test_gaia_real_names_units_ucds():
    tab = load_catalog("gaia").table("gaia_source")
    expect = {
        "source_id": ("long", None, "meta.id;meta.main"),
        "ra": ("double", "deg", "pos.eq.ra;meta.main"),
        "dec": ("double", "deg", "pos.eq.dec;meta.main"),
        "ra_error": ("float", "mas", "stat.error;pos.eq.ra"),
        "dec_error": ("float", "mas", "stat.error;pos.eq.dec"),
        "parallax": ("double", "mas", "pos.parallax.trig"),
        "parallax_error": ("float", "mas", "stat.error;pos.parallax.trig"),
        "pmra": ("double", "mas/yr", "pos.pm;pos.eq.ra"),
        "pmdec": ("double", "mas/yr", "pos.pm;pos.eq.dec"),
        "phot_g_mean_mag": ("float", "mag", "phot.mag;em.opt"),
        "phot_bp_mean_mag": ("float", "mag", "phot.mag;em.opt.B"),
        "phot_rp_mean_mag": ("float", "mag", "phot.mag;em.opt.R"),
        "ref_epoch": ("double", "yr", "meta.ref;time.epoch"),
    }
    for name, (datatype, unit, ucd) in expect.items():
        col = tab.column(name)
        assert (col.datatype, col.unit, col.ucd) == (datatype, unit, ucd), name
    assert (tab.id_column, tab.ra_column, tab.dec_column) == ("source_id", "ra", "dec")
    assert tab.column("decl").name == "dec"


# --------------------------------------------------------------------------------------------
# lookups


def test_column_lookup_case_insensitive_aliases_and_suggestions():
    cat = load_catalog("lsst_dr")
    obj = cat.table("oBjEcT")
    assert obj is cat.table("Object")
    assert obj.column("COORD_RA").name == "coord_ra"
    assert obj.column("g_PSFFLUX") is obj.column("g_psfFlux")
    assert obj.has_column("OBJECTID") and not obj.has_column("nope")
    assert cat.table("Source").column("DEC").name == "decl"
    assert cat.table("Source").resolve("dec") == "decl"
    with pytest.raises(CatalogError, match=r"'coord_ra2'.*did you mean 'coord_ra'"):
        obj.column("coord_ra2")
    with pytest.raises(CatalogError, match=r"did you mean 'Object'"):
        cat.table("Objet")
    with pytest.raises(CatalogError, match=r"did you mean 'dec'"):  # aliases too
        cat.table("Source").column("dek")
    with pytest.raises(CatalogError, match=r"no column 'zzzzzz'$"):
        obj.column("zzzzzz")
    with pytest.raises(CatalogError, match=r"unknown catalogue 'lsst_d'.*did you mean 'lsst_dr'"):
        load_catalog("lsst_d")


def test_load_by_path_and_cache(tmp_path):
    src = CATALOG_DIR / "gaia.yaml"
    target = tmp_path / "mygaia.yaml"
    target.write_text(src.read_text())
    by_path = load_catalog(target)
    by_str = load_catalog(str(target))
    assert by_path.table("gaia_source").column_names == \
        load_catalog("gaia").table("gaia_source").column_names
    assert by_str.source == str(target) and by_path is by_str  # cached on content
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "missing.yaml")


def test_tables_and_columns_are_hashable_and_frozen():
    tab = load_catalog("sdss").table("PhotoObjAll")
    assert hash(tab) == hash(tab) and hash(tab.columns[0])
    with pytest.raises(AttributeError):
        tab.role = "child"  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# templates


def test_band_templates_expand_in_order(tmp_path):
    doc = _base()
    doc["band_sets"] = {"nir": {"j": {"em": "em.IR.J"}, "h": {"em": "em.IR.H"}}}
    doc["tables"]["Obj"]["columns"] += [
        {"bands": "nir", "columns": [
            {"name": "{b}Mag", "datatype": "float", "unit": "mag", "ucd": "phot.mag;{em}",
             "description": "{B} magnitude", "sentinel": "-0.9999995e9"},
            {"name": "{b}MagErr", "datatype": "float", "unit": "mag"}]},
        {"bands": ["u", "g"], "order": "by_column", "columns": [
            {"name": "psfMag_{b}", "datatype": "float"}, {"name": "err_{b}", "datatype": "float"}]},
    ]
    tab = load_catalog(_write(tmp_path, doc)).table("Obj")
    assert tab.column_names[3:] == ["jMag", "jMagErr", "hMag", "hMagErr",
                                    "psfMag_u", "psfMag_g", "err_u", "err_g"]
    assert tab.column("hMag").ucd == "phot.mag;em.IR.H"
    assert tab.column("hMag").description == "H magnitude"
    assert tab.column("jMag").sentinel == pytest.approx(-0.9999995e9)


# --------------------------------------------------------------------------------------------
# malformed definitions


def _base() -> dict:
    return {
        "name": "testcat",
        "database": "testdb",
        "partitioning": {"num_stripes": 85, "num_sub_stripes": 12, "overlap": 0.01667},
        "tables": {
            "Obj": {
                "role": "director", "id_column": "objId", "ra_column": "ra",
                "dec_column": "decl", "aliases": {"dec": "decl"},
                "columns": [
                    {"name": "objId", "datatype": "long", "nullable": False},
                    {"name": "ra", "datatype": "double", "unit": "deg"},
                    {"name": "decl", "datatype": "double", "unit": "deg"},
                ],
            },
            "Src": {
                "role": "child", "director": "Obj", "foreign_key": "objId",
                "columns": [
                    {"name": "srcId", "datatype": "long"},
                    {"name": "objId", "datatype": "long"},
                    {"name": "flux", "datatype": "float", "unit": "nJy", "sentinel": -9999},
                ],
            },
            "Band": {"role": "replicated",
                     "columns": [{"name": "band", "datatype": "char", "arraysize": 1}]},
        },
    }


def _write(tmp_path: Path, doc: dict, name: str = "broken.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_base_definition_is_valid(tmp_path):
    cat = load_catalog(_write(tmp_path, _base(), "fine.yaml"))
    assert cat.partitioning == Partitioning()
    assert cat.table("Band").column("band").arraysize == "1"
    assert cat.table("Src").column("flux").sentinel == -9999.0


def _t(doc, name="Obj"):
    return doc["tables"][name]


def _cols(doc, name="Obj"):
    return doc["tables"][name]["columns"]


# (id, mutation, table named in the message, key named in the message, other text)
MALFORMED = [
    ("missing-role", lambda d: _t(d).pop("role"), "Obj", "role", "missing"),
    ("missing-columns", lambda d: _t(d, "Src").pop("columns"), "Src", "columns", "missing"),
    ("missing-datatype", lambda d: _cols(d)[1].pop("datatype"), "Obj", "datatype", "missing"),
    ("unknown-table-key", lambda d: _t(d).update(ra_colum="ra"), "Obj", "ra_colum",
     "did you mean 'ra_column'"),
    ("unknown-column-key", lambda d: _cols(d)[1].update(unti="deg"), "Obj", "unti",
     "did you mean 'unit'"),
    ("bad-role", lambda d: _t(d).update(role="directer"), "Obj", "role",
     "did you mean 'director'"),
    ("bad-datatype", lambda d: _cols(d)[1].update(datatype="flaot"), "Obj", "datatype",
     "did you mean 'float'"),
    ("sql-datatype", lambda d: _cols(d)[0].update(datatype="bigint"), "Obj", "datatype",
     "use 'long'"),
    ("ra-column-not-found", lambda d: _t(d).update(ra_column="ra2"), "Obj", "ra_column",
     "did you mean 'ra'"),
    ("ra-column-missing", lambda d: _t(d).pop("ra_column"), "Obj", "ra_column", "missing"),
    ("ra-column-not-numeric", lambda d: _cols(d)[1].update(datatype="string"), "Obj",
     "ra_column", "float or double"),
    ("id-column-not-integer", lambda d: _cols(d)[0].update(datatype="double"), "Obj",
     "id_column", "integer"),
    ("child-unknown-director", lambda d: _t(d, "Src").update(director="Objekt"), "Src",
     "director", "did you mean 'Obj'"),
    ("child-director-not-director", lambda d: _t(d, "Src").update(director="Band"), "Src",
     "director", "not a director"),
    ("child-missing-foreign-key-column", lambda d: _t(d, "Src").update(foreign_key="objid2"),
     "Src", "foreign_key", "not found"),
    ("child-missing-director-key", lambda d: _t(d, "Src").pop("director"), "Src", "director",
     "missing"),
    ("duplicate-column", lambda d: _cols(d).append({"name": "RA", "datatype": "float"}), "Obj",
     "name", "duplicate column"),
    ("bad-unit", lambda d: _cols(d)[1].update(unit="degrees"), "Obj", "unit", "astropy"),
    ("sentinel-on-text", lambda d: _cols(d, "Band")[0].update(sentinel=-9999), "Band",
     "sentinel", "numeric"),
    ("sentinel-not-integer", lambda d: _cols(d)[0].update(sentinel=1.5), "Obj", "sentinel",
     "integer"),
    ("sentinel-too-big", lambda d: _cols(d, "Band").insert(
        0, {"name": "b8", "datatype": "byte", "sentinel": -9999}), "Band", "sentinel", "fit"),
    ("arraysize-on-number", lambda d: _cols(d)[1].update(arraysize="8"), "Obj", "arraysize",
     "char/string"),
    ("nullable-not-bool", lambda d: _cols(d)[1].update(nullable="no way"), "Obj", "nullable",
     "true or false"),
    ("alias-to-unknown", lambda d: _t(d).update(aliases={"dec": "dek"}), "Obj", "aliases",
     "not found"),
    ("alias-clashes", lambda d: _t(d).update(aliases={"RA": "decl"}), "Obj", "aliases",
     "clashes"),
    ("director-with-foreign-key", lambda d: _t(d).update(foreign_key="objId"), "Obj",
     "foreign_key", "not allowed"),
    ("match-one-director", lambda d: d["tables"].update(M={
        "role": "match", "match_directors": [["Obj", "objId"]],
        "columns": [{"name": "objId", "datatype": "long"}]}), "M", "match_directors",
     "exactly two"),
    ("match-unknown-director", lambda d: d["tables"].update(M={
        "role": "match", "match_directors": [["Obj", "a"], ["Ob", "b"]],
        "columns": [{"name": "a", "datatype": "long"}, {"name": "b", "datatype": "long"}]}),
     "M", "match_directors", "not found"),
    ("template-unknown-variable", lambda d: _cols(d).append(
        {"bands": ["g"], "columns": [{"name": "{band}Mag", "datatype": "float"}]}), "Obj",
     "name", "unknown template variable"),
    ("template-unknown-band-set", lambda d: _cols(d).append(
        {"bands": "nir", "columns": [{"name": "{b}Mag", "datatype": "float"}]}), "Obj", "bands",
     "unknown band set"),
    ("template-unquoted", lambda d: _cols(d).append(
        {"bands": ["g"], "columns": [{"name": {"b": None}, "datatype": "float"}]}), "Obj",
     "name", "quote"),
    ("column-name-not-identifier", lambda d: _cols(d)[1].update(name="ra dec"), "Obj", "name",
     "identifier"),
]


@pytest.mark.parametrize("mutate,table,key,text", [m[1:] for m in MALFORMED],
                         ids=[m[0] for m in MALFORMED])
def test_malformed_table_raises_naming_file_table_and_key(tmp_path, mutate, table, key, text):
    doc = copy.deepcopy(_base())
    mutate(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    msg = str(info.value)
    assert "broken.yaml" in msg
    assert f"table '{table}'" in msg
    assert f"key '{key}'" in msg
    assert text in msg


PARTITIONING_ERRORS = [
    ("overlap-too-big", {"overlap": 0.5}, "partitioning.overlap", "sub-stripe height"),
    ("overlap-negative", {"overlap": -0.1}, "partitioning.overlap", "between 0 and 10"),
    ("overlap-huge", {"num_stripes": 1, "num_sub_stripes": 1, "overlap": 11}, "partitioning.overlap",
     "between 0 and 10"),
    ("stripes-zero", {"num_stripes": 0}, "partitioning.num_stripes", ">= 1"),
    ("sub-stripes-float", {"num_sub_stripes": 2.5}, "partitioning.num_sub_stripes", "integer"),
    ("unknown-key", {"overlapp": 0.01}, "partitioning.overlapp", "did you mean 'overlap'"),
]


@pytest.mark.parametrize("change,key,text", [p[1:] for p in PARTITIONING_ERRORS],
                         ids=[p[0] for p in PARTITIONING_ERRORS])
def test_bad_partitioning(tmp_path, change, key, text):
    doc = _base()
    doc["partitioning"].update(change)
    with pytest.raises(CatalogError) as info:
        load_catalog(_write(tmp_path, doc))
    msg = str(info.value)
    assert "broken.yaml" in msg and f"key '{key}'" in msg and text in msg


@pytest.mark.parametrize("key", ["name", "database", "tables"])
def test_missing_catalog_key(tmp_path, key):
    doc = _base()
    doc.pop(key)
    with pytest.raises(CatalogError, match=rf"broken\.yaml.*key '{key}': missing required key"):
        load_catalog(_write(tmp_path, doc))


def test_unknown_catalog_key(tmp_path):
    doc = _base()
    doc["partitionning"] = {}
    with pytest.raises(CatalogError, match=r"key 'partitionning'.*did you mean 'partitioning'"):
        load_catalog(_write(tmp_path, doc))


def test_yaml_syntax_error_reports_file_and_line(tmp_path):
    path = tmp_path / "syntax.yaml"
    path.write_text("name: x\ndatabase: y\ntables:\n  Obj:\n    role: [director\n"
                    "    columns: []\n")
    with pytest.raises(CatalogError, match=r"syntax\.yaml:\d+:\d+: YAML syntax error"):
        load_catalog(path)


def test_duplicate_yaml_key_reports_file_and_line(tmp_path):
    path = tmp_path / "dup.yaml"
    text = _write(tmp_path, _base(), "base.yaml").read_text()
    text = text.replace("  Src:\n", "  Obj:\n", 1)
    path.write_text(text)
    with pytest.raises(CatalogError, match=r"dup\.yaml:\d+:\d+: .*duplicate key 'Obj'"):
        load_catalog(path)


def test_error_messages_carry_line_numbers(tmp_path):
    doc = _base()
    doc["tables"]["Obj"]["ra_column"] = "ra2"
    path = _write(tmp_path, doc)
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "ra_column" in t)
    with pytest.raises(CatalogError, match=rf"broken\.yaml:{line}: table 'Obj': key 'ra_column'"):
        load_catalog(path)


def test_not_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(CatalogError, match="list.yaml: the file must hold a YAML mapping"):
        load_catalog(path)


# --------------------------------------------------------------------------------------------
# catalogues built in code


def test_validate_catalog_in_code():
    cols = (Column("id", "long", nullable=False), Column("ra", "double", "deg"),
            Column("dec", "double", "deg"))
    good = Catalog("c", "db", None, Partitioning(),
                   {"T": Table("T", "director", cols, id_column="id", ra_column="ra",
                               dec_column="dec")})
    validate_catalog(good)
    bad = Catalog("c", "db", None, Partitioning(),
                  {"T": Table("T", "director", cols, id_column="id", ra_column="ra")})
    with pytest.raises(CatalogError, match=r"catalogue 'c': table 'T': key 'dec_column'"):
        validate_catalog(bad)
    with pytest.raises(CatalogError, match=r"key 'datatype'.*did you mean 'double'"):
        Column("x", "doubel")
    assert Column("m", "float", sentinel=-9999).sentinel == -9999.0


def test_match_tables_flag_column(tmp_path):
    """A match table's flag column: Qserv's default name, or its own; never an input column."""
    sdss = load_catalog("sdss")
    assert sdss.table("Neighbors").flag_name == "partitioningFlags"
    assert sdss.table("PhotoObjAll").flag_name is None
    las = load_catalog("ukidss").table("lasSourceNeighbours")
    assert las.match_directors == (("lasSource", "masterObjID"), ("lasSource", "slaveObjID"))
    base = """
name: t
database: t
tables:
  D: {role: director, id_column: id, ra_column: ra, dec_column: decl,
      columns: [{name: id, datatype: long}, {name: ra, datatype: double}, {name: decl, datatype: double}]}
  M:
    role: match
    match_directors: [[D, a], [D, b]]
    %s
    columns: [{name: a, datatype: long}, {name: b, datatype: long}%s]
"""
    def load(extra: str, cols: str = "", text: str = base):
        path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.yaml"
        path.write_text(text % (extra, cols))
        return load_catalog(path)

    assert load("flag_column: qflags").table("M").flag_name == "qflags"
    with pytest.raises(CatalogError, match=r"key 'flag_column': column 'flags' is written by the partitioner"):
        load("flag_column: flags", ", {name: flags, datatype: int}")
    with pytest.raises(CatalogError, match=r"column 'partitioningFlags' is written by the partitioner"):
        load("", ", {name: partitioningFlags, datatype: int}")
    with pytest.raises(CatalogError, match=r"table 'D'.*key 'flag_column': not allowed for a director"):
        load("", text=base.replace("columns: [{name: id", "flag_column: f, columns: [{name: id", 1))
