"""The planner's cheaper paths (issue #5) give what the general ones give.

Planning a cone search copies and walks its tree as little as it can: plan_query takes the parsed
tree over (spatial_restriction(copy=False), split(copy=False)), the walks are shared
(``nodes=``), to_duckdb skips normalisation of an already normal tree (``normalized=True``),
and a merge that only renames is written as SQL only when asked for. Each is checked here
against the path it replaces: same SQL, same regions, same errors. No timings: speed is
measured by benchmarks/czar_bench.py.
"""
from __future__ import annotations

import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings

from czar.dialects import parse, to_duckdb
from czar.plan import _Ref, plan_query
from czar.planner.aggregate import split
from czar.planner.spatial import spatial_restriction
from qengine.errors import QueryError
from tests.test_aggregate import agg_queries, plain_queries

CONE = "CONTAINS(POINT('ICRS', ra, decl), CIRCLE('ICRS', 1, 2, 0.1)) = 1"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    from czar.metadata import Metadata
    from tests.helpers import build_store

    root = tmp_path_factory.mktemp("speed") / "root"
    build_store(root, n_objects=300)
    return Metadata(root)


def _split_sql(sp):
    return (sp.worker.sql("duckdb"), sp.merge.sql("duckdb"), sp.worker_limit, sp.merge_needs_all, sp.rename,
            sp.limit, sp.offset)


def _split_or_error(sql: str, copy: bool):
    try:
        return _split_sql(split(sqlglot.parse_one(sql, read="duckdb"), source=sql, copy=copy))
    except QueryError as exc:
        return str(exc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=plain_queries())
def test_split_taking_the_tree_over_writes_the_same_plain_queries(query):
    sql = query[0] if isinstance(query, tuple) else query
    assert _split_or_error(sql, copy=False) == _split_or_error(sql, copy=True)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(query=agg_queries())
def test_split_taking_the_tree_over_writes_the_same_aggregates(query):
    sql = query[0] if isinstance(query, tuple) else query
    assert _split_or_error(sql, copy=False) == _split_or_error(sql, copy=True)


@pytest.mark.parametrize("sql", [
    "SELECT (SELECT 1) AS s, x FROM t",                      # an item with an alias arg of its own
    "SELECT x AS a, y FROM t ORDER BY a + y LIMIT 3",        # a hidden ORDER BY term over an alias
    "SELECT DISTINCT x FROM t ORDER BY x DESC LIMIT 2 OFFSET 1",
    "SELECT * FROM t WHERE x > 1 LIMIT 4",
])
def test_split_taking_the_tree_over_edge_cases(sql):
    assert _split_or_error(sql, copy=False) == _split_or_error(sql, copy=True)


@pytest.mark.parametrize("sql,lang", [
    (f"SELECT objectId FROM Object WHERE {CONE} AND mag > 3", "adql"),
    ("SELECT objectId FROM Object WHERE qserv_areaspec_box(1, 2, 3, 4) AND mag > 3", "qserv"),
    ("SELECT objectId FROM Object WHERE mag > 3 OR qserv_areaspec_box(1, 2, 3, 4)", "qserv"),
    ("SELECT objectId FROM Object WHERE mag > 3", "adql"),
])
def test_spatial_restriction_in_place_matches_the_copying_rule(sql, lang):
    def run(copy: bool, with_nodes: bool):
        tree = parse(sql, lang)
        try:
            res = spatial_restriction(tree, "ra", "decl", {"object"}, copy=copy,
                                      nodes=list(tree.walk()) if with_nodes else None)
        except QueryError as exc:
            return str(exc)
        return res.select.sql(), res.regions

    want = run(copy=True, with_nodes=False)
    assert run(copy=False, with_nodes=True) == want
    assert run(copy=False, with_nodes=False) == want


def test_spatial_restriction_copying_leaves_its_input_alone():
    tree = parse(f"SELECT objectId FROM Object WHERE {CONE} AND mag > 3")
    before = tree.sql()
    spatial_restriction(tree, "ra", "decl", {"object"})
    assert tree.sql() == before


@pytest.mark.parametrize("sql", [
    f"SELECT objectId, DISTANCE(POINT('ICRS', ra, decl), POINT('ICRS', 1, 2)) FROM Object WHERE {CONE}",
    "SELECT AREA(CIRCLE('ICRS', 1, 2, 3)), COORD1(POINT('ICRS', ra, decl)) FROM Object",
    "SELECT CONTAINS(POINT('ICRS', ra, decl), BOX('ICRS', 1, 2, 3, 4)) AS c FROM Object",
    "SELECT objectId FROM Object WHERE INTERSECTS(CIRCLE('ICRS', ra, decl, 1), CIRCLE('ICRS', 1, 2, 3)) = 1",
])
def test_to_duckdb_of_a_normal_tree_skips_nothing_that_matters(sql):
    want = to_duckdb(parse(sql))
    assert to_duckdb(parse(sql), copy=False, normalized=True) == want


@pytest.mark.parametrize("sql", [
    "SELECT POINT('ICRS', ra, decl) FROM Object",
    "SELECT objectId FROM Object WHERE CIRCLE('ICRS', 1, 2, 3) = 1",
])
def test_to_duckdb_still_refuses_geometry_left_over(sql):
    with pytest.raises(QueryError) as a:
        to_duckdb(parse(sql))
    with pytest.raises(QueryError) as b:
        to_duckdb(parse(sql), copy=False, normalized=True)
    assert str(a.value) == str(b.value)


@pytest.mark.parametrize("sql", [
    f"SELECT objectId, ra FROM testdb.Object WHERE {CONE}",                    # merge only renames
    f"SELECT objectId FROM testdb.Object WHERE {CONE} ORDER BY mag LIMIT 3",   # a real merge
    "SELECT COUNT(*) AS n, AVG(mag) FROM testdb.Object",
])
def test_merge_sql_is_the_translation_of_the_merge_tree(store, sql):
    plan = plan_query(sql, store)
    assert isinstance(plan.merge, str) == (plan.merge_rename is None)  # renames: written on demand
    text = plan.merge_sql
    assert isinstance(text, str) and text == plan.merge_sql and "__parts" in text


def test_plan_reads_the_select_list_as_written_for_metadata(store):
    # unit/UCD come from the select list as the user wrote it, before the rules rewrite it
    plan = plan_query(f"SELECT o.ra AS r, decl, o.mag, * FROM testdb.Object AS o WHERE "
                      "CONTAINS(POINT('ICRS', o.ra, o.decl), CIRCLE('ICRS', 1, 2, 0.1)) = 1", store)
    assert plan.column_meta["r"]["name"] == "ra" and plan.column_meta["decl"]["name"] == "decl"
    assert {"objectId", "ra", "decl", "mag", "name"} <= set(plan.column_meta)


def test_column_lookup_per_occurrence_is_the_tables(store):
    info = store.resolve("testdb", "Object", None)
    ref = _Ref(None, info, "o", {"o"})
    for name in ["objectId", "OBJECTID", "ra", "nosuch", "chunkId"]:
        assert ref.column(name) == info.column(name)


def test_plan_query_takes_a_parsed_tree_over(store):
    sql = f"SELECT objectId, ra FROM testdb.Object WHERE {CONE} AND mag > 3"
    assert plan_query(sql, store, tree=parse(sql)).worker_sql == plan_query(sql, store).worker_sql
