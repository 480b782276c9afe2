"""Fuzzing (issue #11): >= 10,000 generated malformed or hostile ADQL/Qserv strings and HTTP
requests per run against a small real cluster (LocalCluster: worker processes) and the czar's
ASGI app in process. No case may give a 5xx, an exception outside qengine's documented errors,
a refusal without a message, an internal error in a message, or run past its bound; and the
czar must still answer a good query afterwards. The generators live in benchmarks/fuzz.py
(``python -m benchmarks.fuzz --cases N`` runs many more)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from benchmarks.fuzz import (
    GOOD,
    HOSTILE,
    LANGS,
    RandomPicker,
    Summary,
    fuzz_limits,
    hostile_text,
    http_case,
    mutate,
    run_http_case,
    run_query_case,
    token_soup,
)
from czar.local import LocalCluster
from czar.server import make_app
from tests.helpers import build_store

N_OBJECTS = 300
# Examples per test (explicit, whatever the profile): 7,000 strings + 3,000 HTTP requests.
SOUP, MUTATIONS, TEXT, HTTP = 4_500, 1_500, 1_000, 3_000
BATCH = 5  # cases per hypothesis example
LIMITS = fuzz_limits()
FUZZ = dict(deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz") / "root"
    tables = build_store(root, n_objects=N_OBJECTS, rows_per_file=200)
    with LocalCluster(root, workers=2) as qe:
        qe.n_objects = tables["Object"].num_rows  # the oracle of the good query
        yield qe


def _still_answers(cluster) -> None:
    assert cluster.czar.query(GOOD).column("n")[0].as_py() == cluster.n_objects


def _fuzz_queries(cluster, make, n: int) -> Summary:
    # Hypothesis draws a seed per example and the generator makes BATCH cases from it: drawing
    # each token through hypothesis cost ~30 ms a case, and even a bare example ~2 ms, many
    # times what the parser takes to refuse a case. A failure is reported with its case text.
    summary = Summary()

    @settings(max_examples=n // BATCH, **FUZZ)
    @given(st.integers(0, 2**64 - 1))
    def run(seed):
        p = RandomPicker(seed)
        for _ in range(BATCH):
            run_query_case(cluster.czar, make(p), p.choice(LANGS), summary, bound=30.0, timeout=10.0)

    run()
    assert not summary.failures, "\n".join(summary.failures[:20])
    assert summary.cases >= n
    return summary


def test_token_soup_is_refused_or_answered_cleanly(cluster):
    s = _fuzz_queries(cluster, token_soup, SOUP)
    assert sum(s.refusals.values()) > 0  # the generator does reach refusals
    _still_answers(cluster)


def test_mutated_queries_are_refused_or_answered_cleanly(cluster):
    s = _fuzz_queries(cluster, mutate, MUTATIONS)
    assert s.answered > 0 and sum(s.refusals.values()) > 0  # both paths were exercised
    _still_answers(cluster)


def test_hostile_text_is_refused_cleanly(cluster):
    _fuzz_queries(cluster, hostile_text, TEXT)
    _still_answers(cluster)


@pytest.mark.parametrize("sql", HOSTILE)
@pytest.mark.parametrize("lang", ["adql", "qserv"])
def test_each_hostile_string_alone_and_in_a_query(cluster, sql, lang):
    summary = Summary()
    for q in (sql, f"SELECT {sql} FROM testdb.Object", f"SELECT * FROM testdb.Object WHERE ra = {sql}"):
        run_query_case(cluster.czar, q, lang, summary)
    assert not summary.failures, "\n".join(summary.failures)


def test_http_requests_never_give_5xx(cluster, tmp_path):
    summary = Summary()
    app = make_app(cluster.czar, tmp_path / "jobs", reap_interval=1.0, limits=LIMITS)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        jobs = ["nosuchjob"]
        r = client.post("/tap/async", data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": GOOD})
        assert r.status_code == 303
        jobs.append(r.headers["location"].rstrip("/").rsplit("/", 1)[-1])

        @settings(max_examples=HTTP // BATCH, **FUZZ)
        @given(st.integers(0, 2**64 - 1))
        def run(seed):
            p = RandomPicker(seed)
            for _ in range(BATCH):
                r = run_http_case(client, http_case(p, jobs[-10:]), summary)
                if r is not None and r.status_code == 303 and "location" in r.headers:
                    jobs.append(r.headers["location"].rstrip("/").rsplit("/", 1)[-1])

        run()
        assert not summary.failures, "\n".join(summary.failures[:20])
        assert summary.cases >= HTTP and summary.statuses[200] > 0 and summary.statuses[400] > 0
        r = client.post("/tap/sync", data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": GOOD,
                                           "FORMAT": "csv"})
        assert r.status_code == 200 and r.text.split()[-1] == str(cluster.n_objects)
    _still_answers(cluster)


def test_merge_errors_are_user_errors(cluster):
    """Found by the fuzzer: DuckDB errors of the czar's merge step came out unwrapped."""
    # HAVING runs only in the czar's merge; MySQL compares a number with a string
    sql = ("SELECT o.objectId, COUNT(*) AS n FROM testdb.Object AS o JOIN testdb.Source AS s "
           "ON s.objectId = o.objectId GROUP BY o.objectId HAVING COUNT(*) > '/etc/passwd'")
    summary = Summary()
    run_query_case(cluster.czar, sql, "qserv", summary)
    assert not summary.known and not summary.failures


def test_infinite_execution_duration_is_a_400(cluster, tmp_path):
    """Found by the fuzzer: EXECUTIONDURATION=inf was an HTTP 500."""
    app = make_app(cluster.czar, tmp_path / "jobs", reap_interval=1.0, limits=LIMITS)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        r = client.post("/tap/async", data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": GOOD,
                                            "EXECUTIONDURATION": "inf"})
    assert r.status_code == 400 and "EXECUTIONDURATION" in r.text


@pytest.mark.parametrize("max_rows", ["x", 1e300, -1])
def test_bad_max_rows_is_a_clean_400(cluster, tmp_path, max_rows):
    """Found by the fuzzer: max_rows of /api/v1/query was not validated."""
    app = make_app(cluster.czar, tmp_path / "jobs", reap_interval=1.0, limits=LIMITS)
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        r = client.post("/api/v1/query", json={"sql": GOOD, "max_rows": max_rows})
    assert r.status_code == 400 and "max_rows" in r.text and "ValueError" not in r.text
