"""The science query suite at the small scale: every query runs through a real cluster and
equals one DuckDB over the unpartitioned inputs (the suite's smoke test, issue 9)."""
from __future__ import annotations

import pytest

from benchmarks.suite import (
    build,
    compare,
    load_queries,
    oracle_connection,
    run_oracle,
    scanned_bytes,
)
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


def _data_bytes(root, table: str) -> int:
    import pyarrow.parquet as pq

    total = 0
    for f in sorted((root / "dp02" / table / "data").glob("*.parquet")):
        md = pq.ParquetFile(f).metadata
        total += sum(md.row_group(i).column(j).total_compressed_size
                     for i in range(md.num_row_groups) for j in range(md.num_columns))
    return total


def test_scanned_bytes_of_a_full_star_scan_is_every_data_byte_and_a_cone_reads_less(suite):
    ds, qe, _ = suite
    full = qe.explain("SELECT * FROM dp02.Object", lang="adql")
    want = _data_bytes(ds.root, "Object")
    # a row group holding chunks of both workers is read by both
    assert 0 < want <= scanned_bytes(ds.root, full) <= len(full.per_worker) * want
    few = qe.explain("SELECT objectId, coord_ra FROM dp02.Object", lang="adql")
    cone = qe.explain(f"SELECT objectId, coord_ra FROM dp02.Object WHERE CONTAINS(POINT('ICRS', coord_ra, coord_dec), "
                      f"CIRCLE('ICRS', {ds.params['ra']}, {ds.params['dec']}, 0.01)) = 1", lang="adql")
    assert 0 < scanned_bytes(ds.root, cone) <= scanned_bytes(ds.root, few) < scanned_bytes(ds.root, full)


def test_astropy_contenders_agree_with_qengine(suite):
    from benchmarks.suite_bench import astropy_contenders

    ds, qe, con = suite
    queries = {q.id: q for q in QUERIES}
    for qid, (prepare, run, check) in astropy_contenders(ds, con).items():
        q = queries[qid]
        sql, _ = q.render(ds.params)
        got = qe.query(sql, lang=q.lang, uploads={n: ds.uploads[n] for n in q.uploads} or None)
        assert got.num_rows > 0
        assert check(run(prepare()), got) is None, qid


def test_a_build_that_drops_its_inputs_checks_against_the_store(tmp_path, monkeypatch):
    """Larger scales delete the generated files after ingest and generate ForcedSource for the
    first objects only: the oracle then reads the store's data files, and still agrees."""
    import benchmarks.suite as S

    monkeypatch.setitem(S.CHILD_OBJECTS, "medium", {"ForcedSource": 400})
    ds = build("medium", tmp_path, objects={"lsst_dr": 1_000, "sdss": 500, "ukidss": 500})
    assert not list((tmp_path / "input").rglob("*.parquet"))
    # the Object table stays in its generated form for the oracle, the others are read from the store
    assert ds.stored == set(ds.inputs) - {"dp02.Object"} and ds.objects["dp02.ForcedSource"] == 400
    assert all("oracle-input" in str(f) for f in ds.inputs["dp02.Object"])
    con = oracle_connection(ds)
    n_obj, n_fs_obj, orphans = con.execute(
        "SELECT (SELECT count(*) FROM dp02.Object), (SELECT count(DISTINCT objectId) FROM dp02.ForcedSource), "
        "(SELECT count(*) FROM dp02.ForcedSource f ANTI JOIN dp02.Object o USING (objectId))").fetchone()
    assert n_obj == 1_000 and 0 < n_fs_obj <= 400 and orphans == 0
    assert "chunkId" not in [d[0] for d in con.execute("SELECT * FROM dp02.Source LIMIT 0").description]
    queries = {q.id: q for q in QUERIES}
    with LocalCluster(ds.root, workers=1) as qe:
        assert scanned_bytes(ds.root, qe.explain("SELECT * FROM dp02.Source", lang="adql")) == _data_bytes(ds.root, "Source")
        for qid in ("Q07", "Q08", "Q13", "Q19"):
            q = queries[qid]
            sql, _ = q.render(ds.params)
            got, want = qe.query(sql, lang=q.lang), run_oracle(con, q, ds.params)
            assert got.num_rows > 0 and compare(got, want, q.ordered) is None, qid


def test_the_benchmark_runs_every_query_and_renders_its_table(suite):
    from benchmarks.suite_bench import _markdown, run_suite

    ds, qe, con = suite
    rows = run_suite(qe, con, ds, repeat=1, remote=False, budget=0.0)
    assert [r["id"] for r in rows] == [q.id for q in QUERIES]
    assert all(r["check"] == "equal" and not r["error"] and len(r["qe"]) == len(r["duck"]) == 1 for r in rows)
    assert {r["id"] for r in rows if r["astropy_check"] == "equal"} == {"Q22", "Q23", "Q24"}
    assert all(r["bytes"] > 0 for r in rows if r["chunks"] != "-")
    meta = {"scale": "small", "repeat": 1, "budget": 0.0, "workers": 2, "cluster": None, "clients": 1,
            "load_seconds": 0, "load_start": 0.0, "oracle_data": "the inputs", "table_rows": {}}
    text = _markdown({"meta": meta, "rows": rows[:-1], "load": None}, None)
    assert all(f"| {q.id} |" in text for q in QUERIES)
    assert f"| {QUERIES[-1].id} |" in text and "**not run**" in text
