"""The science query suite at the small scale: every query runs through a real cluster and
equals one DuckDB over the unpartitioned inputs (the suite's smoke test, issue 9)."""
from __future__ import annotations

import pytest

from benchmarks.suite import build, compare, load_queries, oracle_connection, run_oracle
from czar.local import LocalCluster

QUERIES = load_queries()


def test_the_suite_covers_every_category_and_both_dialects():
    cats = {q.category for q in QUERIES}
    assert len(QUERIES) >= 20 and len({q.id for q in QUERIES}) == len(QUERIES)
    assert {"object by id", "cone search", "box search", "light curve", "area time series",
            "full-scan colour cut", "full-scan aggregate", "top-N", "Source scan", "Object-Source join",
            "variability", "near-neighbour", "crossmatch"} <= cats
    assert {q.lang for q in QUERIES} == {"adql", "qserv"}


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    ds = build("small", tmp_path_factory.mktemp("suite"))
    with LocalCluster(ds.root, workers=2) as qe:
        yield ds, qe, oracle_connection(ds)


@pytest.mark.parametrize("q", QUERIES, ids=[q.id for q in QUERIES])
def test_query_equals_single_duckdb(suite, q):
    ds, qe, con = suite
    sql, _ = q.render(ds.params)
    got = qe.query(sql, lang=q.lang, uploads={n: ds.uploads[n] for n in q.uploads} or None)
    want = run_oracle(con, q, ds.params)
    problem = compare(got, want, q.ordered)
    assert problem is None, f"{q.id} ({q.path.name}): {problem}"
