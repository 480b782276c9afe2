"""Cluster operation: placement (pure and `qengine place`), and failover with real worker
processes on loopback — kill -9, SIGSTOP and restart during queries, answers checked against one
DuckDB over the unpartitioned tables."""
from __future__ import annotations

import threading
import time
from collections import defaultdict

import numpy as np
import pytest

from czar.dialects import parse, to_duckdb
from czar.local import LocalCluster
from czar.place_cli import current_holdings, plan_for, write_worker_dirs
from czar.placement import PlacedFile, place
from qengine.cli import main as qengine_main
from qengine.errors import QueryError
from tests.helpers import DB, build_store, oracle_connection
from tests.test_czar import _same
from worker.inventory import Inventory

# A full scan made slow on purpose (an MD5 of a long string per row, deterministic): its parts
# last seconds, so that a worker can be killed or paused while they run.
HEAVY = (f"SELECT sourceId, objectId, flux FROM {DB}.Source "
         f"WHERE LENGTH(MD5(REPEAT(CAST(flux AS CHAR), 2000))) = 32")
COUNT = f"SELECT COUNT(*) AS n, SUM(flux) AS f FROM {DB}.Source"
JOIN = (f"SELECT o.objectId, COUNT(*) AS n FROM {DB}.Object o JOIN {DB}.Source s ON o.objectId = s.objectId "
        f"GROUP BY o.objectId")


# ------------------------------------------------------------------ placement, pure
def _files(n_tables: int = 2, files_per_table: int = 12, seed: int = 0) -> list[PlacedFile]:
    """Data files of a few tables with different file boundaries, plus index/replicated files."""
    rng = np.random.default_rng(seed)
    out = []
    for t in range(n_tables):
        cuts = np.sort(rng.choice(np.arange(1, 999), files_per_table - 1, replace=False))
        bounds = np.r_[0, cuts, 1000]
        for i in range(files_per_table):
            a, b = int(bounds[i]), int(bounds[i + 1]) - 1
            out.append(PlacedFile("db", f"T{t}", "data", f"data/p{i}", int(rng.integers(1, 100)) * 1000, a, b))
        out.append(PlacedFile("db", f"T{t}", "index", "index/p0", 500))
    out.append(PlacedFile("db", "Filter", "replicated", "data/p0", 100))
    return out


def _holders_per_chunk(files: list[PlacedFile], placement) -> dict[tuple[str, int], set[str]]:
    held = defaultdict(set)
    for f in files:
        if f.kind == "data":
            for c in range(f.first_chunk, f.last_chunk + 1):
                held[(f.table, c)].update(placement.files[f.key])
    return held


@pytest.mark.parametrize("workers,replicas", [(3, 2), (5, 2), (4, 3), (2, 5), (1, 1)])
def test_placement_replicas_colocation_balance(workers, replicas):
    files = _files()
    names = [f"w{i}" for i in range(workers)]
    p = place(files, names, replicas)
    r = min(replicas, workers)
    held = _holders_per_chunk(files, p)
    for c in range(1000):
        # every chunk of every table has at least R holders, and a worker serving a chunk of the
        # leader holds the other table's rows of that chunk too (joins are per chunk)
        for t in ("T0", "T1"):
            assert len(held[(t, c)]) >= r
        leader = max(("T0", "T1"), key=lambda t: sum(f.bytes for f in files if f.table == t and f.kind == "data"))
        other = "T1" if leader == "T0" else "T0"
        assert held[(leader, c)] <= held[(other, c)]
    for f in files:
        if f.kind in ("index", "replicated"):
            assert set(p.files[f.key]) == set(names)
    # the leader's files are held exactly R times (segments are its files)
    lead_sizes = [len(p.files[f.key]) for f in files if f.table == leader and f.kind == "data"]
    assert set(lead_sizes) == {r}
    loads = p.bytes_per_worker()
    if workers > 1 and r < workers:
        biggest = max(f.bytes for f in files) * 2
        assert max(loads.values()) - min(loads.values()) <= biggest


def test_placement_adding_a_worker_moves_little():
    files = _files(files_per_table=40, seed=3)
    p3 = place(files, ["a", "b", "c"], 2)
    p4 = place(files, ["a", "b", "c", "d"], 2, previous=p3.files)
    copies = sum(len(ws) for k, ws in p3.files.items() if k[2].startswith("data/"))
    moved = p4.moved(p3.files)
    # the new worker takes about a quarter of the data: far fewer copies than placing afresh
    fresh = place(files, ["d", "c", "b", "a"], 2).moved(p3.files)
    assert 0 < moved < fresh
    assert moved <= 0.5 * copies
    assert p4.bytes_per_worker()["d"] > 0
    # placing again with the same workers moves nothing
    assert place(files, ["a", "b", "c", "d"], 2, previous=p4.files).moved(p4.files) == 0
    # a worker removed: its replicas are made again elsewhere, the others stay put
    p2 = place(files, ["a", "b", "d"], 2, previous=p4.files)
    held = _holders_per_chunk(files, p2)
    assert all(len(v) >= 2 and "c" not in v for v in held.values())


def test_placement_errors():
    with pytest.raises(Exception, match="at least one worker"):
        place(_files(), [], 2)
    with pytest.raises(Exception, match="replicas"):
        place(_files(), ["a"], 0)


def test_assign_among_live_replicas():
    """The czar's vectorised assignment: every chunk once, to a live holder, rows balanced."""
    from types import SimpleNamespace

    from czar.engine import Czar

    rng = np.random.default_rng(5)
    chunks = np.sort(rng.choice(100_000, 20_000, replace=False)).astype(np.int64)
    rows = rng.integers(1, 1000, chunks.size)
    table = SimpleNamespace(database="db", name="T",
                            chunk_row_weights=lambda want: rows[np.searchsorted(chunks, want)])
    addrs = ["wa:7001", "wb:7001", "wc:7001", "wd:7001"]
    runs = np.array_split(np.arange(chunks.size), 40)  # runs of chunks, each on 2 workers
    held = {a: [] for a in addrs}
    pairs = []
    for r in runs:
        pair = [str(a) for a in rng.choice(addrs, 2, replace=False)]
        pairs.append(pair)
        for a in pair:
            held[a].append(chunks[r])
    czar = object.__new__(Czar)
    czar.workers = [SimpleNamespace(address=a) for a in addrs]
    czar._holdings = {a: {("db", "t"): np.sort(np.concatenate(h))} for a, h in held.items()}
    czar._lacking = {}
    down = {"wc:7001"}
    czar._health = SimpleNamespace(is_up=lambda a: a not in down, state=lambda a: SimpleNamespace(reason="test"))
    plan = SimpleNamespace(table=table, tables=[table], overlap_tables=[])
    want = chunks[::3]
    out = czar._assign(plan, want)
    assert "wc:7001" not in out
    assert np.array_equal(np.sort(np.concatenate(list(out.values()))), want)  # each chunk once
    for a, cs in out.items():
        assert np.isin(cs, czar._holdings[a][("db", "t")]).all()
    load = {a: int(rows[np.searchsorted(chunks, cs)].sum()) for a, cs in out.items()}
    assert max(load.values()) <= 1.2 * sum(load.values()) / len(load)
    # both replicas of a run down: a clear error naming its chunks and both workers
    down.clear()
    down.update(pairs[0])
    with pytest.raises(QueryError, match=r"no live replica for chunk\(s\)") as err:
        czar._assign(plan, chunks)
    assert str(chunks[runs[0][0]]) in str(err.value)
    assert all(f"{a} is down" in str(err.value) for a in pairs[0])


# ------------------------------------------------------------------ a store, its oracle
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster") / "root"
    tables = build_store(root, n_objects=6000, rows_per_file=900)
    con = oracle_connection(tables)
    return root, con


_ORACLE: dict = {}


def _oracle(con, sql: str, lang: str = "qserv"):
    if (id(con), sql) not in _ORACLE:  # the heavy scan is slow in one DuckDB too: once
        _ORACLE[(id(con), sql)] = con.sql(to_duckdb(parse(sql, lang))).to_arrow_table()
    return _ORACLE[(id(con), sql)]


def test_place_cli_writes_worker_dirs(store, tmp_path):
    root, _ = store
    cfg = tmp_path / "cluster.yaml"
    workers = [f"{{address: 'h{i}:7001', data: w{i}}}" for i in range(4)]
    cfg.write_text("metadata_root: %s\nreplicas: 2\nworkers:\n%s\n" % (root, "\n".join(f"  - {w}" for w in workers[:3])))
    assert qengine_main(["place", "--config", str(cfg), "--mode", "hardlink", str(root)]) == 0
    full = {(t.database, t.name): set(t.chunks) for t in Inventory(root).tables()}
    held = defaultdict(lambda: defaultdict(int))
    for i in range(3):
        for t in Inventory(tmp_path / f"w{i}").tables():
            for c in t.chunks:
                held[(t.database, t.name)][c] += 1
            if t.manifest.role == "replicated":
                assert t.files.get("replicated")
    for key, chunks in full.items():
        if chunks:
            assert {c for c, n in held[key].items() if n >= 2} == chunks, key
    # again with a fourth worker: few files move, the new one gets a share, every chunk keeps 2 copies
    dirs = {f"h{i}:7001": tmp_path / f"w{i}" for i in range(4)}
    before = current_holdings(root, dirs)
    plan, _ = plan_for(root, dirs, 2)
    assert 0 < plan.moved(before) <= 0.6 * sum(len(v) for v in before.values())
    cfg.write_text("metadata_root: %s\nreplicas: 2\nworkers:\n%s\n" % (root, "\n".join(f"  - {w}" for w in workers)))
    assert qengine_main(["place", "--config", str(cfg), "--mode", "hardlink", str(root)]) == 0
    assert Inventory(tmp_path / "w3").tables()[0].manifest is not None
    counts = defaultdict(lambda: defaultdict(int))
    for i in range(4):
        for t in Inventory(tmp_path / f"w{i}").tables():
            for c in t.chunks:
                counts[(t.database, t.name)][c] += 1
    for key, chunks in full.items():
        if chunks:
            assert {c for c, n in counts[key].items() if n >= 2} == chunks, key
    # idempotent: nothing to add the second time
    stats = write_worker_dirs(root, plan_for(root, dirs, 2)[0], dirs, "hardlink")
    assert sum(s.added + s.removed for s in stats.values()) == 0


def test_place_cli_needs_data_dirs(store, tmp_path, capsys):
    root, _ = store
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(f"metadata_root: {root}\nworkers: ['h0:7001']\n")
    assert qengine_main(["place", "--config", str(cfg), str(root)]) == 1
    assert "needs 'address'" in capsys.readouterr().err


# ------------------------------------------------------------------ failover, real processes
@pytest.fixture(scope="module")
def cluster(store):
    root, con = store
    with LocalCluster(root, workers=3, replicas=2, health_interval=0.5, health_timeout=1.0) as qe:
        yield qe, con


@pytest.fixture
def healthy(cluster):
    """Every worker running and up before and after a test (a test may kill or pause them)."""
    qe, con = cluster
    _heal(qe)
    yield qe, con
    _heal(qe)


def _heal(qe: LocalCluster) -> None:
    for w in qe.workers:
        w.resume()
        if not w.alive:
            w.restart()
    _wait(lambda: all(qe.czar._health.is_up(w.address) for w in qe.workers), 20, "workers up again")


def _wait(cond, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _run_in_thread(qe, sql, qid):
    result: dict = {}

    def run():
        try:
            result["table"] = qe.query(sql, lang="qserv", query_id=qid)
        except Exception as exc:
            result["error"] = exc
        result["end"] = time.monotonic()

    t = threading.Thread(target=run)
    t.start()
    _wait(lambda: qid in qe.czar._running or not t.is_alive(), 10, "the query to start")
    return t, result


def test_replicated_cluster_answers(healthy):
    qe, con = healthy
    holders = defaultdict(int)
    for tables in qe.czar._holdings.values():
        for c in tables[(DB.lower(), "source")].tolist():
            holders[c] += 1
    assert set(holders.values()) >= {2}
    assert min(holders.values()) >= 2
    cone = (f"SELECT objectId, ra FROM {DB}.Object "
            f"WHERE CONTAINS(POINT('ICRS', ra, decl), CIRCLE('ICRS', 30, -10, 8)) = 1")
    for sql, lang in ((COUNT, "qserv"), (JOIN, "qserv"), (cone, "adql")):
        _same(qe.query(sql, lang=lang), _oracle(con, sql, lang), ordered=False)
    assert len(qe.explain(COUNT, lang="qserv").per_worker) == 3


def test_kill_after_first_batch_drops_partial_rows(healthy):
    """kill -9 a worker once its part has streamed rows: they are dropped, its chunks rerun on
    replicas, and the answer has every row exactly once."""
    qe, con = healthy
    victim = qe.workers[0]
    client = qe.czar._client(victim.address)
    original = client.execute
    seen = []

    def execute(*args, **kwargs):
        for i, batch in enumerate(original(*args, **kwargs)):
            seen.append(batch.num_rows)
            yield batch
            if i == 0:
                victim.kill()

    client.execute = execute
    before = qe.czar.failovers
    try:
        got = qe.query(HEAVY, lang="qserv")  # slow rows: the part is still running after its first batch
    finally:
        del client.execute
    assert seen and seen[0] > 0
    if qe.czar.failovers == before:
        pytest.fail("the killed worker's part finished anyway: nothing was retried")
    _same(got, _oracle(con, HEAVY), ordered=False)


def test_kill_during_full_scan(healthy):
    qe, con = healthy
    before = qe.czar.failovers
    t, res = _run_in_thread(qe, HEAVY, "scan-kill")
    time.sleep(0.5)
    qe.workers[1].kill()
    t.join(timeout=60)
    assert not t.is_alive()
    assert "error" not in res, res.get("error")
    assert qe.czar.failovers > before
    _same(res["table"], _oracle(con, HEAVY), ordered=False)


def test_kill_both_replicas_fails_fast(healthy):
    qe, _ = healthy
    pair = qe.placement.segments[0][1]
    victims = [w for i, w in enumerate(qe.workers) if f"worker-{i}" in pair]
    assert len(victims) == 2
    t, res = _run_in_thread(qe, HEAVY, "scan-kill-both")
    time.sleep(0.3)
    for w in victims:
        w.kill()
    killed = time.monotonic()
    t.join(timeout=30)
    assert not t.is_alive()
    assert isinstance(res.get("error"), QueryError), res
    assert res["end"] - killed < 5.0
    msg = str(res["error"])
    assert "no live replica for chunk(s)" in msg
    for w in victims:
        assert w.address in msg


def test_sigstop_is_detected_and_retried(healthy):
    qe, con = healthy
    victim = qe.workers[2]
    before = qe.czar.failovers
    t, res = _run_in_thread(qe, HEAVY, "scan-stop")
    time.sleep(0.3)
    victim.pause()
    try:
        _wait(lambda: not qe.czar._health.is_up(victim.address), 10, "the paused worker to be marked down")
        t.join(timeout=60)
    finally:
        victim.resume()
    assert not t.is_alive()
    assert "error" not in res, res.get("error")
    assert qe.czar.failovers > before
    _same(res["table"], _oracle(con, HEAVY), ordered=False)
    # continued, it passes its health checks again and is used
    _wait(lambda: qe.czar._health.is_up(victim.address), 10, "the continued worker to be up")
    assert victim.address in qe.explain(COUNT, lang="qserv").per_worker


def test_restarted_worker_is_used_again(healthy):
    qe, con = healthy
    victim = qe.workers[1]
    victim.kill()
    _same(qe.query(COUNT, lang="qserv"), _oracle(con, COUNT), ordered=False)  # served by the replicas
    _wait(lambda: not qe.czar._health.is_up(victim.address), 10, "the killed worker to be marked down")
    assert victim.address not in qe.explain(COUNT, lang="qserv").per_worker
    victim.restart()
    _wait(lambda: qe.czar._health.is_up(victim.address), 15, "the restarted worker to be up")
    assert victim.address in qe.explain(COUNT, lang="qserv").per_worker
    _same(qe.query(JOIN, lang="qserv"), _oracle(con, JOIN), ordered=False)
    status = qe.czar.status()
    assert all(w["up"] for w in status["workers"])


def test_query_errors_are_not_retried(healthy):
    qe, _ = healthy
    before = qe.czar.failovers
    with pytest.raises(QueryError):
        qe.query(f"SELECT nosuchcolumn FROM {DB}.Object", lang="qserv")
    with pytest.raises(QueryError, match="(?i)division|error|invalid"):
        qe.query(f"SELECT CAST(name AS INTEGER) AS x FROM {DB}.Object", lang="qserv")
    t, res = _run_in_thread(qe, HEAVY, "scan-cancel")
    time.sleep(0.3)
    assert qe.czar.cancel("scan-cancel")
    t.join(timeout=20)
    assert "cancelled" in str(res.get("error"))
    assert qe.czar.failovers == before
    assert all(qe.czar._health.is_up(w.address) for w in qe.workers)


def test_status_cli(healthy, tmp_path, capsys):
    qe, _ = healthy
    cfg = tmp_path / "cluster.yaml"
    workers = "\n".join(f"  - {w.address}" for w in qe.workers)
    # http on a port nothing listens on: the czar is "not reachable", the workers answer
    cfg.write_text(f"metadata_root: {qe.root}\nsecret_file: {qe.workers[0].workdir / 'secret'}\n"
                   f"http: {{host: 127.0.0.1, port: 9}}\nworkers:\n{workers}\n")
    assert qengine_main(["status", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert out.count("\tup\t") == 3
    assert f"{DB}.Source\tchild" in out and "replicas 2..2" in out
    assert "czar: not reachable" in out
    qe.workers[0].kill()
    assert qengine_main(["status", "--config", str(cfg), "--timeout", "1"]) == 1
    out = capsys.readouterr().out
    assert out.count("\tup\t") == 2 and f"{qe.workers[0].address}\tDOWN" in out
    assert "replicas 1..2" in out


def test_status_sends_the_bearer_token_to_the_czar():
    """`qengine status --token` (or $QENGINE_TOKEN) reaches a czar that requires authentication."""
    import http.server
    import threading

    from czar.status_cli import _czar_queries

    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            seen.append(self.headers.get("Authorization"))
            body = b"{}" if self.path.startswith("/api/") else b"<uws:jobs></uws:jobs>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        out = _czar_queries(base, 5.0, "tok-123")
        assert out["reachable"] and out["status"] == {}
        assert seen == ["Bearer tok-123"] * 3
        seen.clear()
        _czar_queries(base, 5.0)
        assert seen == [None] * 3
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
