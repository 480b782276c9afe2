"""Loading a Qserv data set's description (MySQL schema + sph-partition JSON) as qengine tables.

The fixtures follow the shape of Qserv's own files: lsst/qserv itest_src/datasets/case01
(mysqldump schemas, ``partition/common.json`` with dirDb/dirTable/default-overlap,
``Source.json`` with id/part.id/part.pos/dirColName) and DP0.2-style column names.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from partitioner.qserv_config import (
    QservTableConfig,
    load_partition_configs,
    load_qserv_table,
    parse_mysql_schema,
)
from qengine.catalog import Catalog, Partitioning, validate_catalog
from qengine.errors import CatalogError

# --------------------------------------------------------------------------------------------
# fixtures (inline, written to tmp_path)

OBJECT_SCHEMA = """\
-- MySQL dump 10.13  Distrib 5.7.33, for Linux (x86_64)
--
-- Host: localhost    Database: dp02_dc2_catalogs
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40101 SET NAMES utf8 */;

--
-- Table structure for table `Object`
--

DROP TABLE IF EXISTS `Object`;
/*!40101 SET @saved_cs_client     = @@character_set_client */;
CREATE TABLE `Object` (
  `objectId` bigint(20) NOT NULL COMMENT 'Unique id. Unique ObjectID',
  `coord_ra` double NOT NULL COMMENT 'Fiducial ICRS Right Ascension of centroid',
  `coord_dec` double NOT NULL COMMENT 'Fiducial ICRS Declination of centroid',
  `detect_isPrimary` tinyint(1) DEFAULT NULL COMMENT 'True if source has no children',
  `refBand` char(1) DEFAULT NULL COMMENT 'Reference band',
  `skymap` varchar(64) DEFAULT NULL,
  `tract` bigint(20) DEFAULT NULL COMMENT 'Skymap tract ID',
  `patch` bigint(20) DEFAULT NULL,
  `g_psfFlux` double DEFAULT NULL COMMENT 'PSF flux, forced on g-band.',
  `g_psfFluxErr` float DEFAULT NULL,
  `g_extendedness` float DEFAULT NULL,
  `g_psfFlux_flag` tinyint(1) DEFAULT NULL,
  `chunkId` int(11) NOT NULL,
  `subChunkId` int(11) NOT NULL,
  PRIMARY KEY (`objectId`),
  KEY `IDX_coord_dec` (`coord_dec`)
) ENGINE=MyISAM DEFAULT CHARSET=latin1 COMMENT='Object table (DP0.2-like)';
/*!40101 SET character_set_client = @saved_cs_client */;

-- Dump completed on 2022-06-01 10:31:56
"""

COMMON_JSON = """\
{
    // database-wide settings shared by every table (qserv itest common.json shape)
    "htm": {"level": 8},
    "dirDb": "dp02",
    "dirTable": "Object",
    "part": {
        "num-stripes": 340,
        "num-sub-stripes": 3,
        "chunk": "chunkId",
        "sub-chunk": "subChunkId",
        "default-overlap": 0.01667,
    },
    "in": {"csv": {"null": "\\\\N", "delimiter": ",", "escape": "\\\\", "no-quote": true}},
    "out": {"csv": {"null": "\\\\N", "delimiter": "\\t", "escape": "\\\\", "no-quote": true}},
    "mr": {"num-workers": 8, "block-size": 16},
}
"""

OBJECT_FIELDS = ["objectId", "coord_ra", "coord_dec", "detect_isPrimary", "refBand", "skymap",
                 "tract", "patch", "g_psfFlux", "g_psfFluxErr", "g_extendedness",
                 "g_psfFlux_flag"]
OBJECT_JSON = json.dumps({
    "id": "objectId",
    "part": {"pos": "coord_ra, coord_dec", "overlap": 0.01667},
    "in": {"csv": {"field": OBJECT_FIELDS}},
}, indent=2)

SOURCE_SCHEMA = """\
DROP TABLE IF EXISTS `Source`;
CREATE TABLE `Source` (
  `sourceId` bigint(20) NOT NULL COMMENT 'Unique id.',
  `objectId` bigint(20) DEFAULT NULL COMMENT 'Id of the object this source belongs to',
  `ra` double NOT NULL,
  `decl` double NOT NULL,
  `raObject` double DEFAULT NULL COMMENT 'RA of the associated object',
  `declObject` double DEFAULT NULL,
  `psfFlux` double DEFAULT NULL,
  `band` char(1) NOT NULL,
  `chunkId` int(11) NOT NULL,
  `subChunkId` int(11) NOT NULL,
  PRIMARY KEY (`sourceId`),
  KEY `IDX_objectId` (`objectId`)
) ENGINE=MyISAM DEFAULT CHARSET=latin1;
"""

SOURCE_JSON = """\
{
"id": "sourceId",
"pos": ["ra, decl"],
"part": {"id": "objectId", "pos": "raObject, declObject", "overlap": 0.0, "subChunks": 0},
"sharedScan": {"lockInMem": 1, "scanRating": 25},
"dirTable": "Object",
"dirColName": "objectId",
"in": {"csv": {"field": ["sourceId", "objectId", "ra", "decl", "raObject", "declObject",
                         "psfFlux", "band"]}}
}
"""

FILTER_SCHEMA = """\
-- MySQL dump 10.13  Distrib 5.1.61, for redhat-linux-gnu (x86_64)
/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */;
/*!40103 SET TIME_ZONE='+00:00' */;

--
-- Table structure for table `Filter`
--

DROP TABLE IF EXISTS `Filter`;
/*!40101 SET character_set_client = utf8 */;
CREATE TABLE `Filter` (
  `filterId` tinyint(4) NOT NULL,
  `filterName` char(3) NOT NULL,
  `photClam` float NOT NULL,
  `photBW` float NOT NULL
) ENGINE=MyISAM DEFAULT CHARSET=latin1;
/*!40101 SET character_set_client = @saved_cs_client */;

-- Dump completed on 2012-03-28 10:31:56
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> dict[str, Path]:
    return {
        "Object.schema": write(tmp_path, "schema/Object.schema", OBJECT_SCHEMA),
        "Source.schema": write(tmp_path, "schema/Source.schema", SOURCE_SCHEMA),
        "Filter.schema": write(tmp_path, "schema/Filter.schema", FILTER_SCHEMA),
        "common.json": write(tmp_path, "partition/common.json", COMMON_JSON),
        "Object.json": write(tmp_path, "partition/Object.json", OBJECT_JSON),
        "Source.json": write(tmp_path, "partition/Source.json", SOURCE_JSON),
    }


def load_object(ds: dict[str, Path]) -> QservTableConfig:
    return load_qserv_table("dp02", "Object", ds["Object.schema"],
                            [ds["common.json"], ds["Object.json"]])


def load_source(ds: dict[str, Path]) -> QservTableConfig:
    return load_qserv_table("dp02", "Source", ds["Source.schema"],
                            [ds["common.json"], ds["Source.json"]])


def load_filter(ds: dict[str, Path]) -> QservTableConfig:
    return load_qserv_table("dp02", "Filter", ds["Filter.schema"], [ds["common.json"]],
                            replicated=True)


# --------------------------------------------------------------------------------------------
# a whole data set


def test_director_object(dataset):
    cfg = load_object(dataset)
    assert cfg.role == "director"
    assert (cfg.database, cfg.table) == ("dp02", "Object")
    assert cfg.id_column == "objectId"
    assert (cfg.ra_column, cfg.dec_column) == ("coord_ra", "coord_dec")
    assert cfg.director is None and cfg.foreign_key is None and cfg.child_pos is None
    assert cfg.partitioning == Partitioning(num_stripes=340, num_sub_stripes=3, overlap=0.01667)
    assert cfg.table_overlap == 0.01667
    # chunkId/subChunkId are Qserv's own: dropped, qengine adds its own
    assert [c.name for c in cfg.columns] == OBJECT_FIELDS
    assert cfg.csv_fields == tuple(OBJECT_FIELDS)
    assert (cfg.csv_null, cfg.csv_delimiter, cfg.csv_escape, cfg.csv_quote) == (
        "\\N", ",", "\\", None)
    assert cfg.description == "Object table (DP0.2-like)"
    cols = {c.name: c for c in cfg.columns}
    assert cols["objectId"].datatype == "long" and not cols["objectId"].nullable
    assert cols["objectId"].indexed and cols["coord_dec"].indexed and not cols["tract"].indexed
    assert cols["objectId"].description == "Unique id. Unique ObjectID"
    assert cols["detect_isPrimary"].datatype == "boolean" and cols["detect_isPrimary"].nullable
    assert (cols["refBand"].datatype, cols["refBand"].arraysize) == ("char", "1")
    assert (cols["skymap"].datatype, cols["skymap"].arraysize) == ("string", "64*")
    assert cols["g_psfFluxErr"].datatype == "float" and cols["g_psfFlux"].datatype == "double"

    table = cfg.to_table()
    assert (table.name, table.role, table.id_column) == ("Object", "director", "objectId")
    assert (table.ra_column, table.dec_column) == ("coord_ra", "coord_dec")
    assert table.columns == cfg.columns


def test_child_source(dataset):
    cfg = load_source(dataset)
    assert cfg.role == "child"
    assert (cfg.director, cfg.foreign_key) == ("Object", "objectId")
    assert cfg.child_pos == ("raObject", "declObject")   # director position carried per row
    assert (cfg.ra_column, cfg.dec_column) == ("ra", "decl")  # its own position: data only
    assert cfg.id_column == "sourceId"
    assert cfg.director_database is None  # dirDb == database
    # a child's partitioning is the database's; its own part.overlap (0) is kept aside
    assert cfg.partitioning == Partitioning(340, 3, 0.01667)
    assert cfg.table_overlap == 0.0
    assert "chunkId" not in [c.name for c in cfg.columns]
    table = cfg.to_table()
    assert (table.role, table.director, table.foreign_key) == ("child", "Object", "objectId")


def test_replicated_filter(dataset):
    cfg = load_filter(dataset)
    assert cfg.role == "replicated"
    assert cfg.partitioning is None
    assert cfg.id_column is None and cfg.director is None and cfg.ra_column is None
    assert [(c.name, c.datatype, c.arraysize, c.nullable) for c in cfg.columns] == [
        ("filterId", "byte", None, False), ("filterName", "char", "3", False),
        ("photClam", "float", None, False), ("photBW", "float", None, False)]
    # the database's CSV dialect still applies to a replicated table's input files
    assert cfg.csv_delimiter == "," and cfg.csv_quote is None
    assert cfg.to_table().role == "replicated"


def test_tables_form_a_valid_catalog(dataset):
    tables = {c.table: c.to_table()
              for c in (load_object(dataset), load_source(dataset), load_filter(dataset))}
    catalog = Catalog(name="dp02", database="dp02", description=None,
                      partitioning=load_object(dataset).partitioning, tables=tables)
    validate_catalog(catalog)
    assert [t.name for t in catalog.children_of("Object")] == ["Source"]
    assert [t.name for t in catalog.replicated()] == ["Filter"]


def test_schema_found_beside_configs(dataset):
    # qserv itest layout: data/partition/<table>.json and data/schema/<table>.schema
    cfg = load_qserv_table("dp02", "Source", None,
                           [dataset["common.json"], dataset["Source.json"]])
    assert cfg == load_source(dataset)
    with pytest.raises(CatalogError, match=r"no schema file given and none found; tried .*"
                                           r"Nope\.schema"):
        load_qserv_table("dp02", "Nope", None, [dataset["common.json"]])


def test_match_table(tmp_path):
    schema = write(tmp_path, "RefSrcMatch.sql", """
        CREATE TABLE RefSrcMatch (
          refObjectId BIGINT NULL, sourceId BIGINT NULL, angSep DOUBLE NULL,
          ra1 DOUBLE, dec1 DOUBLE, ra2 DOUBLE, dec2 DOUBLE);""")
    conf = write(tmp_path, "RefSrcMatch.json", json.dumps({
        "part": {"pos1": "ra1, dec1", "pos2": "ra2, dec2", "flags": "partitioningFlags",
                 "num-stripes": 85, "num-sub-stripes": 12, "default-overlap": 0.01667},
        "dirTable1": "RefObject", "dirColName1": "refObjectId",
        "dirTable2": "Source", "dirColName2": "sourceId"}))
    cfg = load_qserv_table("db", "RefSrcMatch", schema, [conf])
    assert cfg.role == "match"
    assert cfg.match_directors == (("RefObject", "refObjectId"), ("Source", "sourceId"))
    assert cfg.match_pos == (("ra1", "dec1"), ("ra2", "dec2"))
    table = cfg.to_table()
    assert (table.role, table.director, table.foreign_key) == ("match", "RefObject",
                                                               "refObjectId")
    assert table.match_directors == cfg.match_directors

    del_key = json.loads(conf.read_text())
    del del_key["part"]["pos2"]
    conf.write_text(json.dumps(del_key))
    with pytest.raises(CatalogError, match=r"key 'part\.pos2': missing"):
        load_qserv_table("db", "RefSrcMatch", schema, [conf])


# --------------------------------------------------------------------------------------------
# merging configs


def test_nested_and_flat_configs_are_equivalent(dataset, tmp_path):
    flat = {
        "dirDb": "dp02", "dirTable": "Object", "id": "objectId",
        "part.num-stripes": 340, "part.num-sub-stripes": 3, "part.default-overlap": 0.01667,
        "part.pos": "coord_ra, coord_dec", "part.overlap": 0.01667,
        "part.chunk": "chunkId", "part.sub-chunk": "subChunkId",
        "in.csv.null": "\\N", "in.csv.delimiter": ",", "in.csv.escape": "\\",
        "in.csv.no-quote": True, "in.csv.field": OBJECT_FIELDS,
    }
    flat_path = write(tmp_path, "flat/Object.json", json.dumps(flat))
    got = load_qserv_table("dp02", "Object", dataset["Object.schema"], [flat_path])
    want = load_object(dataset)
    assert {k: v for k, v in vars(got).items() if k != "sources"} == {
        k: v for k, v in vars(want).items() if k != "sources"}

    merged = load_partition_configs([dataset["common.json"], dataset["Object.json"]])
    assert merged["part.num-stripes"] == 340 and merged["part.pos"] == "coord_ra, coord_dec"
    assert merged["in.csv.field"] == OBJECT_FIELDS
    assert merged["mr.num-workers"] == 8  # mr.* read but unused
    assert "part" not in merged and "in.csv" not in merged
    assert load_partition_configs([flat_path])["part.pos"] == "coord_ra, coord_dec"


def test_later_configs_override_earlier(tmp_path):
    a = write(tmp_path, "a.json", '{"part": {"overlap": 0.001, "num-stripes": 85}, "x": 1}')
    b = write(tmp_path, "b.json", '{"part.overlap": 0.01667, "x": null, "y": {"z": 2}}')
    c = write(tmp_path, "c.json", '{"y": 3}')
    assert load_partition_configs([a, b]) == {
        "part.overlap": 0.01667, "part.num-stripes": 85, "y.z": 2}  # null deletes "x"
    assert load_partition_configs([b, a])["part.overlap"] == 0.001
    assert load_partition_configs([a, b, c])["y"] == 3 and "y.z" not in load_partition_configs(
        [a, b, c])  # a scalar replaces an object (JSON merge patch)
    # Qserv's legacy loader (PartConfig): the first file to set a key wins
    assert load_partition_configs([a, b], first_wins=True) == {
        "part.overlap": 0.001, "part.num-stripes": 85, "x": 1, "y.z": 2}


def test_override_order_reaches_the_table(dataset, tmp_path):
    wide = write(tmp_path, "wide.json", '{"part": {"overlap": 0.05}}')
    order1 = [dataset["common.json"], dataset["Object.json"], wide]
    order2 = [dataset["common.json"], wide, dataset["Object.json"]]
    s, o = dataset["Object.schema"], "Object"
    assert load_qserv_table("dp02", o, s, order1).partitioning.overlap == 0.05
    assert load_qserv_table("dp02", o, s, order2).partitioning.overlap == 0.01667
    assert load_qserv_table("dp02", o, s, order1, first_wins=True).partitioning.overlap == 0.01667


def test_lenient_json(tmp_path):
    path = write(tmp_path, "old.json", """\
        # an old sph-partition config
        {
            "part": {
                "pos": "ra, decl",   // the director position
                /* block
                   comment */
                "num-stripes": 85,
            },
            "in.csv.null": "//not a comment#",
            "in.csv.field": ["a", "b",],
        }""")
    assert load_partition_configs([path]) == {
        "part.pos": "ra, decl", "part.num-stripes": 85, "in.csv.null": "//not a comment#",
        "in.csv.field": ["a", "b"]}


def test_csv_dialect_defaults_follow_sph_partition(tmp_path):
    schema = write(tmp_path, "T.sql", "CREATE TABLE T (id BIGINT NOT NULL, ra DOUBLE, "
                                      "dec DOUBLE);")
    base = {"part": {"pos": "ra, dec", "num-stripes": 85, "num-sub-stripes": 12,
                     "overlap": 0.01}, "id": "id"}
    conf = write(tmp_path, "T.json", json.dumps(base))
    cfg = load_qserv_table("db", "T", schema, [conf])
    assert (cfg.csv_delimiter, cfg.csv_quote, cfg.csv_escape, cfg.csv_null) == (
        "\t", '"', "\\", "NULL")  # quoting on: NULL is spelled NULL
    assert cfg.csv_fields is None
    base["in"] = {"csv": {"no-quote": True}}
    conf.write_text(json.dumps(base))
    cfg = load_qserv_table("db", "T", schema, [conf])
    assert (cfg.csv_quote, cfg.csv_null) == (None, "\\N")  # escape + N
    base["in"] = {"csv": {"no-quote": True, "no-escape": True}}
    conf.write_text(json.dumps(base))
    assert load_qserv_table("db", "T", schema, [conf]).csv_null == ""


def test_column_references_resolve_case_insensitively(tmp_path):
    schema = write(tmp_path, "T.sql", "CREATE TABLE T (objectID BIGINT NOT NULL, RA DOUBLE, "
                                      "Decl DOUBLE);")
    conf = write(tmp_path, "T.json", json.dumps({
        "part": {"pos": "ra, decl", "id": "objectid", "num-stripes": 85,
                 "num-sub-stripes": 12, "overlap": 0.01}}))
    cfg = load_qserv_table("db", "T", schema, [conf])
    assert (cfg.id_column, cfg.ra_column, cfg.dec_column) == ("objectID", "RA", "Decl")


def test_css_style_keys(tmp_path):
    # CSS names: dirColName for the id, lonColName/latColName for the position
    schema = write(tmp_path, "T.sql", "CREATE TABLE T (oid BIGINT, lon DOUBLE, lat DOUBLE);")
    conf = write(tmp_path, "T.json", json.dumps({
        "dirTable": "T", "dirColName": "oid", "lonColName": "lon", "latColName": "lat",
        "part": {"num-stripes": 85, "num-sub-stripes": 12, "default-overlap": 0.01}}))
    cfg = load_qserv_table("db", "T", schema, [conf])
    assert (cfg.role, cfg.id_column, cfg.ra_column, cfg.dec_column) == (
        "director", "oid", "lon", "lat")
    assert cfg.partitioning.overlap == 0.01 and cfg.table_overlap is None


# --------------------------------------------------------------------------------------------
# MySQL type mapping

TYPES = [
    # (MySQL type, felis datatype, arraysize)
    ("BIGINT", "long", None), ("BIGINT(20)", "long", None), ("BIGINT UNSIGNED", "long", None),
    ("INT", "int", None), ("INT(11)", "int", None), ("INTEGER", "int", None),
    ("INT UNSIGNED", "long", None), ("MEDIUMINT", "int", None), ("SMALLINT", "short", None),
    ("SMALLINT(6)", "short", None), ("SMALLINT UNSIGNED", "int", None),
    ("TINYINT", "byte", None), ("TINYINT(4)", "byte", None), ("TINYINT UNSIGNED", "short", None),
    ("TINYINT(1)", "boolean", None), ("BOOL", "boolean", None), ("BOOLEAN", "boolean", None),
    ("BIT(1)", "boolean", None), ("BIT", "boolean", None),
    ("FLOAT", "float", None), ("FLOAT(7,3)", "float", None), ("FLOAT(24)", "float", None),
    ("FLOAT(53)", "double", None), ("FLOAT UNSIGNED", "float", None),
    ("REAL", "double", None), ("DOUBLE", "double", None), ("DOUBLE PRECISION", "double", None),
    ("DOUBLE(10,2)", "double", None), ("DOUBLE UNSIGNED", "double", None),
    ("DECIMAL(10,2)", "double", None), ("NUMERIC", "double", None),
    ("CHAR(34)", "char", "34"), ("CHAR", "char", "1"), ("VARCHAR(64)", "string", "64*"),
    ("TEXT", "string", None), ("LONGTEXT", "string", None), ("BINARY(16)", "string", "16"),
    ("VARBINARY(100)", "string", "100*"), ("BLOB", "string", None),
    ("MEDIUMBLOB", "string", None), ("ENUM('a','b')", "string", None),
    ("DATETIME", "timestamp", None), ("DATETIME(6)", "timestamp", None),
    ("TIMESTAMP", "timestamp", None), ("DATE", "timestamp", None), ("YEAR", "short", None),
]


@pytest.mark.parametrize("mysql_type, datatype, arraysize", TYPES)
def test_type_mapping(mysql_type, datatype, arraysize):
    name, cols = parse_mysql_schema(
        f"CREATE TABLE `T` (`c` {mysql_type} NOT NULL COMMENT 'the c', d INT);", "T.sql")
    assert name == "T"
    c = cols[0]
    assert (c.name, c.datatype, c.arraysize) == ("c", datatype, arraysize)
    assert c.nullable is False and c.description == "the c"
    assert cols[1].nullable is True and cols[1].description is None


def test_schema_details():
    text = """
        CREATE TABLE IF NOT EXISTS db.`T` (
          a BIGINT PRIMARY KEY,        -- inline primary key: not null, indexed
          b INT NULL,
          c VARCHAR(10) CHARACTER SET latin1 COLLATE latin1_bin DEFAULT 'x;y',
          `chunkId` INT NOT NULL, `SUBCHUNKID` INT NOT NULL,
          UNIQUE KEY uq (b),
          KEY (c(4)) USING BTREE
        ) ENGINE=InnoDB;
        CREATE TABLE Other (z INT);
    """
    name, cols = parse_mysql_schema(text, "x.sql", table="t")
    assert name == "T"
    assert [(c.name, c.nullable, c.indexed) for c in cols] == [
        ("a", False, True), ("b", True, True), ("c", True, True)]
    assert parse_mysql_schema(text, "x.sql", table="Other")[1][0].name == "z"
    with pytest.raises(CatalogError, match=r"x\.sql: 2 CREATE TABLE statements"):
        parse_mysql_schema(text, "x.sql")
    assert [c.name for c in parse_mysql_schema(text, table="T", drop=())[1]] == [
        "a", "b", "c", "chunkId", "SUBCHUNKID"]


# --------------------------------------------------------------------------------------------
# errors name the file, the table and the key or column at fault


@pytest.mark.parametrize("bad_type, shown", [
    ("GEOMETRY", "GEOMETRY"), ("TIME", "TIME"), ("BIT(8)", "BIT(8)"), ("FOOBAR", "FOOBAR")])
def test_unsupported_type(tmp_path, bad_type, shown):
    schema = write(tmp_path, "Bad.schema",
                   f"CREATE TABLE Bad (\n  id BIGINT,\n  `when` {bad_type} NOT NULL\n);")
    conf = write(tmp_path, "Bad.json", "{}")
    with pytest.raises(CatalogError) as info:
        load_qserv_table("db", "Bad", schema, [conf], replicated=True)
    msg = str(info.value)
    assert "Bad.schema:3" in msg and "column 'when'" in msg
    assert f"unsupported MySQL type {shown}" in msg


def test_malformed_sql(tmp_path):
    schema = write(tmp_path, "Broken.schema",
                   "DROP TABLE IF EXISTS Broken;\nCREATE TABLE Broken (\n  id BIGINT,\n"
                   "  ra DOUBLE,\n  dec DOUBLE\n")  # no closing parenthesis
    with pytest.raises(CatalogError, match=r"Broken\.schema:\d+:\d+: malformed CREATE TABLE"):
        load_qserv_table("db", "Broken", schema, [], replicated=True)
    write(tmp_path, "Empty.schema", "-- nothing here\nDROP TABLE IF EXISTS x;\n")
    with pytest.raises(CatalogError, match=r"Empty\.schema: no CREATE TABLE statement"):
        load_qserv_table("db", "Empty", tmp_path / "Empty.schema", [], replicated=True)
    with pytest.raises(CatalogError, match=r"Missing\.schema: schema file not found"):
        load_qserv_table("db", "Missing", tmp_path / "Missing.schema", [], replicated=True)


def test_malformed_json_names_the_file(dataset, tmp_path):
    bad = write(tmp_path, "partition/Object.json", '{\n  "part": {\n    "pos": "ra, dec"\n'
                                                   '    "overlap": 0.01\n  }\n}\n')
    with pytest.raises(CatalogError, match=r"Object\.json:4:\d+: invalid JSON"):
        load_qserv_table("dp02", "Object", dataset["Object.schema"],
                         [dataset["common.json"], bad])
    arr = write(tmp_path, "list.json", "[1, 2]")
    with pytest.raises(CatalogError, match=r"list\.json: a partition config must be a JSON "
                                           r"object"):
        load_partition_configs([arr])
    with pytest.raises(CatalogError, match=r"nope\.json: partition config file not found"):
        load_partition_configs([tmp_path / "nope.json"])


def test_missing_part_pos_for_director(dataset, tmp_path):
    conf = write(tmp_path, "partition/Object.json", '{"id": "objectId"}')
    with pytest.raises(CatalogError) as info:
        load_qserv_table("dp02", "Object", dataset["Object.schema"],
                         [dataset["common.json"], conf])
    msg = str(info.value)
    assert "common.json" in msg and "Object.json" in msg
    assert "table dp02.Object" in msg and "key 'part.pos': missing" in msg
    assert "replicated=True" in msg


@pytest.mark.parametrize("change, pattern", [
    # missing chunker parameters
    ({"part": {"num-stripes": None}}, r"key 'part\.num-stripes': missing"),
    # a director needs an overlap (neither part.overlap nor part.default-overlap)
    ({"part": {"overlap": None, "default-overlap": None}}, r"key 'part\.overlap': missing"),
    # the director id is required and must be an integer column
    ({"id": None}, r"key 'id': missing"),
    ({"id": "refBand"}, r"Object\.json: table dp02\.Object: key 'id': column 'refBand' must be"
                        r" an integer"),
    # columns named in the config must exist; suggestions offered
    ({"part": {"pos": "coord_ra, coord_decl"}},
     r"key 'part\.pos': column 'coord_decl' not in the schema .*did you mean 'coord_dec'"),
    ({"part": {"pos": "coord_ra"}}, r"key 'part\.pos': must name two columns"),
    ({"part": {"pos": "coord_ra, refBand"}}, r"column 'refBand' must be float or double"),
    # values of the wrong kind name the file that set them
    ({"part": {"num-stripes": "many"}}, r"Object\.json: .*key 'part\.num-stripes': must be an"
                                        r" integer"),
    ({"part": {"overlap": 2.0}}, r"key 'part\.overlap': overlap 2\.0 deg exceeds the "
                                 r"sub-stripe height"),
    ({"in": {"csv": {"delimiter": "\\t"}}}, r"key 'in\.csv\.delimiter': must be a single "
                                            r"character"),
    ({"dirColName": "tract"}, r"conflicting director id columns: 'dirColName' = 'tract'"),
])
def test_config_errors(dataset, tmp_path, change, pattern):
    doc = json.loads(OBJECT_JSON)
    doc.setdefault("part", {})
    for key, value in change.items():
        if isinstance(value, dict):
            doc.setdefault(key, {}).update(value)
        else:
            doc[key] = value
    conf = write(tmp_path, "partition/Object.json", json.dumps(doc))
    with pytest.raises(CatalogError, match=pattern):
        load_qserv_table("dp02", "Object", dataset["Object.schema"],
                         [dataset["common.json"], conf])


def test_child_errors(dataset, tmp_path):
    doc = json.loads(SOURCE_JSON)
    del doc["dirColName"]
    del doc["part"]["id"]
    conf = write(tmp_path, "partition/Source.json", json.dumps(doc))
    with pytest.raises(CatalogError, match=r"common\.json, .*Source\.json: table dp02\.Source: "
                                           r"key 'dirColName': missing"):
        load_qserv_table("dp02", "Source", dataset["Source.schema"],
                         [dataset["common.json"], conf])
    doc["dirColName"], doc["part"]["id"] = "objectId", "sourceId"
    conf.write_text(json.dumps(doc))
    with pytest.raises(CatalogError, match=r"conflicting foreign keys to the director"):
        load_qserv_table("dp02", "Source", dataset["Source.schema"],
                         [dataset["common.json"], conf])
