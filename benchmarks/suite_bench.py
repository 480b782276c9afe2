"""The science query suite as a benchmark: every query through qengine and through one DuckDB
over the same (unpartitioned) data, side by side in one run, plus interactive latency while a
full scan runs.

Run as ``qengine bench --scale small|medium|large [--repeat N] [--cluster URL]`` (or
``python -m benchmarks.suite_bench ...``; ``qengine bench --suite queries`` runs the small scale). Data are generated and ingested once per scale
(cached under the bench cache directory). Results: a section of ``benchmarks/RESULTS.md`` and a
plot ``benchmarks/suite-<scale>.png``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.suite import SCALES, build, compare, load_queries, oracle_connection, run_oracle

RESULTS_DIR = Path(__file__).resolve().parent
CONE_ID, SCAN_ID = "Q03", "Q13"


def cache_root() -> Path:
    env = os.environ.get("QENGINE_CACHE")
    return Path(env) / "bench" if env else Path.home() / ".cache" / "qengine" / "bench"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", choices=sorted(SCALES), default="small", help="data scale (default small)")
    p.add_argument("--repeat", type=int, default=5, help="runs of every query per engine (default 5)")
    p.add_argument("--cluster", help="a running czar (http://host:port) instead of a LocalCluster "
                                     "(it must serve the suite's data; upload queries are skipped)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    p.add_argument("--clients", type=int, default=4, help="concurrent cone-search clients in the load test")
    p.add_argument("--load-seconds", type=float, default=20.0, help="length of the load test (default 20 s)")
    p.add_argument("--results", type=Path, default=RESULTS_DIR / "RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="print the results only")


def _log(msg: str) -> None:
    print(f"suite-bench: {msg}", file=sys.stderr, flush=True)


def _time(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _pct(v: list[float], p: float) -> float:
    return float(np.percentile(v, p)) if v else float("nan")


def run_suite(qe, con, ds, repeat: int, remote: bool) -> list[dict]:
    rows = []
    for q in load_queries():
        sql, _ = q.render(ds.params)
        ups = {n: ds.uploads[n] for n in q.uploads} or None
        rec = {"q": q, "qe": [], "duck": [], "rows": None, "chunks": "-", "check": "", "error": ""}
        if ups and remote:
            rec["error"] = "skipped: uploads need the Python API"
            rows.append(rec)
            continue
        try:
            got = qe.query(sql, lang=q.lang, uploads=ups) if ups else qe.query(sql, lang=q.lang)
            want = run_oracle(con, q, ds.params)
            problem = compare(got, want, q.ordered)
            rec["check"] = "equal" if problem is None else f"**differs**: {problem}"
            rec["rows"] = got.num_rows
            try:
                rec["chunks"] = f"{qe.explain(sql, lang=q.lang).num_chunks:,}"
            except Exception:  # several-step queries (and uploads) have no single plan to show
                rec["chunks"] = "-"
            for i in range(repeat):       # interleaved: qengine then DuckDB, order alternating
                pair = [("qe", lambda: qe.query(sql, lang=q.lang, uploads=ups) if ups else qe.query(sql, lang=q.lang)),
                        ("duck", lambda: run_oracle(con, q, ds.params))]
                for key, fn in (pair if i % 2 == 0 else pair[::-1]):
                    rec[key].append(_time(fn)[0])
        except Exception as exc:
            rec["error"] = f"{type(exc).__name__}: {exc}"[:200]
        _log(f"{q.id} {q.category}: " + (rec["error"] or
             f"qengine {statistics.median(rec['qe']) * 1e3:.1f} ms, DuckDB {statistics.median(rec['duck']) * 1e3:.1f} ms, "
             f"{rec['rows']} rows, {rec['check']}"))
        rows.append(rec)
    return rows


def load_test(qe, ds, clients: int, seconds: float) -> dict:
    """Cone searches from ``clients`` threads, alone and while full scans run back to back."""
    queries = {q.id: q for q in load_queries()}
    cone, scan = queries[CONE_ID], queries[SCAN_ID]
    cone_sql, _ = cone.render(ds.params)
    scan_sql, _ = scan.render(ds.params)

    def cones(stop: threading.Event, out: list[float]) -> None:
        while not stop.is_set():
            out.append(_time(lambda: qe.query(cone_sql, lang=cone.lang))[0])

    def phase(with_scan: bool) -> tuple[list[float], int]:
        stop = threading.Event()
        lat: list[float] = []
        scans = [0]

        def scanner() -> None:
            while not stop.is_set():
                qe.query(scan_sql, lang=scan.lang)
                scans[0] += 1
        threads = [threading.Thread(target=cones, args=(stop, lat), daemon=True) for _ in range(clients)]
        if with_scan:
            threads.append(threading.Thread(target=scanner, daemon=True))
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        return lat, scans[0]

    idle, _ = phase(False)
    busy, n_scans = phase(True)
    return {"idle": idle, "busy": busy, "scans": n_scans}


def _plot(rows: list[dict], path: Path, scale: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ok = [r for r in rows if r["qe"]]
    x = np.arange(len(ok))
    fig, ax = plt.subplots(figsize=(max(8, len(ok) * 0.45), 4.5))
    ax.bar(x - 0.2, [statistics.median(r["qe"]) * 1e3 for r in ok], 0.4, label="qengine")
    ax.bar(x + 0.2, [statistics.median(r["duck"]) * 1e3 for r in ok], 0.4, label="one DuckDB, unpartitioned")
    ax.set_yscale("log")
    ax.set_ylabel("median latency (ms, log)")
    ax.set_xticks(x, [r["q"].id for r in ok], rotation=90)
    ax.set_title(f"qengine science query suite, scale {scale}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _markdown(ds, rows: list[dict], load: dict | None, args, plot: Path | None) -> str:
    sizes = ", ".join(f"{k} {v:,}" for k, v in SCALES[args.scale].items())
    out = [f"Scale `{args.scale}` (objects per catalogue: {sizes}; generated with `catalogs.generate`, "
           f"ingested with each catalogue's partitioning). qengine: "
           + (f"the czar at {args.cluster}" if args.cluster else f"`LocalCluster` with {args.workers} worker processes")
           + "; DuckDB: one in-process connection (2 threads) over the generated, unpartitioned Parquet "
           f"files with qengine's SQL macros, running the same query (translated) — the oracle every "
           f"answer is checked against. Medians of {args.repeat} interleaved runs after one warm-up. Load "
           f"average at the start: {os.getloadavg()[0]:.1f}: the machine is shared, compare ratios.", "",
           "| id | category | lang | qengine p50 ms | p95 ms | DuckDB p50 ms | qengine / DuckDB | rows | chunks | check |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        q = r["q"]
        if r["error"]:
            out.append(f"| {q.id} | {q.category} | {q.lang} | - | - | - | - | - | - | **{r['error']}** |")
            continue
        a, b = statistics.median(r["qe"]), statistics.median(r["duck"])
        out.append(f"| {q.id} | {q.category} | {q.lang} | {a * 1e3:.1f} | {_pct(r['qe'], 95) * 1e3:.1f} | "
                   f"{b * 1e3:.1f} | {a / b:.2f}x | {r['rows']:,} | {r['chunks']} | {r['check']} |")
    out += ["", "Questions: " + " ".join(f"{r['q'].id}: {r['q'].question}" for r in rows)]
    if load:
        i, b = load["idle"], load["busy"]
        out += ["", f"Interactive queries during a full scan ({args.clients} clients issuing {CONE_ID} cone "
                f"searches for {args.load_seconds:g} s, alone and then while {SCAN_ID} full scans run back to "
                f"back: {load['scans']} scans):", "",
                "| phase | cone searches | p50 ms | p95 ms |", "|---|---:|---:|---:|",
                f"| alone | {len(i)} | {_pct(i, 50) * 1e3:.1f} | {_pct(i, 95) * 1e3:.1f} |",
                f"| during full scans | {len(b)} | {_pct(b, 50) * 1e3:.1f} | {_pct(b, 95) * 1e3:.1f} |"]
    if plot is not None:
        out += ["", f"Plot: `{plot.name}` (median latency per query, log scale)."]
    out += ["", "Not measured here: bytes scanned per query (workers report rows, chunks and files, not "
            "bytes); LSDB and astropy side by side for cone, near-neighbour and crossmatch are in their own "
            "suites (`--suite neighbour`, the crossmatch benchmark)."]
    return "\n".join(out) + "\n"


def run(args: argparse.Namespace) -> tuple[str, str]:
    directory = cache_root() / f"suite-{args.scale}"
    _log(f"data for scale {args.scale} in {directory} (generated and ingested once)")
    ds = build(args.scale, directory, progress=sys.stderr.isatty())
    con = oracle_connection(ds)
    if args.cluster:
        import qengine
        qe, closer = qengine.connect(args.cluster), None
    else:
        from czar.local import LocalCluster
        qe = closer = LocalCluster(ds.root, workers=args.workers)
    try:
        rows = run_suite(qe, con, ds, args.repeat, remote=bool(args.cluster))
        load = load_test(qe, ds, args.clients, args.load_seconds) if args.load_seconds > 0 else None
    finally:
        if closer is not None:
            closer.close()
    plot = RESULTS_DIR / f"suite-{args.scale}.png"
    if args.no_write or not _plot(rows, plot, args.scale):
        plot = None
    return f"Science query suite ({args.scale})", _markdown(ds, rows, load, args, plot)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.suite_bench", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    from benchmarks.runner import machine_line

    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    title, body = run(args)
    body = f"_{stamp}; {machine_line()}_\n\n{body}"
    print(f"## {title}\n{body}")
    if not args.no_write:
        from benchmarks.runner import update_section
        update_section(args.results, title, body)
        _log(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
