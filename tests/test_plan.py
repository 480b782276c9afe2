"""Planner rules on their own: spatial restriction, director-id restriction, table resolution."""
from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from czar.dialects import parse
from czar.metadata import Metadata
from czar.planner.index import id_restriction
from czar.planner.spatial import spatial_restriction
from partitioner.ingest import IngestOptions, ingest
from qengine.errors import QueryError
from qengine.geometry import Box, Circle, Ellipse, Polygon
from tests.helpers import FILTER, PART


def _regions(sql, lang="adql", alias=None):
    tree = parse(sql, lang)
    res = spatial_restriction(tree, "ra", "decl", {"object", "o"} if alias else {"object"}, alias=alias)
    return res


@pytest.mark.parametrize("sql,lang,region", [
    ("SELECT * FROM Object WHERE CONTAINS(POINT('ICRS', ra, decl), CIRCLE('ICRS', 10, 20, 0.5)) = 1", "adql",
     Circle(10, 20, 0.5)),
    ("SELECT * FROM Object WHERE 1 = CONTAINS(POINT('ICRS', ra, decl), CIRCLE('ICRS', 10, 20, 1/60.))", "adql",
     Circle(10, 20, 1 / 60.)),
    ("SELECT * FROM Object WHERE DISTANCE(POINT('ICRS', ra, decl), POINT('ICRS', 10, -20)) < 0.1", "adql",
     Circle(10, -20, 0.1)),
    ("SELECT * FROM Object WHERE 0.1 >= DISTANCE(POINT('ICRS', 10, -20), POINT('ICRS', ra, decl))", "adql",
     Circle(10, -20, 0.1)),
    ("SELECT * FROM Object WHERE CONTAINS(POINT('ICRS', ra, decl), POLYGON('ICRS', 1, 1, 2, 1, 2, 2)) = 1", "adql",
     Polygon([(1, 1), (2, 1), (2, 2)])),
    ("SELECT * FROM Object WHERE qserv_areaspec_box(350, -5, 10, 5)", "qserv", Box.from_qserv(350, -5, 10, 5)),
    ("SELECT * FROM Object WHERE 1 = QSERV_AREASPEC_CIRCLE(1, 2, 3)", "qserv", Circle(1, 2, 3)),
    ("SELECT * FROM Object WHERE qserv_areaspec_ellipse(1, 2, 30, 20, 45)", "qserv", Ellipse(1, 2, 30, 20, 45)),
    ("SELECT * FROM Object WHERE scisql_s2PtInCircle(ra, decl, 1, 2, 3) = 1 AND mag < 3", "qserv", Circle(1, 2, 3)),
])
def test_spatial_restriction_recognises_each_form(sql, lang, region):
    res = _regions(sql, lang)
    assert res.regions == [region]


def test_areaspec_is_rewritten_to_a_scisql_predicate_on_the_alias():
    res = _regions("SELECT o.ra FROM Object o WHERE qserv_areaspec_box(1, 2, 3, 4) AND o.mag < 20", "qserv", alias="o")
    sql = res.select.sql().lower()
    assert "scisql_s2ptinbox(o.ra, o.decl, 1, 2, 3, 4) = 1" in sql and "areaspec" not in sql


@pytest.mark.parametrize("sql", [
    "SELECT * FROM Object WHERE CONTAINS(POINT('ICRS', ra, decl), CIRCLE('ICRS', 10, 20, 0.5)) = 1 OR mag < 3",
    "SELECT * FROM Object WHERE CONTAINS(POINT('ICRS', mag, decl), CIRCLE('ICRS', 10, 20, 0.5)) = 1",
    "SELECT * FROM Object WHERE CONTAINS(POINT('ICRS', ra, decl), CIRCLE('ICRS', mag, 20, 0.5)) = 1",
    "SELECT * FROM Object WHERE CONTAINS(POINT('ICRS', ra, decl), CIRCLE('ICRS', 10, 20, 0.5)) = 0",
    "SELECT * FROM Object WHERE DISTANCE(POINT('ICRS', ra, decl), POINT('ICRS', 10, -20)) > 0.1",
])
def test_conditions_that_must_not_restrict(sql):
    assert _regions(sql).regions == []


def test_areaspec_under_or_is_refused():
    with pytest.raises(QueryError, match="top-level condition"):
        _regions("SELECT * FROM Object WHERE qserv_areaspec_box(1, 2, 3, 4) OR mag < 2", "qserv")


@pytest.mark.parametrize("cond,ids,rng", [
    ("objectId = 1250000369002135001", [1250000369002135001], None),
    ("1250000369002135001 = objectId", [1250000369002135001], None),
    ("objectId IN (5, 3, 5, -2)", [-2, 3, 5], None),
    ("objectId BETWEEN 10 AND 20 AND mag < 3", None, (10, 20)),
    ("o.objectId = 7", [7], None),
])
def test_id_restriction_forms_and_exact_64_bit_ids(cond, ids, rng):
    tree = parse(f"SELECT * FROM Object o WHERE {cond}", "adql")
    r = id_restriction(tree, "objectId", {"o", "object"})
    assert r is not None and r.ids == ids and r.range == rng


@pytest.mark.parametrize("cond", ["objectId > 5", "objectId = 5 OR mag < 2", "mag = 5", "objectId = 1.5"])
def test_no_id_restriction(cond):
    assert id_restriction(parse(f"SELECT * FROM Object WHERE {cond}"), "objectId", {"object"}) is None


def test_table_resolution_default_database_and_ambiguity(tmp_path):
    root = tmp_path / "store"
    p = tmp_path / "f.parquet"
    pq.write_table(pa.table({"filterId": pa.array([1], pa.int32()), "name": ["u"]}), p)
    for db in ("dr1", "dr2"):
        ingest(root, db, FILTER, [p], partitioning=PART, options=IngestOptions(progress=False))
    m = Metadata(root)
    assert m.resolve("dr1", "filter").database == "dr1"
    assert m.resolve(None, "Filter", default_db="dr2").database == "dr2"
    with pytest.raises(QueryError, match="ambiguous.*dr1.Filter, dr2.Filter"):
        m.resolve(None, "Filter")
    with pytest.raises(QueryError, match="did you mean dr1.Filter"):
        m.resolve("dr1", "Filtr")


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    from tests.helpers import build_store

    root = tmp_path_factory.mktemp("plan") / "root"
    build_store(root, n_objects=300)
    return Metadata(root)


@pytest.mark.parametrize("sql,hints", [
    # only the columns a query reads are asked of the workers (chunkId/subChunkId come anyway)
    ("SELECT objectId FROM testdb.Object WHERE CONTAINS(POINT('ICRS', ra, decl), CIRCLE('ICRS', 1, 2, 0.1)) = 1",
     {"Object": "decl,objectId,ra"}),
    ("SELECT o.objectId, s.flux FROM testdb.Object o JOIN testdb.Source s USING (objectId) WHERE o.mag > 3",
     {"Object": "mag,objectId", "Source": "flux,objectId"}),
    ("SELECT COUNT(*) AS n FROM testdb.Object WHERE mag > 3 ORDER BY n", {"Object": "mag"}),
    ("SELECT * FROM testdb.Object WHERE mag > 3", {"Object": None}),
    ("SELECT s.*, o.mag FROM testdb.Object o JOIN testdb.Source s ON o.objectId = s.objectId",
     {"Object": "mag,objectId", "Source": None}),
])
def test_workers_are_told_the_columns_a_query_reads(small_store, sql, hints):
    from czar.plan import plan_query

    plan = plan_query(sql, small_store)
    got = {info.name: (ph.split("|")[1].rstrip("}") if "|" in ph else None)
           for ph, info in plan.table_placeholders.items()}
    assert got == hints
    for ph in plan.table_placeholders:
        assert ph in plan.worker_sql
