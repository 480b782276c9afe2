"""Failover cost: a full-scan query on ``LocalCluster(workers=3, replicas=2)`` with no failure,
with one worker killed (kill -9) mid-way, and with one worker stalled (SIGSTOP) mid-way, rounds
interleaved in one run.

Data: LSST-DR ``Object`` (``catalogs.generate``, seed 42, ``--failover-objects`` rows, default
1M), ingested once into ``$QENGINE_CACHE/bench/failover-N/store`` with ~40 data files so that
placement has runs of chunks to spread (R=2 copies of each on 3 workers).

Query: a full-scan GROUP BY with a deliberately heavier per-row expression (an MD5 of a short
string per row) so that a scan lasts seconds and "mid-way" is well defined. In a failure round
the victim (a different worker each round) is killed or paused at 40% of the median no-failure
time; its part's rows are dropped and its chunks run again on their other replicas. Every
answer is checked equal to the no-failure answer. Reported: medians, the extra latency, and how
long after the fault the czar re-dispatched the chunks.

Run: ``python -m benchmarks.failover_bench [--failover-objects N] [--failover-reps R]``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

CATALOG = "lsst_dr"
DATABASE = "dp02"
TABLE = "Object"
SEED = 42
AT = 0.4  # the fault comes at this fraction of the median no-failure time
TITLE = "Failover: full scan with a worker killed or stalled mid-way"
QUERY = ("SELECT FLOOR(coord_dec) AS d, COUNT(*) AS n, SUM(r_psfFlux) AS f FROM dp02.Object "
         "WHERE LENGTH(MD5(REPEAT(CAST(r_psfFlux AS CHAR), {rep}))) = 32 GROUP BY FLOOR(coord_dec)")


def _log(msg: str) -> None:
    print(f"failover-bench: {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    env = os.environ.get("QENGINE_CACHE")
    return Path(env) / "bench" if env else Path.home() / ".cache" / "qengine" / "bench"


def _store(n: int) -> Path:
    """Generate and ingest ``n`` Objects once (cached; a partial store is redone)."""
    from catalogs.generate import _resolve_catalog, generate
    from partitioner.ingest import IngestOptions, ingest
    from qengine.store import MANIFEST, load_manifest, table_dir

    base = cache_root() / f"failover-{n}"
    store = base / "store"
    tdir = table_dir(store, DATABASE, TABLE)
    if (tdir / MANIFEST).exists() and load_manifest(tdir).rows == n:
        return store
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    tmp = Path(tempfile.mkdtemp(prefix=".work.", dir=base))
    _log(f"generating and ingesting {n:,} {CATALOG} objects into {store} (once; cached)")
    generate(CATALOG, n, tmp / "input", seed=SEED, tables=[TABLE], progress=False)
    cat = _resolve_catalog(CATALOG)
    inputs = sorted((tmp / "input" / TABLE).glob("part-*.parquet"))
    ingest(tmp / "store", DATABASE, cat.tables[TABLE], inputs, partitioning=cat.partitioning,
           options=IngestOptions(progress=False, rows_per_file=max(10_000, n // 40)))
    (tmp / "store").rename(store)
    shutil.rmtree(tmp)
    return store


def _same(a, b) -> bool:
    """Equal answers (rows in any order; sums compared to 1e-9 relative)."""
    ra = sorted(zip(*[c.to_pylist() for c in a.columns]))
    rb = sorted(zip(*[c.to_pylist() for c in b.columns]))
    if len(ra) != len(rb):
        return False
    for x, y in zip(ra, rb):
        for u, v in zip(x, y):
            if isinstance(u, float) and isinstance(v, float):
                if abs(u - v) > 1e-9 * max(abs(u), abs(v), 1.0):
                    return False
            elif u != v:
                return False
    return True


def _heal(cl, timeout: float = 30.0) -> None:
    for w in cl.workers:
        w.resume()
        if not w.alive:
            w.restart()
    deadline = time.monotonic() + timeout
    while not all(cl.czar._health.is_up(w.address) for w in cl.workers):
        if time.monotonic() > deadline:
            raise RuntimeError("workers did not come back up")
        time.sleep(0.05)


def _faulty_run(cl, sql: str, victim, fault: str, at: float) -> tuple[float, float | None, object]:
    """(seconds, seconds from the fault to the re-dispatch, answer) of one query with a fault."""
    res: dict = {}
    before = cl.czar.failovers

    def run() -> None:
        try:
            res["table"] = cl.query(sql, lang="qserv")
        except Exception as exc:  # reported below
            res["error"] = exc

    t0 = time.perf_counter()
    th = threading.Thread(target=run)
    th.start()
    time.sleep(at)
    (victim.kill if fault == "kill" else victim.pause)()
    t_fault = time.perf_counter()
    redispatch = None
    while th.is_alive():
        if redispatch is None and cl.czar.failovers > before:
            redispatch = time.perf_counter() - t_fault
        th.join(0.005)
    elapsed = time.perf_counter() - t0
    if redispatch is None and cl.czar.failovers > before:
        redispatch = float("nan")  # it happened between two polls at the very end
    if "error" in res:
        raise RuntimeError(f"query failed after a {fault}: {res['error']}")
    return elapsed, redispatch, res["table"]


def run(args: argparse.Namespace) -> tuple[str, str]:
    from czar.local import LocalCluster

    n = getattr(args, "failover_objects", 1_000_000)
    reps = getattr(args, "failover_reps", 3)
    rep = getattr(args, "failover_repeat", 60)
    threads = getattr(args, "failover_worker_threads", 1)
    store = _store(n)
    sql = QUERY.format(rep=rep)
    interval, timeout = 0.5, 1.0
    _log(f"LocalCluster(workers=3, replicas=2, threads={threads}); health every {interval} s, deadline {timeout} s")
    rows: dict[str, list] = {"none": [], "kill": [], "stop": []}
    redisp: dict[str, list] = {"kill": [], "stop": []}
    paired: dict[str, list] = {"kill": [], "stop": []}  # faulty run minus the no-failure run just before
    with LocalCluster(store, workers=3, replicas=2, threads=threads, health_interval=interval,
                      health_timeout=timeout) as cl:
        cl.query(sql, lang="qserv")  # warm-up: footers, page cache
        t0 = time.perf_counter()
        reference = cl.query(sql, lang="qserv")
        rows["none"].append(time.perf_counter() - t0)
        for i in range(reps):
            for fault in ("kill", "stop"):
                _heal(cl)
                t0 = time.perf_counter()
                ok = cl.query(sql, lang="qserv")
                rows["none"].append(time.perf_counter() - t0)
                assert _same(ok, reference), "a no-failure answer differs"
                victim = cl.workers[(2 * i + (fault == "stop")) % 3]
                at = AT * statistics.median(rows["none"])
                secs, rd, got = _faulty_run(cl, sql, victim, fault, at)
                if not _same(got, reference):
                    raise RuntimeError(f"the answer after a {fault} differs from the no-failure answer")
                rows[fault].append(secs)
                paired[fault].append(secs - rows["none"][-1])
                redisp[fault].append(rd)  # None: the victim's part had ended before the fault
                _log(f"round {i + 1}/{reps} {fault}: {secs:.2f} s (no failure {rows['none'][-1]:.2f} s), "
                     f"re-dispatched {rd if rd is None else round(rd, 3)} s after the fault")
        _heal(cl)
        failovers = cl.czar.failovers
        layout = {k: round(v / 2**20, 1) for k, v in (cl.placement.bytes_per_worker().items()
                                                        if cl.placement else [])}
    med = {k: statistics.median(v) for k, v in rows.items()}
    lines = [
        f"Store: {n:,} `{CATALOG}` Objects, placed on `LocalCluster(workers=3, replicas=2, threads={threads})` "
        f"(MiB per worker: {json.dumps(layout)}); health checks every {interval} s with a {timeout} s deadline "
        f"(a stalled worker is down after 2 missed deadlines). Query (Qserv dialect, a heavier per-row "
        f"expression so a scan lasts seconds):\n\n`{sql}`\n",
        f"Each round runs the query without failure, then with a fault injected at {AT:.0%} of the median "
        "no-failure time on a different worker each round; every answer equals the no-failure answer "
        f"({failovers} failovers in all).\n",
        "| run | rounds | median s | min..max s | extra, paired with the run before (median; each) | "
        "rounds with a failover | re-dispatch after the fault (median) |",
        "|---|---|---|---|---|---|---|",
        f"| no failure | {len(rows['none'])} | {med['none']:.2f} | {min(rows['none']):.2f}..{max(rows['none']):.2f} "
        "| — | — | — |",
    ]
    for fault, label in (("kill", "one worker killed (kill -9) mid-way"),
                         ("stop", "one worker stalled (SIGSTOP) mid-way")):
        rd = [x for x in redisp[fault] if x is not None and x == x]
        hit = sum(1 for x in redisp[fault] if x is not None)
        pm = statistics.median(paired[fault])
        each = ", ".join(f"{x:+.2f}" for x in paired[fault])
        lines.append(f"| {label} | {len(rows[fault])} | {med[fault]:.2f} | {min(rows[fault]):.2f}..{max(rows[fault]):.2f} | "
                     f"{pm:+.2f} s ({pm / med['none']:+.0%}; {each}) | {hit} | "
                     f"{(f'{statistics.median(rd):.2f} s' if rd else 'n/a')} |")
    lines.append(
        "\nWhy: a failed part is run again whole on the other replicas of its chunks (its partial "
        "rows are dropped), so a kill costs the work the dead worker had done plus its share "
        "redone by two workers instead of three; a stall adds the detection time (missed health "
        "deadlines) before that. On a machine with fewer cores than workers, the survivors also "
        "get the dead worker's CPU, which hides part of the cost.")
    return TITLE, "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from benchmarks.runner import RESULTS, machine_line, update_section

    p = argparse.ArgumentParser(prog="python -m benchmarks.failover_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--failover-objects", type=int, default=1_000_000, help="Objects in the store (default 1e6)")
    p.add_argument("--failover-reps", type=int, default=3, help="rounds of each fault (default 3)")
    p.add_argument("--failover-repeat", type=int, default=60,
                   help="length of the string hashed per row: the per-row cost (default 60)")
    p.add_argument("--failover-worker-threads", type=int, default=1, help="DuckDB threads per worker (default 1)")
    p.add_argument("--results", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    import datetime as _dt

    title, body = run(args)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = f"_{stamp}; {machine_line()}_\n\n{body}"
    print(f"## {title}\n{body}")
    if not args.no_write:
        update_section(args.results, title, body)
        print(f"wrote {args.results}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
