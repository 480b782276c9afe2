"""Worker overhead: one real ``qengine worker`` process over gRPC vs DuckDB in-process.

Three measurements, each repeated interleaved (worker, baseline, worker, baseline, ...) in one
run on the same data, so the ratios are side by side on a shared, noisy machine:

1. per-call overhead: a point query (``objectId = X``) on one chunk through gRPC (interactive
   lane) vs the identical DuckDB query (the SQL the worker binds, precomputed) on a persistent
   in-process connection configured like the lane; target < 3 ms added at p50.
2. streaming: a full scan of the worker's files to the client (all batches consumed) vs
   DuckDB in-process ``to_arrow_reader`` over the same files; target >= 0.8x rows/s.
3. full-scan aggregates over all 8,983 chunks (85 stripes) through the worker vs one DuckDB over
   a single Parquet file with the same rows; target <= 1.15x.

The input (LSST-DR Object, ``catalogs.generate``, seed 42), the store (ingested with 85 x 12
stripes/sub-stripes, overriding the catalogue's 340 x 3) and the single file are built once and
cached under ``$QENGINE_CACHE/bench`` (default ``~/.cache/qengine/bench``).

Run as ``qengine bench --suite worker [--worker-objects N] [--worker-reps R] [--worker-calls C]``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CATALOG = "lsst_dr"
DATABASE = "dp02"
TABLE = "Object"
SEED = 42
GEN_BATCH = 200_000
ROW_GROUP_ROWS = 100_000          # IngestOptions' default row group size
WORKER_THREADS = 2                # `qengine worker` default (scan lane)
WORKER_MEMORY = "2GB"
INTERACTIVE_THREADS = 1           # Executor defaults for the interactive lane
INTERACTIVE_MEMORY = "512MB"
BATCH_ROWS = 65_536               # the worker's default batch size
SMALL_BATCH = 8_192               # diagnostic: smaller gRPC messages


def _worker_batch_rows() -> int:
    """The batch size the worker streams when the client asks for none (its default)."""
    from worker.executor import QueryRequest

    return QueryRequest.__dataclass_fields__["batch_rows"].default

TARGET_ADDED_MS = 3.0
TARGET_STREAM = 0.8
TARGET_AGG = 1.15

STREAM_COLUMNS = [                 # the ~20-column subset of the streaming test
    "objectId", "coord_ra", "coord_dec", "tract", "patch", "detect_isPrimary", "refExtendedness",
    "u_psfFlux", "g_psfFlux", "r_psfFlux", "i_psfFlux", "z_psfFlux", "y_psfFlux",
    "g_psfFluxErr", "r_psfFluxErr", "i_psfFluxErr", "g_cModelFlux", "r_cModelFlux",
    "i_cModelFlux", "r_extendedness",
]
AGG_QUERIES = {
    "count/avg/max": "SELECT count(*) AS n, avg(g_psfFlux) AS g, max(coord_dec) AS d FROM {T}",
    "GROUP BY dec band": ("SELECT CAST(floor(coord_dec / 10) AS INTEGER) AS band, count(*) AS n, "
                          "avg(r_psfFlux) AS r FROM {T} GROUP BY band ORDER BY band"),
}


def _log(msg: str) -> None:
    print(f"worker-bench: {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    env = os.environ.get("QENGINE_CACHE")
    return Path(env) / "bench" if env else Path.home() / ".cache" / "qengine" / "bench"


# ------------------------------------------------------------------------------ data
@dataclass
class Data:
    root: Path                  # the store (data root of the worker)
    single: Path                # the same rows in one Parquet file
    files: list[Path]           # the store's data files of dp02.Object
    rows: int
    chunks: list[int]           # chunk ids holding rows
    all_chunks: int             # chunks of the 85 x 12 chunker
    single_bytes: int
    store_bytes: int
    row_groups: int


def _generate(dest: Path, n: int, progress: bool) -> list[Path]:
    from catalogs.generate import generate

    marker = dest / ".complete"
    if not marker.exists():
        if dest.exists():
            shutil.rmtree(dest)
        tmp = Path(tempfile.mkdtemp(prefix=".input.", dir=dest.parent))
        t0 = time.perf_counter()
        _log(f"generating {CATALOG} Object for {n:,} objects (once; cached in {dest})")
        generate(CATALOG, n, tmp, seed=SEED, batch_size=GEN_BATCH, tables=[TABLE], progress=progress)
        tmp.rename(dest)
        marker.write_text(json.dumps({"objects": n, "seed": SEED, "seconds": time.perf_counter() - t0}))
    return sorted((dest / TABLE).glob("part-*.parquet"))


def _ingest(dest: Path, inputs: list[Path]) -> None:
    from catalogs.generate import _resolve_catalog
    from partitioner.ingest import IngestOptions, ingest
    from qengine.catalog import Partitioning

    if (dest / ".complete").exists():
        return
    if dest.exists():
        shutil.rmtree(dest)
    tmp = Path(tempfile.mkdtemp(prefix=".store.", dir=dest.parent))
    table = _resolve_catalog(CATALOG).tables[TABLE]
    _log(f"ingesting into {dest} with 85 stripes x 12 sub-stripes (once; cached)")
    res = ingest(tmp, DATABASE, table, inputs, partitioning=Partitioning(85, 12, 0.01667),
                 options=IngestOptions(progress=False))
    _log(res.summary())
    tmp.rename(dest)
    (dest / ".complete").write_text(res.summary())


def _write_single(dest: Path, files: list[Path]) -> None:
    """The store's data rows, in the same order, as ONE file written like the store writes
    (pyarrow, zstd level 1, 100k-row groups, statistics, dictionary for strings only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if dest.exists():
        return
    schema = pq.read_schema(files[0])
    dictionary = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    tmp = dest.with_suffix(".tmp")
    _log(f"writing the single-file baseline {dest}")
    with pq.ParquetWriter(str(tmp), schema, compression="zstd", compression_level=1,
                          use_dictionary=dictionary, write_statistics=True) as w:
        pending: list = []
        held = 0
        for f in files:
            for b in pq.ParquetFile(f).iter_batches(batch_size=ROW_GROUP_ROWS):
                pending.append(b)
                held += b.num_rows
                while held >= ROW_GROUP_ROWS:
                    t = pa.Table.from_batches(pending, schema=schema)
                    w.write_table(t.slice(0, ROW_GROUP_ROWS), row_group_size=ROW_GROUP_ROWS)
                    rest = t.slice(ROW_GROUP_ROWS)
                    pending, held = rest.to_batches(), rest.num_rows
        if held:
            w.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=ROW_GROUP_ROWS)
    tmp.replace(dest)


def prepare(n: int, progress: bool = True) -> Data:
    import pyarrow.parquet as pq

    from qengine.chunker import Chunker
    from qengine.store import load_manifest, table_dir

    base = cache_root() / f"worker-{n}-s{SEED}"
    base.mkdir(parents=True, exist_ok=True)
    inputs = _generate(base / "input", n, progress)
    _ingest(base / "store", inputs)
    root = base / "store"
    tdir = table_dir(root, DATABASE, TABLE)
    m = load_manifest(tdir)
    entries = sorted(m.files_of("data"), key=lambda f: f.first_chunk)
    files = [tdir / f.path for f in entries]
    single = base / "single.parquet"
    _write_single(single, files)
    meta = pq.read_metadata(single)
    return Data(root=root, single=single, files=files, rows=sum(f.rows for f in entries),
                chunks=m.chunk_ids(), all_chunks=len(Chunker(85, 12).all_chunks()),
                single_bytes=single.stat().st_size, store_bytes=sum(f.bytes for f in entries),
                row_groups=meta.num_row_groups)


# ------------------------------------------------------------------------------ worker
class WorkerProc:
    """A real ``qengine worker`` process on an ephemeral loopback port, with a shared secret."""

    def __init__(self, root: Path, threads: int = WORKER_THREADS) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="qe-worker-bench-"))
        port_file = self.dir / "port"
        secret = uuid.uuid4().hex
        (self.dir / "secret").write_text(secret)
        cmd = [sys.executable, "-m", "qengine.cli", "worker", "--data", str(root), "--port", "0",
               "--port-file", str(port_file), "--secret-file", str(self.dir / "secret"),
               "--threads", str(threads), "--memory-limit", WORKER_MEMORY]
        self.log = open(self.dir / "stderr", "w+")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(cmd, stderr=self.log)
        deadline = time.monotonic() + 120
        while not port_file.exists():
            if self.proc.poll() is not None:
                self.log.seek(0)
                raise RuntimeError(f"worker exited: {self.log.read()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("worker did not start within 120 s")
            time.sleep(0.02)
        self.pid = self.proc.pid
        self.address = f"127.0.0.1:{int(port_file.read_text())}"
        self.secret = secret

    def client(self):
        from qengine.workerclient import WorkerClient

        return WorkerClient(self.address, self.secret)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def _lane(threads: int, memory: str, background: bool = False):
    """An in-process DuckDB configured like a worker lane (threads, memory, footer cache, and for
    the interactive lane the allocator's background threads)."""
    import duckdb

    con = duckdb.connect(config={"threads": threads, "memory_limit": memory,
                                 "allocator_background_threads": background})
    con.execute("SET parquet_metadata_cache = true")
    return con


def _bound_filter(d: Data, chunks: list[int]) -> str:
    """How the worker binds a chunk list (its WHERE clause), for the notes."""
    import re

    from worker.inventory import Inventory, bind_sql

    sql = bind_sql(Inventory(d.root), f"SELECT * FROM {{{{{DATABASE}.{TABLE}}}}}", chunks).sql
    m = re.search(r"\bWHERE (.*)\)\s*$", sql, re.DOTALL)
    cond = m.group(1) if m else sql
    return cond if len(cond) <= 90 else f"{cond[:60]} ... ({len(cond):,} characters)"


def _drain(reader) -> int:
    rows = 0
    while True:
        try:
            rows += reader.read_next_batch().num_rows
        except StopIteration:
            return rows


def _proc_cpu(pid: int | None) -> float:
    """CPU seconds used so far by process ``pid`` (all its threads; ns precision from
    /proc/<pid>/task/*/schedstat), or 0 when None or unavailable."""
    if pid is None:
        return 0.0
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def _proc_cpu_total(pid: int | None) -> float:
    """CPU seconds used so far by process ``pid`` including threads that have exited (the
    worker's per-query threads), from /proc/<pid>/stat (10 ms ticks): for runs of 100 ms and more."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _timed(fn: Callable[[], object], pid: int | None = None,
           cpu_of: Callable[[int | None], float] = _proc_cpu) -> tuple[float, float, object]:
    """Wall seconds, CPU seconds (this process + process ``pid``) and the result of ``fn()``."""
    r0 = cpu_of(pid)
    c0 = time.process_time()
    t0 = time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0 + (cpu_of(pid) - r0 if pid is not None else 0.0)
    return wall, cpu, out


def _interleave(variants: dict[str, Callable[[], object]], reps: int, remote: dict[str, int] | None = None,
                cpu_of: Callable[[int | None], float] = _proc_cpu_total,
                ) -> tuple[dict[str, list[float]], dict[str, list[float]], dict]:
    """Run every variant ``reps`` times, interleaved, rotating the order each round; wall and
    CPU times per run (``remote`` maps the variants that run in another process to its pid)."""
    names = list(variants)
    remote = remote or {}
    times: dict[str, list[float]] = {k: [] for k in names}
    cpus: dict[str, list[float]] = {k: [] for k in names}
    last: dict = {}
    for r in range(reps):
        for k in names[r % len(names):] + names[: r % len(names)]:
            dt, cpu, last[k] = _timed(variants[k], remote.get(k), cpu_of)
            times[k].append(dt)
            cpus[k].append(cpu)
        _log(f"      round {r + 1}: " + ", ".join(
            f"{k} {times[k][-1] * 1e3:.0f} ms ({cpus[k][-1] * 1e3:.0f} CPU)" for k in names))
    return times, cpus, last


def _paired_ratio(a: list[float], b: list[float]) -> float:
    """Median over rounds of a/b, each round's two runs measured next to each other."""
    return float(np.median(np.asarray(a) / np.asarray(b)))


def _pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def _med(xs: list[float]) -> float:
    return float(np.median(np.asarray(xs)))


def _yes(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


# ------------------------------------------------------------------------------ measurements
def point_queries(d: Data, client, n_calls: int, pid: int) -> tuple[str, dict]:
    """(1) per-call overhead of a one-chunk point query."""
    from qengine import duck
    from qengine.prefetch import on_new_thread
    from worker.executor import Executor, QueryRequest, QueryStats
    from worker.inventory import Inventory, bind_sql

    con = _lane(INTERACTIVE_THREADS, INTERACTIVE_MEMORY, background=True)
    # n_calls random objects (each with its chunk); the same list for every path.
    files = ", ".join(f"'{f}'" for f in d.files)
    picks = con.sql(f"SELECT objectId, chunkId FROM read_parquet([{files}]) "
                    f"USING SAMPLE {n_calls} ROWS (reservoir, {SEED})").fetchall()
    inv = Inventory(d.root)
    sql = "SELECT * FROM {{%s.%s}} WHERE objectId = %d"
    bound = [bind_sql(inv, sql % (DATABASE, TABLE, oid), [cid]).sql for oid, cid in picks]
    ex = Executor(inv, threads=WORKER_THREADS, memory_limit=WORKER_MEMORY)

    def via_worker(i: int) -> int:  # the czar's path for interactive queries: the unary Query call
        oid, cid = picks[i]
        return client.execute_small(sql % (DATABASE, TABLE, oid), chunk_ids=[cid], lane="interactive").num_rows

    def via_stream(i: int) -> int:
        oid, cid = picks[i]
        return client.query(sql % (DATABASE, TABLE, oid), chunk_ids=[cid], lane="interactive").num_rows

    def via_duckdb(i: int) -> int:  # one bind, result materialised: the fastest in-process way
        return on_new_thread(lambda: duck.arrow_table(con, bound[i]).num_rows)

    def via_executor(i: int) -> int:
        oid, cid = picks[i]
        req = QueryRequest(query_id=uuid.uuid4().hex, sql=sql % (DATABASE, TABLE, oid), chunk_ids=[cid],
                           uploads={}, lane="interactive")
        return on_new_thread(lambda: sum(b.num_rows for b in ex.execute(req, QueryStats())))

    def via_trivial(i: int) -> int:
        return client.execute_small("SELECT 1 AS x", chunk_ids=[], lane="interactive").num_rows

    def via_trivial_local(i: int) -> int:
        return on_new_thread(lambda: duck.arrow_table(con, "SELECT 1 AS x").num_rows)

    def via_health(i: int) -> int:
        client.health()
        return 1

    W, B, E = "worker (gRPC `Query`)", "DuckDB in-process", "worker `Executor` in-process (no gRPC)"
    S = "worker (gRPC streaming `Execute`)"
    TW, TB = "worker (gRPC `Query`), `SELECT 1`", "DuckDB in-process, `SELECT 1`"
    variants = {W: via_worker, S: via_stream, B: via_duckdb, E: via_executor, TW: via_trivial,
                TB: via_trivial_local, "gRPC `Health()` (unary RPC)": via_health}
    for i in range(min(10, n_calls)):           # warm up every path
        for fn in variants.values():
            fn(i)
    remote = {W: pid, S: pid, TW: pid, "gRPC `Health()` (unary RPC)": pid}
    times: dict[str, list[float]] = {k: [] for k in variants}
    cpus: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    bad = 0
    # A random order per call, not a rotation: the paths query the same object one after another,
    # and whichever reads its row group first pays for the cold caches (the next path finds the
    # data in the CPU's shared L3 cache). Rotating a fixed cycle made the worker's Query path
    # first among the four point-query paths in 4 of 7 calls; a random order makes it 1 in 4.
    order_rng = np.random.default_rng(SEED)
    for i in range(n_calls):
        rows = {}
        for k in order_rng.permutation(names):
            # the worker's CPU from /proc/<pid>/stat: it counts the per-query threads that have
            # exited (10 ms ticks, so averaged over the calls below, not taken per call)
            dt, cpu, rows[k] = _timed(lambda fn=variants[k], i=i: fn(i), remote.get(k), _proc_cpu_total)
            times[k].append(dt)
            cpus[k].append(cpu)
        bad += rows[W] != 1 or rows[S] != 1 or rows[B] != 1 or rows[E] != 1
    ex.close()
    con.close()
    if bad:
        raise RuntimeError(f"point queries: {bad} of {n_calls} calls did not return exactly one row")
    ms = {k: np.asarray(v) * 1e3 for k, v in times.items()}
    cms = {k: np.asarray(v) * 1e3 for k, v in cpus.items()}
    p50 = {k: float(np.median(v)) for k, v in ms.items()}
    p95 = {k: float(np.percentile(v, 95)) for k, v in ms.items()}
    base_of = {W: B, S: B, E: B, TW: TB}
    paired = {k: float(np.median(ms[k] - ms[b])) for k, b in base_of.items()}
    cpu50 = {k: float(np.mean(v)) for k, v in cms.items()}
    cpu_paired = {k: float(np.mean(cms[k] - cms[b])) for k, b in base_of.items()}
    added = paired[W]
    out = [("| path | p50 ms | p95 ms | added: p50 - p50 of baseline (ms) | added: median of paired differences (ms) "
           "| CPU ms per call, mean | added CPU, mean of paired differences (ms) |"),
           "|---|---:|---:|---:|---:|---:|---:|"]
    for k in names:
        a = f"{p50[k] - p50[base_of[k]]:+.2f}" if k in base_of else "-"
        b = f"{paired[k]:+.2f}" if k in paired else "-"
        c = f"{cpu_paired[k]:+.2f}" if k in cpu_paired else "-"
        out.append(f"| {k} | {p50[k]:.2f} | {p95[k]:.2f} | {a} | {b} | {cpu50[k]:.2f} | {c} |")
    text = "\n".join(out) + (
        f"\n\n{n_calls} calls per path, each on a random object (`SELECT * FROM {{{{dp02.Object}}}} WHERE "
        f"objectId = X`, `chunk_ids=[its chunk]`, lane `interactive`), the paths interleaved call by call "
        f"(in a random order each call: the first path to read an object's row group finds the CPU "
        f"caches cold, the next ones warm). The worker is called as the czar calls it for interactive queries: the unary "
        f"`Query` RPC (whole result in one message); the streaming `Execute` is shown too. The DuckDB "
        f"baseline runs the SQL the worker binds (precomputed with `bind_sql`: "
        f"`read_parquet([<the chunk's file>]) WHERE chunkId = c`) on one persistent connection "
        f"with {INTERACTIVE_THREADS} thread / {INTERACTIVE_MEMORY}, the Parquet footer cache and the allocator's "
        f"background threads, like the interactive lane, the fastest way in process (`qengine/duck.py`'s "
        f"`arrow_table`, as the worker: one bind, Arrow out directly). The "
        f"`Executor` path is the worker's own code without gRPC; `SELECT 1` (no chunks, worker vs "
        f"in-process) isolates the fixed cost of a `Query` call, `Health()` that of a bare unary RPC. "
        f"\"Paired\" is the median over calls of (path - baseline) on the same object, run back to back, "
        f"which cancels most of the point query's own variance. CPU is this process's CPU time plus, for "
        f"the gRPC paths, the worker process's (/proc/<pid>/stat, which counts its per-query threads "
        f"after they exit; in 10 ms ticks, hence means over the calls rather than medians): unlike wall "
        f"time it hardly depends on what else the shared machine runs. The in-process paths run each "
        f"call on a new thread, as the worker does (`qengine.prefetch.on_new_thread`: DuckDB is faster "
        f"there than on a long-lived thread). "
        f"**Added at p50 (paired): {added:.2f} ms; `SELECT 1`: {paired[TW]:.2f} ms** (target < "
        f"{TARGET_ADDED_MS:g} ms: {_yes(added < TARGET_ADDED_MS)}).\n")
    return text, {"p50": p50, "p95": p95, "paired": paired, "added_ms": added, "cpu_paired": cpu_paired}


def streaming(d: Data, client, reps: int, pid: int) -> tuple[str, dict]:
    """(2) rows/s of a full scan streamed to the client vs DuckDB in-process over the same files."""
    from qengine import duck

    con = _lane(WORKER_THREADS, WORKER_MEMORY)
    files = ", ".join(f"'{f}'" for f in d.files)
    cols = ", ".join(STREAM_COLUMNS)
    default = _worker_batch_rows()
    alt = BATCH_ROWS if default != BATCH_ROWS else SMALL_BATCH
    rows_out = []
    results = {}
    for label, proj in (("all 85 columns", "*"), (f"{len(STREAM_COLUMNS)} columns", cols)):
        wsql = f"SELECT {proj} FROM {{{{{DATABASE}.{TABLE}}}}}"
        dsql = f"SELECT {proj} FROM read_parquet([{files}])"
        variants = {
            "worker": lambda w=wsql: sum(b.num_rows for b in client.execute(w, lane="scan")),
            "worker_alt": lambda w=wsql: sum(b.num_rows for b in client.execute(w, lane="scan", batch_rows=alt)),
            "duckdb": lambda q=dsql: _drain(duck.arrow_reader(con, q, BATCH_ROWS)),
        }
        for fn in variants.values():            # warm up (page cache, connections)
            fn()
        gib = sum(b.nbytes for b in client.execute(wsql, lane="scan")) / 2**30
        _log(f"    streaming {label}")
        times, cpus, last = _interleave(variants, reps, {"worker": pid, "worker_alt": pid})
        for k, v in last.items():
            if v != d.rows:
                raise RuntimeError(f"streaming {label}: {k} returned {v:,} rows, expected {d.rows:,}")
        med = {k: _med(v) for k, v in times.items()}
        ratio = _paired_ratio(times["duckdb"], times["worker"])
        ratio_alt = _paired_ratio(times["duckdb"], times["worker_alt"])
        cpu = {k: _med(v) for k, v in cpus.items()}
        results[label] = {"median_s": med, "ratio": ratio, "ratio_alt": ratio_alt, "all": times, "cpu": cpu, "gib": gib,
                          "default_rows": default, "alt_rows": alt}
        rows_out.append(f"| {label} | {d.rows / med['worker']:,.0f} | {d.rows / med['worker_alt']:,.0f} | "
                        f"{d.rows / med['duckdb']:,.0f} | {ratio:.2f}x | {ratio_alt:.2f}x | "
                        f"{cpu['worker']:.2f} / {cpu['worker_alt']:.2f} / {cpu['duckdb']:.2f} | "
                        f"{_yes(ratio >= TARGET_STREAM)} |")
    con.close()
    text = (f"| projection | worker -> client rows/s (its default {default:,}-row batches) | worker, "
            f"{alt:,}-row batches | DuckDB in-process rows/s | ratio | ratio, {alt:,}-row "
            f"batches | CPU s per scan: worker+client {default:,} / {alt:,} / DuckDB | target >= {TARGET_STREAM}x |"
            "\n|---|---:|---:|---:|---:|---:|---:|---|\n"
            + "\n".join(rows_out) + "\n\n"
            f"`SELECT <projection> FROM {{{{dp02.Object}}}}` over every chunk (`all_chunks`, lane `scan`), every "
            f"batch consumed by the client, vs a one-bind Arrow reader (`qengine/duck.py`, as the worker uses) in "
            f"{BATCH_ROWS:,}-row batches over the same {len(d.files)} store "
            f"files in-process ({WORKER_THREADS} DuckDB threads both). The {len(STREAM_COLUMNS)}-column subset is "
            f"{', '.join(STREAM_COLUMNS)}. Rates from medians of {reps} interleaved rounds; ratios are "
            f"medians of the per-round ratios (worker rows/s / DuckDB rows/s). The {alt:,}-row column "
            f"only changes the client's `batch_rows` (a diagnostic: the message size; the worker fetches from "
            f"DuckDB in {BATCH_ROWS:,}-row batches either way). CPU: this process's CPU time plus the worker "
            f"process's (/proc/<pid>/stat: its exited per-query threads included), per scan.\n")
    return text, results


def streaming_one_thread(d: Data, reps: int) -> tuple[str, dict]:
    """(2b) the same `SELECT *` scan with ONE DuckDB thread on each side: a core is left for the
    transport, so this shows whether the 2-thread shortfall is the cores or the transport itself."""
    from qengine import duck

    w = WorkerProc(d.root, threads=1)
    con = _lane(1, WORKER_MEMORY)
    try:
        with w.client() as client:
            client.health(timeout=30)
            files = ", ".join(f"'{f}'" for f in d.files)
            wsql, dsql = f"SELECT * FROM {{{{{DATABASE}.{TABLE}}}}}", f"SELECT * FROM read_parquet([{files}])"
            variants = {
                "worker": lambda: sum(b.num_rows for b in client.execute(wsql, lane="scan")),
                "duckdb": lambda: _drain(duck.arrow_reader(con, dsql, BATCH_ROWS)),
            }
            for fn in variants.values():
                fn()
            _log("    streaming all 85 columns, 1 DuckDB thread each")
            times, cpus, last = _interleave(variants, reps, {"worker": w.pid})
    finally:
        con.close()
        w.stop()
    for k, v in last.items():
        if v != d.rows:
            raise RuntimeError(f"1-thread streaming: {k} returned {v:,} rows, expected {d.rows:,}")
    med = {k: _med(v) for k, v in times.items()}
    cpu = {k: _med(v) for k, v in cpus.items()}
    ratio = _paired_ratio(times["duckdb"], times["worker"])
    text = (f"Diagnostic, the same `SELECT *` with **one DuckDB thread on each side** (a second "
            f"`qengine worker --threads 1`; in-process DuckDB with 1 thread), so that one of the "
            f"{os.cpu_count()} cores is left for the transport: worker {d.rows / med['worker']:,.0f} rows/s, DuckDB "
            f"{d.rows / med['duckdb']:,.0f} rows/s, ratio **{ratio:.2f}x**; CPU s per scan worker+client "
            f"{cpu['worker']:.2f} vs DuckDB {cpu['duckdb']:.2f} ({reps} interleaved rounds).\n")
    return text, {"ratio": ratio, "median_s": med, "cpu": cpu, "all": times}


def transport(d: Data, reps: int = 3) -> tuple[str, dict]:
    """The ceiling: Python gRPC streaming ready-made bytes between two processes, no encoding at all."""
    import grpc
    import pyarrow.parquet as pq

    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.worker_bench", "rawserver"],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 512 << 20)])
        call = ch.unary_stream("/bench.Raw/Stream", request_serializer=None, response_deserializer=None)
        total = 1 << 30
        out = {}
        for mib in (30, 4, 1):
            size = mib << 20
            req = f"{total // size},{size}".encode()
            sum(len(m) for m in call(req))      # warm up
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                got = sum(len(m) for m in call(req))
                ts.append(time.perf_counter() - t0)
            out[mib] = got / _med(ts) / 2**20
        ch.close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    # Arrow bytes per row of SELECT * (the IPC size of the first batch of the store).
    first = pq.ParquetFile(d.files[0]).read_row_group(0).slice(0, BATCH_ROWS)
    per_row = first.nbytes / first.num_rows
    text = (f"| message size | MiB/s | = `SELECT *` rows/s at {per_row:.0f} Arrow bytes/row |\n|---:|---:|---:|\n"
            + "\n".join(f"| {mib} MiB | {r:,.0f} | {r * 2**20 / per_row:,.0f} |" for mib, r in out.items())
            + f"\n\n1 GiB streamed as ready-made `bytes` messages from a bare Python gRPC server process "
              f"(identity serializers, no Arrow, no protobuf) to this process; median of {reps}. This is an "
              f"upper bound for any Python-gRPC worker on this machine, before DuckDB (which needs the same "
              f"{os.cpu_count()} cores) produces a single row.\n")
    return text, {"mib_s": out, "bytes_per_row": per_row}


def _rawserver() -> None:
    from concurrent import futures

    import grpc

    def stream(req, ctx):
        n, size = map(int, req.decode().split(","))
        payload = b"x" * size
        for _ in range(n):
            yield payload

    server = grpc.server(futures.ThreadPoolExecutor(4), options=[("grpc.max_send_message_length", 64 << 20)])
    handler = grpc.unary_stream_rpc_method_handler(stream, request_deserializer=None, response_serializer=None)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Raw", {"Stream": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def aggregates(d: Data, client, reps: int, pid: int) -> tuple[str, dict]:
    """(3) full-scan aggregates over all chunks: worker vs one DuckDB over the single file."""
    from qengine import duck

    con = _lane(WORKER_THREADS, WORKER_MEMORY)
    files = ", ".join(f"'{f}'" for f in d.files)
    lines = [("| query | worker, all chunks | worker, explicit list of all chunks | DuckDB over the store files "
              "| DuckDB over one file | ratio worker/one file | ratio, explicit list | CPU ratio worker/one file "
              "| target <= 1.15x |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    results = {}
    for label, q in AGG_QUERIES.items():
        wsql = q.format(T=f"{{{{{DATABASE}.{TABLE}}}}}")
        ssql = q.format(T=f"read_parquet('{d.single}')")
        fsql = q.format(T=f"read_parquet([{files}])")
        variants = {
            "worker": lambda w=wsql: client.query(w, lane="scan"),
            "worker_list": lambda w=wsql: client.query(w, lane="scan", chunk_ids=d.chunks),
            "store_files": lambda q=fsql: duck.arrow_table(con, q),
            "single": lambda q=ssql: duck.arrow_table(con, q),
        }
        for fn in variants.values():           # warm up
            fn()
        _log(f"    aggregate {label}")
        times, cpus, last = _interleave(variants, reps, {"worker": pid, "worker_list": pid})
        ref = last["single"].to_pylist()
        for k in ("worker", "worker_list", "store_files"):
            got = last[k].to_pylist()
            if len(got) != len(ref) or any(
                    any(abs(float(a[c]) - float(b[c])) > 1e-6 * max(1.0, abs(float(b[c]))) for c in b)
                    for a, b in zip(got, ref)):
                raise RuntimeError(f"aggregate {label}: {k} disagrees with the single-file answer")
        med = {k: _med(v) for k, v in times.items()}
        ratio = _paired_ratio(times["worker"], times["single"])
        ratio_list = _paired_ratio(times["worker_list"], times["single"])
        cpu_ratio = _paired_ratio(cpus["worker"], cpus["single"])
        results[label] = {"median_s": med, "ratio": ratio, "ratio_list": ratio_list, "all": times,
                          "cpu_ratio": cpu_ratio}
        lines.append(f"| {label} | {med['worker'] * 1e3:.0f} ms | {med['worker_list'] * 1e3:.0f} ms | "
                     f"{med['store_files'] * 1e3:.0f} ms | {med['single'] * 1e3:.0f} ms | {ratio:.2f}x | "
                     f"{ratio_list:.2f}x | {cpu_ratio:.2f}x | {_yes(ratio <= TARGET_AGG)} |")
    con.close()
    text = "\n".join(lines) + (
        "\n\nQueries: " + "; ".join(f"{k}: `{v.format(T='T')}`" for k, v in AGG_QUERIES.items()) +
        f". Worker: lane `scan`, {WORKER_THREADS} threads, either `all_chunks` (no chunk filter) or the "
        f"explicit list of the {len(d.chunks):,} chunk ids, as the czar sends them (bound as `WHERE "
        f"{_bound_filter(d, d.chunks)}`); "
        f"its time includes the RPC and reading the result. DuckDB in-process: one connection with "
        f"{WORKER_THREADS} threads / {WORKER_MEMORY} and the Parquet footer cache, like the scan lane. Times are medians of {reps} interleaved rounds, ratios "
        f"medians of the per-round ratios (the CPU ratio counts the worker's and this process's CPU "
        f"time against DuckDB's); answers checked equal.\n")
    return text, results


def breakdown(d: Data) -> tuple[str, dict]:
    """Costs of the worker's steps, timed in-process (median of many calls)."""
    import resource

    import pyarrow as pa

    from qengine.proto.framing import deframe_result, frame_record_batch
    from worker.executor import Executor
    from worker.inventory import Inventory, bind_sql

    inv = Inventory(d.root)
    ex = Executor(inv, threads=WORKER_THREADS, memory_limit=WORKER_MEMORY)
    one = [d.chunks[len(d.chunks) // 2]]
    sql = f"SELECT * FROM {{{{{DATABASE}.{TABLE}}}}} WHERE objectId = 1"
    bound_one = bind_sql(inv, sql, one).sql
    bound_all = bind_sql(inv, sql, d.chunks).sql
    scattered = d.chunks[::2]                 # not runs of held chunks: the worker binds an IN list
    bound_sc = bind_sql(inv, sql, scattered).sql

    def med_of(fn: Callable[[], object], n: int) -> float:
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return _med(ts)

    def cursor_cycle() -> None:
        ex._lanes["interactive"].cursor().close()

    from worker import verdicts
    from worker.sandbox import check_worker_sql

    lane = ex._lanes["scan"]
    files = ", ".join(f"'{f}'" for f in d.files)
    point = lane.sql(bound_one.replace("objectId = 1", f"chunkId = {one[0]}") + " LIMIT 1").to_arrow_table()
    point = point.to_batches()[0]
    msg1 = frame_record_batch(point)

    def decode(msg: bytes) -> list:
        view, _ = deframe_result(msg)
        return list(pa.ipc.open_stream(pa.py_buffer(view)))
    rows = [
        ("`Inventory.held_chunks()` (every `Execute` checks its chunks against it)", med_of(inv.held_chunks, 200)),
        ("`bind_sql`, 1 chunk", med_of(lambda: bind_sql(inv, sql, one), 200)),
        (f"`bind_sql`, all {len(d.chunks):,} chunks", med_of(lambda: bind_sql(inv, sql, d.chunks), 20)),
        (f"`bind_sql`, every other chunk ({len(scattered):,})", med_of(lambda: bind_sql(inv, sql, scattered), 20)),
        ("sandbox check of the SQL as sent (`check_worker_sql`: DuckDB's parser)",
         med_of(lambda: check_worker_sql(sql), 50)),
        ("sandbox check, a shape that passed before (`verdicts.check`)", med_of(lambda: verdicts.check(sql), 200)),
        ("`con.sql(...)` (parse + bind, no execution), all-chunks SQL", med_of(lambda: lane.sql(bound_all), 10)),
        ("`con.sql(...)`, every-other-chunk SQL", med_of(lambda: lane.sql(bound_sc), 10)),
        ("lane `cursor()` + `close()`", med_of(cursor_cycle, 200)),
        (f"`frame_record_batch` of the 1-row point-query result ({len(msg1):,} bytes: the 85-field schema "
         f"in every message)", med_of(lambda: frame_record_batch(point), 200)),
        ("client decode of it (`deframe_result` + `open_stream` + read)", med_of(lambda: decode(msg1), 200)),
    ]
    cur = ex._lanes["scan"].cursor()
    info: dict = {"cursor_footer_cache": bool(
        cur.sql("SELECT current_setting('parquet_metadata_cache')").fetchall()[0][0])}
    cur.close()
    faults_rows: list[str] = []
    for n in (BATCH_ROWS, SMALL_BATCH):
        batch = lane.sql(f"SELECT * FROM read_parquet([{files}]) LIMIT {n}").to_arrow_table().combine_chunks().to_batches()[0]
        wire = frame_record_batch(batch)
        mib = len(wire) / 2**20
        reps = 10 if n == BATCH_ROWS else 40
        steps = [
            ("`frame_record_batch` (the IPC stream written straight into the gRPC message: one copy)",
             med_of(lambda b=batch: frame_record_batch(b), reps)),
            ("client `deframe_result` + `open_stream` + read (views of the received bytes)",
             med_of(lambda x=wire: decode(x), reps)),
        ]
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            frame_record_batch(batch)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 5
        info[n] = {"mib": mib, "frame": steps[0][1], "decode": steps[1][1], "faults": faults}
        for k, v in steps:
            rows.append((f"{n:,}-row `SELECT *` batch ({mib:.1f} MiB): {k}; {mib / v:,.0f} MiB/s", v))
        faults_rows.append(f"{n:,}-row batch ({mib:.1f} MiB): {faults:,.0f} minor page faults per "
                           f"`frame_record_batch`")
    ex.close()
    text = ("| step | median ms |\n|---|---:|\n" + "\n".join(f"| {k} | {v * 1e3:.3f} |" for k, v in rows)
            + "\n\n" + "; ".join(faults_rows) + ".\n")
    return text, info


def findings(r1: dict, r2: dict, r3: dict, r5: dict, r4: dict) -> str:
    """What the numbers above say about the three targets (computed, so it stays true)."""
    big = r4[BATCH_ROWS]
    lines = []
    tw, w = "worker (gRPC `Query`), `SELECT 1`", "worker (gRPC `Query`)"
    lines.append(
        f"- **Per call**: the fixed cost of a `Query` call (`SELECT 1`, no chunks) is "
        f"{r1['paired'][tw]:+.2f} ms wall / {r1['cpu_paired'][tw]:+.2f} ms CPU over in-process DuckDB; a "
        f"bare unary `Health()` RPC alone takes {r1['p50']['gRPC `Health()` (unary RPC)']:.2f} ms. The point "
        f"query adds {r1['paired'][w]:+.2f} ms wall / {r1['cpu_paired'][w]:+.2f} ms CPU: the rest is the "
        f"query itself on the worker (`Executor` path: {r1['cpu_paired']['worker `Executor` in-process (no gRPC)']:+.2f} "
        f"ms CPU) and the machine's load (wall).")
    if not r4["cursor_footer_cache"]:
        lines.append(
            "- **Footer cache off for every query**: `worker/executor.py` `Executor._open_lane` runs "
            "`SET parquet_metadata_cache = true`, which is session-local in DuckDB, and each query runs on "
            "`lane.cursor()`, a new session where it is `false` (checked in this run). The baselines here "
            "run on the connection that has it. `SET GLOBAL parquet_metadata_cache = true` makes cursors "
            "inherit it.")
    s_all = r2.get("all 85 columns")
    if s_all:
        gib = s_all["gib"]
        frame_s = big["frame"] / (big["mib"] / 1024) * gib
        raw_s = gib * 1024 / r5["mib_s"][4]
        lines.append(
            f"- **Streaming**: the `SELECT *` ratio is {s_all['ratio']:.2f}x with the worker's default "
            f"{s_all['default_rows']:,}-row messages ({s_all['ratio_alt']:.2f}x with {s_all['alt_rows']:,}-row ones). "
            f"The scan moves {gib:.2f} GiB of Arrow. In CPU it costs the worker and client "
            f"{s_all['cpu']['worker']:.2f} s against {s_all['cpu']['duckdb']:.2f} s for DuckDB in-process "
            f"({s_all['cpu']['worker'] / s_all['cpu']['duckdb']:.2f}x). The extra is the transport: writing the "
            f"messages ({big['frame'] * 1e3:.1f} ms per {big['mib']:.0f} MiB, so ~{frame_s:.1f} s for the scan) and "
            f"Python gRPC itself, which alone moves {r5['mib_s'][4]:,.0f} MiB/s in 4 MiB messages between two "
            f"processes (~{raw_s:.1f} s of wall for this scan before DuckDB produces a row, with both "
            f"processes busy). On {os.cpu_count()} cores that DuckDB alone already saturates, the wall ratio "
            f"tends to DuckDB's CPU over the total: the 0.8x target needs the transport to cost under a "
            f"quarter of DuckDB's own CPU, which Python gRPC on this machine does not reach for wide rows "
            f"(the {len(STREAM_COLUMNS)}-column projection moves fewer bytes per row).")
    one = r2.get("one thread")
    if one:
        c = one["cpu"]
        extra = (c["worker"] - c["duckdb"]) / c["duckdb"]
        lines.append(
            f"- **Streaming, one DuckDB thread each** (a core left free for the transport): "
            f"{one['ratio']:.2f}x; CPU {c['worker']:.2f} s (worker + client) against {c['duckdb']:.2f} s, so "
            f"moving the rows costs {extra:.1f} CPU-s for every CPU-s DuckDB spends producing them. "
            + ("With a core of its own the transport still does not keep up: the 0.8x target is out of "
               "reach for Python gRPC on this machine however its two cores are shared."
               if one["ratio"] < TARGET_STREAM else "With a core of its own the transport keeps up."))
    for label, r in r3.items():
        m = r["median_s"]
        lines.append(
            f"- **Aggregate {label}**: worker {m['worker'] * 1e3:.0f} ms vs DuckDB over the store files "
            f"{m['store_files'] * 1e3:.0f} ms and over one file {m['single'] * 1e3:.0f} ms (wall ratio "
            f"{r['ratio']:.2f}x, CPU ratio {r['cpu_ratio']:.2f}x); the store's file layout itself costs "
            f"{m['store_files'] / m['single']:.2f}x.")
    return "\n".join(lines) + "\n"


def _load() -> str:
    try:
        return " / ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def run(args: argparse.Namespace) -> tuple[str, str]:
    n = getattr(args, "worker_objects", 2_000_000)
    reps = getattr(args, "worker_reps", 7)
    calls = getattr(args, "worker_calls", 200)
    agg_reps = getattr(args, "worker_agg_reps", 25)
    from qengine.alloc import tune_for_large_messages

    tune_for_large_messages()  # as every qengine process (qengine/cli.py): this process is the client
    d = prepare(n, progress=sys.stderr.isatty())
    _log(f"{d.rows:,} rows in {len(d.chunks):,} of {d.all_chunks:,} chunks, {len(d.files)} store files "
         f"({d.store_bytes / 2**20:.0f} MiB); single file {d.single_bytes / 2**20:.0f} MiB")
    load0 = _load()
    w = WorkerProc(d.root)
    try:
        with w.client() as client:
            client.health(timeout=30)
            _log(f"worker pid {w.pid} at {w.address}")
            _log(f"(1) point queries: {calls} calls x 6 paths")
            t1, r1 = point_queries(d, client, calls, w.pid)
            _log(f"    added at p50 (paired): {r1['added_ms']:.2f} ms")
            _log(f"(2) streaming: {reps} interleaved rounds")
            t2, r2 = streaming(d, client, reps, w.pid)
            _log("    " + ", ".join(f"{k}: {v['ratio']:.2f}x" for k, v in r2.items()))
            _log(f"(3) aggregates: {agg_reps} interleaved rounds")
            t3, r3 = aggregates(d, client, agg_reps, w.pid)
            _log("    " + ", ".join(f"{k}: {v['ratio']:.2f}x" for k, v in r3.items()))
    finally:
        w.stop()
    t2b, r2b = streaming_one_thread(d, reps)
    _log(f"    1 thread each: {r2b['ratio']:.2f}x")
    t2 += "\n" + t2b
    r2["one thread"] = r2b
    _log("transport ceiling and step costs")
    t5, r5 = transport(d)
    t4, r4 = breakdown(d)
    t6 = findings(r1, r2, r3, r5, r4)
    load1 = _load()
    body = (
        f"One `qengine worker` process (gRPC on loopback, shared secret, scan lane {WORKER_THREADS} threads "
        f"/ {WORKER_MEMORY}, interactive lane {INTERACTIVE_THREADS} thread / {INTERACTIVE_MEMORY}) and "
        f"`qengine.workerclient.WorkerClient` vs DuckDB in the benchmark process. Data: LSST-DR `Object` "
        f"(`catalogs.generate`, seed {SEED}, {d.rows:,} rows, 83+2 columns) ingested with 85 stripes x 12 "
        f"sub-stripes: rows in {len(d.chunks):,} of the {d.all_chunks:,} chunks, {len(d.files)} data files "
        f"({d.store_bytes / 2**20:.0f} MiB). The single-file baseline holds the same rows in the same order "
        f"({d.single_bytes / 2**20:.0f} MiB, {d.row_groups} row groups) written like the store writes: "
        f"pyarrow, zstd level 1, {ROW_GROUP_ROWS:,}-row groups, statistics, dictionary encoding for "
        f"string columns only. Load average (1/5/15 min) {load0} at the start, {load1} at the end: the "
        f"machine is shared, so compare ratios, not absolute times.\n\n"
        f"### Per-call overhead (point query on one chunk)\n\n{t1}\n"
        f"### Streaming a full scan\n\n{t2}\n"
        f"### Full-scan aggregates over all chunks\n\n{t3}\n"
        f"### Transport ceiling: Python gRPC alone\n\n{t5}\n"
        f"### Where the time goes (in-process timings of the worker's steps)\n\n{t4}\n"
        f"### Findings\n\n{t6}"
    )
    return "Worker overhead", body


if __name__ == "__main__":
    if sys.argv[1:2] == ["rawserver"]:
        _rawserver()
        sys.exit(0)
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker-objects", type=int, default=200_000)
    ap.add_argument("--worker-reps", type=int, default=5)
    ap.add_argument("--worker-calls", type=int, default=200)
    ap.add_argument("--worker-agg-reps", type=int, default=25)
    title, text = run(ap.parse_args())
    print(f"## {title}\n{text}")
