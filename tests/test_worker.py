"""Real worker processes on loopback, called over gRPC: results equal DuckDB run directly on the
same chunk files; cancel, secret, sandbox and bad input behave."""
from __future__ import annotations

import threading
import time

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

from qengine.store import load_manifest, table_dir
from qengine.workerclient import ExecuteSummary, WorkerError
from tests.helpers import DB, WorkerProcess, build_store
from worker.inventory import chunk_condition
from worker.sqlfuncs import register

OBJ = "{{" + DB + ".Object}}"
SRC = "{{" + DB + ".Source}}"
FLT = "{{" + DB + ".Filter}}"
NOTHING = "{{" + DB + ".Nothing}}"
OBJ_OV = "{{" + DB + ".Object__overlap}}"
OBJ_IX = "{{" + DB + ".Object__index}}"
SRC_OV = "{{" + DB + ".Source__overlap}}"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("wstore") / "root"
    tables = build_store(root, n_objects=3000)
    return root, tables


@pytest.fixture(scope="module")
def worker(store):
    root, _ = store
    with WorkerProcess(root) as w:
        yield w


def _files(root, table, kind="data"):
    d = table_dir(root, DB, table)
    return [str(d / f.path) for f in load_manifest(d).files_of(kind)]


def _direct(sql: str) -> pa.Table:
    con = duckdb.connect()
    register(con)
    return con.sql(sql).to_arrow_table()


def _rows(t: pa.Table) -> list[tuple]:
    cols = [t.column(i).to_pylist() for i in range(t.num_columns)]
    return sorted(zip(*cols), key=repr)


def test_full_scan_aggregate_equals_direct_duckdb(store, worker):
    root, tables = store
    with worker.client() as c:
        s = ExecuteSummary()
        got = c.query(f'SELECT count(*) AS n, sum(mag) AS s, min(ra) AS lo, max(decl) AS hi FROM {OBJ}',
                      summary=s)
    files = ", ".join(f"'{f}'" for f in _files(root, "Object"))
    want = _direct(f"SELECT count(*) AS n, sum(mag) AS s, min(ra) AS lo, max(decl) AS hi FROM read_parquet([{files}])")
    assert got.to_pylist() == want.to_pylist()
    assert got.column("n")[0].as_py() == tables["Object"].num_rows
    assert s.rows == 1 and s.files == len(_files(root, "Object"))


def test_chunk_subset_join_overlap_index_and_replicated(store, worker):
    root, tables = store
    m = load_manifest(table_dir(root, DB, "Object"))
    chunks = m.chunk_ids()[::5][:12]
    sql = (f'SELECT o.objectId, o.chunkId, count(s.sourceId) AS n, sum(s.flux) AS f '
           f'FROM {OBJ} o JOIN {SRC} s ON o.objectId = s.objectId AND o.chunkId = s.chunkId '
           f'GROUP BY o.objectId, o.chunkId')
    with worker.client() as c:
        got = c.query(sql, chunk_ids=chunks)
        ov = c.query(f'SELECT objectId, chunkId FROM {OBJ_OV}', chunk_ids=chunks)
        idx = c.query(f'SELECT count(*) AS n FROM {OBJ_IX}', chunk_ids=chunks)
        flt = c.query(f'SELECT name FROM {FLT} ORDER BY filterId')
    inlist = ",".join(map(str, chunks))
    ofiles = ", ".join(f"'{f}'" for f in _files(root, "Object"))
    sfiles = ", ".join(f"'{f}'" for f in _files(root, "Source"))
    want = _direct(
        f"SELECT o.objectId, o.chunkId, count(s.sourceId) AS n, sum(s.flux) AS f "
        f"FROM read_parquet([{ofiles}]) o JOIN read_parquet([{sfiles}]) s ON o.objectId = s.objectId "
        f"WHERE o.chunkId IN ({inlist}) GROUP BY o.objectId, o.chunkId")
    assert got.num_rows > 0
    assert _rows(got) == _rows(want)
    vfiles = ", ".join(f"'{f}'" for f in _files(root, "Object", "overlap"))
    want_ov = _direct(f"SELECT objectId, chunkId FROM read_parquet([{vfiles}]) WHERE chunkId IN ({inlist})")
    assert _rows(ov) == _rows(want_ov)
    assert idx.column("n")[0].as_py() == tables["Object"].num_rows
    assert flt.column("name").to_pylist() == ["u", "g", "r"]


def test_scisql_functions_and_uploads(store, worker):
    root, tables = store
    up = pa.table({"ra": [10.0, 200.0], "decl": [-5.0, 60.0], "tag": ["a", "b"]})
    sql = (f'SELECT u.tag, count(*) AS n FROM {{{{TAP_UPLOAD.mine}}}} u JOIN {OBJ} o '
           f'ON scisql_angSep(u.ra, u.decl, o.ra, o.decl) < 20 GROUP BY u.tag')
    with worker.client() as c:
        got = c.query(sql, uploads={"mine": up})
    files = ", ".join(f"'{f}'" for f in _files(root, "Object"))
    con = duckdb.connect()
    register(con)
    con.register("mine", up)
    want = con.sql(f"SELECT u.tag, count(*) AS n FROM mine u JOIN read_parquet([{files}]) o "
                   f"ON scisql_angSep(u.ra, u.decl, o.ra, o.decl) < 20 GROUP BY u.tag").to_arrow_table()
    assert _rows(got) == _rows(want)


def test_zero_rows_keep_the_schema(worker):
    with worker.client() as c:
        t = c.query(f'SELECT objectId, mag FROM {OBJ} WHERE mag > 1e9')
    assert t.num_rows == 0 and t.schema.names == ["objectId", "mag"]


def test_streaming_in_bounded_batches(store, worker):
    _, tables = store
    with worker.client() as c:
        batches = list(c.execute(f'SELECT * FROM {SRC}', batch_rows=1000))
    assert sum(b.num_rows for b in batches) == tables["Source"].num_rows
    assert max(b.num_rows for b in batches) <= 2048 and len(batches) > 2


def test_cancel_stops_a_long_query_within_a_second(worker):
    errors: list[Exception] = []

    def run():
        with worker.client() as c:
            try:
                c.query("SELECT sum(x * x) FROM range(100000000000) t(x)", query_id="long-1")
            except WorkerError as exc:
                errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.8)
    with worker.client() as c:
        t0 = time.monotonic()
        assert c.cancel("long-1") is True
    t.join(timeout=5)
    elapsed = time.monotonic() - t0
    assert not t.is_alive() and elapsed < 1.0, elapsed
    assert errors and errors[0].code == "CANCELLED"
    with worker.client() as c:
        assert c.cancel("no-such-query") is False
        assert c.health().status == "ok" and c.health().running == 0


def test_timeout_is_enforced(worker):
    with worker.client() as c, pytest.raises(WorkerError) as err:
        c.query("SELECT sum(x * x) FROM range(100000000000) t(x)", timeout_seconds=0.3)
    assert err.value.code == "DEADLINE_EXCEEDED"


def test_calls_without_the_secret_are_refused(worker):
    for secret in (None, "wrong"):
        with worker.client(secret=secret) as c:
            with pytest.raises(WorkerError) as err:
                c.query("SELECT 1")
            assert err.value.code == "UNAUTHENTICATED"
            with pytest.raises(WorkerError):
                c.health()


@pytest.mark.parametrize("sql,code", [
    ("SELECT * FROM read_csv('/etc/passwd')", "PERMISSION_DENIED"),
    ("SELECT * FROM read_text('/etc/hostname')", "PERMISSION_DENIED"),
    ("SELECT * FROM glob('/etc/*')", "PERMISSION_DENIED"),
    ("COPY (SELECT 1) TO 'x.csv'", "PERMISSION_DENIED"),
    ("INSTALL httpfs", "PERMISSION_DENIED"),
    ("ATTACH '/tmp/x.db' AS x", "PERMISSION_DENIED"),
    ("SET enable_external_access = true", "PERMISSION_DENIED"),
    ("CREATE TABLE t AS SELECT 1", "PERMISSION_DENIED"),
    ("SELECT 1; SELECT 2", "INVALID_ARGUMENT"),
])
def test_sandbox_refuses_file_access_writes_and_settings(worker, sql, code):
    with worker.client() as c, pytest.raises(WorkerError) as err:
        c.query(sql)
    assert err.value.code == code, str(err.value)


def test_sandbox_refuses_files_outside_the_root_even_by_traversal(store, worker):
    root, _ = store
    with worker.client() as c, pytest.raises(WorkerError) as err:
        c.query(f"SELECT * FROM read_parquet('{root}/../root-Object.parquet')")
    assert err.value.code == "PERMISSION_DENIED"


@pytest.mark.parametrize("sql,kwargs,code,text", [
    (f'SELECT nope FROM {OBJ}', {}, "INVALID_ARGUMENT", "nope"),
    (f'SELECT * FROM {NOTHING}', {}, "NOT_FOUND", "Nothing"),
    (f'SELECT * FROM {SRC_OV}', {}, "NOT_FOUND", "child"),
    ("SELECT * FROM nothing_here", {}, "INVALID_ARGUMENT", "nothing_here"),
    ("SELEC 1", {}, "INVALID_ARGUMENT", "syntax"),
    (f'SELECT * FROM {OBJ}', {"chunk_ids": [999999]}, "NOT_FOUND", "999999"),
    (f'SELECT * FROM {SRC}', {"max_rows": 10}, "RESOURCE_EXHAUSTED", "10 rows"),
    ("", {}, "INVALID_ARGUMENT", "empty"),
])
def test_bad_input_gives_a_clear_status_and_the_worker_survives(worker, sql, kwargs, code, text):
    with worker.client() as c:
        with pytest.raises(WorkerError) as err:
            c.query(sql, **kwargs)
        assert err.value.code == code and text.lower() in str(err.value).lower()
        assert c.health().status == "ok"


def test_inventory_matches_the_manifests(store, worker):
    root, tables = store
    with worker.client() as c:
        inv = {(t.database, t.table): t for t in c.inventory().tables}
    assert set(inv) == {(DB, "Object"), (DB, "Source"), (DB, "Filter")}
    m = load_manifest(table_dir(root, DB, "Object"))
    assert list(inv[(DB, "Object")].chunk_ids) == m.chunk_ids()
    assert inv[(DB, "Object")].rows == tables["Object"].num_rows
    assert inv[(DB, "Filter")].role == "replicated" and inv[(DB, "Filter")].rows == 3
    assert int(np.sum(inv[(DB, "Source")].chunk_rows)) == tables["Source"].num_rows


_CON = duckdb.connect()


@settings(max_examples=200, deadline=None)
@given(held=st.lists(st.integers(0, 500), min_size=1, max_size=80, unique=True), data=st.data())
def test_chunk_condition_selects_exactly_the_requested_chunks(held, data):
    held = sorted(held)
    chunks = sorted(data.draw(st.lists(st.sampled_from(held), unique=True)))
    cond = chunk_condition(chunks, held, max_ranges=data.draw(st.sampled_from([2, 64])))
    got = _CON.sql(f"SELECT chunkId FROM (SELECT unnest({held}) AS chunkId) WHERE {cond}").fetchall()
    assert sorted(c for (c,) in got) == chunks


@pytest.mark.parametrize("lane", ["interactive", "scan"])
def test_unary_query_equals_the_stream(store, worker, lane):
    root, _ = store
    chunks = load_manifest(table_dir(root, DB, "Object")).chunk_ids()[:6]
    sqls = [f"SELECT objectId, ra, decl, mag, chunkId FROM {OBJ} WHERE mag > 18",
            f"SELECT objectId FROM {OBJ} WHERE mag > 1000",  # no rows: the schema still comes
            f"SELECT chunkId, count(*) AS n FROM {OBJ} GROUP BY chunkId"]
    with worker.client() as c:
        for sql in sqls:
            s1, s2 = ExecuteSummary(), ExecuteSummary()
            small = c.execute_small(sql, chunk_ids=chunks, lane=lane, summary=s1)
            streamed = c.query(sql, chunk_ids=chunks, lane=lane, summary=s2)
            assert small.schema == streamed.schema
            assert _rows(small) == _rows(streamed)
            assert (s1.rows, s1.chunks, s1.files) == (s2.rows, s2.chunks, s2.files) == \
                (streamed.num_rows, len(chunks), s2.files)


def test_unary_query_errors_and_oversize_fallback(store, worker):
    with worker.client() as c:
        with pytest.raises(WorkerError) as err:
            c.execute_small(f"SELECT nope FROM {OBJ}", lane="interactive")
        assert err.value.code == "INVALID_ARGUMENT" and "nope" in str(err.value)
        # ~80 MiB of rows: more than one message may carry, so the caller is told to stream
        assert c.execute_small("SELECT x, x * 2 AS y FROM range(6000000) t(x)", lane="interactive") is None
        assert c.health().running == 0


def test_column_hint_reads_only_those_columns(store, worker):
    root, _ = store
    chunks = load_manifest(table_dir(root, DB, "Object")).chunk_ids()[:5]
    hinted = "{{" + DB + ".Object| ra ,decl,objectId,CHUNKID}}"
    with worker.client() as c:
        got = c.query(f"SELECT * FROM {hinted} WHERE ra >= 0", chunk_ids=chunks, lane="interactive")
        want = c.query(f"SELECT objectId, ra, decl, chunkId, subChunkId FROM {OBJ} WHERE ra >= 0",
                       chunk_ids=chunks, lane="interactive")
        assert sorted(got.column_names) == sorted(["chunkId", "subChunkId", "ra", "decl", "objectId"])
        assert _rows(got.select(want.column_names)) == _rows(want) and want.num_rows > 0
        with pytest.raises(WorkerError) as err:
            c.query("SELECT * FROM {{" + DB + ".Object|nope}}", chunk_ids=chunks)
        assert err.value.code == "INVALID_ARGUMENT" and "nope" in str(err.value)


def test_files_wholly_wanted_are_read_without_a_chunk_filter(store, worker):
    root, tables = store
    from worker.inventory import Inventory, bind_sql

    m = load_manifest(table_dir(root, DB, "Object"))
    data = sorted(m.files_of("data"), key=lambda f: f.first_chunk)
    assert len(data) >= 3
    held = m.chunk_ids()
    in_file = [c for c in held if data[1].first_chunk <= c <= data[1].last_chunk]
    # all of file 1, part of file 2, nothing of the others
    chunks = sorted(in_file + [c for c in held if data[2].first_chunk <= c <= data[2].last_chunk][::3])
    sql = f"SELECT chunkId, count(*) AS n, sum(mag) AS s FROM {OBJ} GROUP BY chunkId"
    bound = bind_sql(Inventory(root), sql, chunks).sql
    assert bound.count("WHERE") == 1 and "UNION ALL" in bound  # one filtered scan, one plain
    with worker.client() as c:
        got = c.query(sql, chunk_ids=chunks)
    files = ", ".join(f"'{f}'" for f in _files(root, "Object"))
    want = _direct(f"SELECT chunkId, count(*) AS n, sum(mag) AS s FROM read_parquet([{files}]) WHERE chunkId IN "
                   f"({', '.join(map(str, chunks))}) GROUP BY chunkId")
    g, w = _rows(got), _rows(want)
    assert [r[:2] for r in g] == [r[:2] for r in w] and got.num_rows == len(chunks)
    assert [r[2] for r in g] == pytest.approx([r[2] for r in w], rel=1e-12)  # summation order may differ


def test_chunk_ids_as_a_packed_array_or_a_list(store, worker):
    import grpc

    from qengine.proto import worker_pb2 as pb

    root, _ = store
    chunks = load_manifest(table_dir(root, DB, "Object")).chunk_ids()[:7]
    sql = f"SELECT chunkId, count(*) AS n FROM {OBJ} GROUP BY chunkId"
    with worker.client() as c:
        packed = c.query(sql, chunk_ids=np.asarray(chunks[::-1]))   # any order: sorted by the worker
        msgs = list(c.stub.Execute(pb.ChunkQuery(sql=sql, chunk_ids=chunks), metadata=c.metadata))
        listed = pa.ipc.open_stream(pa.py_buffer(msgs[0].arrow_ipc)).read_all()
        assert _rows(packed) == _rows(listed) and packed.num_rows == len(chunks)
        with pytest.raises(grpc.RpcError) as err:
            c.stub.Query(pb.ChunkQuery(sql=sql, chunk_id_array=b"\x01\x02\x03"), metadata=c.metadata)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ------------------------------------------------------------- symlinked placement (shared storage)
def _symlinked_worker_dir(root, wdir):
    from czar.place_cli import plan_for, write_worker_dirs

    dirs = {"h0:7001": wdir}
    write_worker_dirs(root, plan_for(root, dirs, 1)[0], dirs, "symlink")
    linked = [p for p in wdir.rglob("*.parquet") if p.is_symlink()]
    assert linked and all(not str(p.resolve()).startswith(str(wdir.resolve())) for p in linked)


def test_symlinked_placement_outside_the_data_root_is_readable(store, tmp_path):
    # `qengine place --mode symlink`: the files live in the store (shared storage), outside the
    # worker's data root. A worker started afterwards allows where its links point, nothing more.
    root, _ = store
    wdir = tmp_path / "w0"
    _symlinked_worker_dir(root, wdir)
    sql = f"SELECT count(*) AS n, sum(objectId) AS s FROM {OBJ}"
    with WorkerProcess(wdir) as w, w.client() as c, WorkerProcess(root) as ref, ref.client() as rc:
        got = c.query(sql)
        assert _rows(got) == _rows(rc.query(sql)) and got.column("n")[0].as_py() > 0
        # still sandboxed: a file beside the store, outside every allowed directory, is refused
        (tmp_path / "secret.csv").write_text("a\n1\n")
        with pytest.raises(WorkerError) as err:
            c.query(f"SELECT * FROM read_csv('{tmp_path / 'secret.csv'}')")
        assert err.value.code in ("PERMISSION_DENIED", "INVALID_ARGUMENT")


def test_symlinks_placed_after_start_are_reported_and_refused_cleanly(store, tmp_path):
    from worker.executor import Executor, QueryError, QueryRequest, QueryStats
    from worker.inventory import Inventory

    root, _ = store
    wdir = tmp_path / "w0"
    wdir.mkdir()
    ex = Executor(Inventory(wdir))
    try:
        assert ex.unreadable_dirs() == []
        _symlinked_worker_dir(root, wdir)
        ex.inventory.refresh()
        assert ex.unreadable_dirs()  # what the Inventory RPC logs: restart the worker
        req = QueryRequest(query_id="q1", sql=f"SELECT count(*) FROM {OBJ}", chunk_ids=None, uploads={})
        with pytest.raises(QueryError) as err:
            list(ex.execute(req, QueryStats()))
        assert err.value.code == "PERMISSION_DENIED"
        # given the store's directory explicitly (--allow-dir), the same files are readable
        data_dir = str(table_dir(root, DB, "Object"))
        ex2 = Executor(ex.inventory, allow_dirs=[data_dir])
        try:
            assert not any(d.startswith(data_dir) for d in ex2.unreadable_dirs())
            req2 = QueryRequest(query_id="q2", sql=f"SELECT count(*) AS n FROM {OBJ}", chunk_ids=None, uploads={})
            assert sum(b.num_rows for b in ex2.execute(req2, QueryStats())) == 1
        finally:
            ex2.close()
    finally:
        ex.close()
