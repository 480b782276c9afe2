"""``qengine bench``: run benchmark suites and record results side by side in RESULTS.md."""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import os
import platform
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
SUITES = {"chunker": "benchmarks.chunker_bench", "ingest": "benchmarks.ingest_bench",
          "worker": "benchmarks.worker_bench", "czar": "benchmarks.czar_bench",
          "neighbour": "benchmarks.neighbour_bench", "xmatch": "benchmarks.xmatch_bench",
          "failover": "benchmarks.failover_bench", "queries": "benchmarks.suite_bench"}
#: run by default (``qengine bench`` with no --suite); the science query suite runs with --scale
DEFAULT_SUITES = ["chunker", "ingest", "worker", "czar", "neighbour", "xmatch", "failover"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", choices=sorted(SUITES), action="append",
                   help="suite(s) to run (default: all)")
    p.add_argument("--points", type=int, default=10_000_000, help="points for the chunker suite (default 1e7)")
    p.add_argument("--loop-points", type=int, default=200_000,
                   help="points for the per-point sphgeom loop (its rate is measured on these)")
    ing = p.add_argument_group("ingest suite")
    ing.add_argument("--objects", type=int, default=10_000_000,
                     help="Objects generated and ingested (default 1e7)")
    src = ing.add_mutually_exclusive_group()
    src.add_argument("--with-sources", dest="with_sources", action="store_true", default=True,
                     help="also ingest the Object's Sources (default)")
    src.add_argument("--no-sources", dest="with_sources", action="store_false", help="Objects only")
    ing.add_argument("--source-objects", type=int, default=None, metavar="N",
                     help="generate Sources (~12 per Object) for the first N Objects only (default: all)")
    ing.add_argument("--no-hats", dest="hats", action="store_false", default=True,
                     help="skip the hats-import comparison")
    ing.add_argument("--hats-workers", type=int, default=2, help="dask worker processes for hats-import (default 2)")
    ing.add_argument("--rows-per-pixel", type=int, default=1_000_000,
                     help="hats-import pixel_threshold (default 1e6, like qengine's rows per file)")
    ing.add_argument("--ingest-threads", type=int, default=2, help="qengine ingest --threads (default 2)")
    ing.add_argument("--work-dir", type=Path, default=None,
                     help="where the stores and temporary files go (default: the bench cache directory)")
    ing.add_argument("--keep-output", action="store_true", help="keep the stores written")
    ver = ing.add_mutually_exclusive_group()
    ver.add_argument("--verify", dest="verify", action="store_true", default=None,
                     help="run partitioner.verify on the qengine store (default: only up to 1M Objects)")
    ver.add_argument("--no-verify", dest="verify", action="store_false")
    wrk = p.add_argument_group("worker suite")
    wrk.add_argument("--worker-objects", type=int, default=2_000_000,
                     help="Objects generated and ingested with 85x12 stripes (default 2e6)")
    wrk.add_argument("--worker-reps", type=int, default=7,
                     help="interleaved repetitions of the streaming runs (default 7)")
    wrk.add_argument("--worker-calls", type=int, default=200,
                     help="point-query calls per path (default 200)")
    wrk.add_argument("--worker-agg-reps", type=int, default=25,
                     help="interleaved repetitions of the full-scan aggregates (default 25)")
    czr = p.add_argument_group("czar suite")
    czr.add_argument("--czar-objects", type=int, default=10_000_000,
                     help="Objects ingested with the catalogue's 340x3 stripes (default 1e7)")
    czr.add_argument("--czar-cones", type=int, default=200, help="cone searches timed through the cluster (default 200)")
    czr.add_argument("--czar-reps", type=int, default=5,
                     help="DuckDB full-scan cones and interleaved GROUP BY rounds (default 5)")
    czr.add_argument("--czar-worker-threads", type=int, default=1,
                     help="DuckDB threads per worker process (default 1: 2 workers = the baseline's 2 threads)")
    czr.add_argument("--czar-breakdown", type=int, default=50, help="cones in the latency breakdown (default 50)")
    nn = p.add_argument_group("neighbour suite")
    nn.add_argument("--nn-objects", type=int, default=10_000_000,
                    help="Objects in the catalogue searched for pairs (default 1e7)")
    nn.add_argument("--nn-radius-arcsec", type=float, default=5.0, help="pair radius in arcsec (default 5)")
    nn.add_argument("--nn-workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    nn.add_argument("--nn-worker-threads", type=int, default=1,
                    help="DuckDB threads per worker (default 1: 2 workers = the baseline's 2 threads)")
    fo = p.add_argument_group("failover suite")
    fo.add_argument("--failover-objects", type=int, default=1_000_000, help="Objects in its store (default 1e6)")
    fo.add_argument("--failover-reps", type=int, default=3, help="rounds of each fault (default 3)")
    fo.add_argument("--failover-repeat", type=int, default=60, help="per-row work factor making the scan long")
    fo.add_argument("--failover-worker-threads", type=int, default=1, help="DuckDB threads per worker (default 1)")
    qs = p.add_argument_group("science query suite (benchmarks/queries; runs when --scale is given)")
    qs.add_argument("--scale", choices=["small", "medium", "large"],
                    help="data scale of the query suite: every query vs one DuckDB, and latency under load")
    qs.add_argument("--repeat", type=int, default=5, help="runs of every suite query per engine (default 5)")
    qs.add_argument("--cluster", help="a running czar (http://host:port) instead of a LocalCluster")
    qs.add_argument("--suite-workers", dest="workers", type=int, default=2,
                    help="LocalCluster worker processes for the query suite (default 2)")
    from benchmarks.suite_bench import add_run_options

    add_run_options(qs)
    p.add_argument("--results", type=Path, default=RESULTS, help=f"results file (default {RESULTS})")
    p.add_argument("--no-write", action="store_true", help="print results only")


def machine_line() -> str:
    import duckdb
    import numpy

    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"numpy {numpy.__version__}, duckdb {duckdb.__version__}")


def update_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the section ``## title`` of the results file."""
    text = path.read_text() if path.exists() else "# qengine benchmark results\n\nEach section is rewritten by `qengine bench --suite NAME`; ratios are measured side by side in one run.\n"
    head = f"## {title}\n"
    start = text.find(head)
    if start >= 0:
        end = text.find("\n## ", start + len(head))
        text = text[:start] + head + body + ("" if end < 0 else text[end:])
    else:
        text = text.rstrip("\n") + "\n\n" + head + body
    path.write_text(text.rstrip("\n") + "\n")


def run(args: argparse.Namespace) -> int:
    suites = args.suite or (["queries"] if args.scale else DEFAULT_SUITES)
    if "queries" in suites and not args.scale:
        args.scale = "small"
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    for name in suites:
        module = importlib.import_module(SUITES[name])
        title, body = module.run(args)
        body = f"_{stamp}; {machine_line()}_\n\n{body}"
        print(f"## {title}\n{body}")
        if not args.no_write:
            update_section(args.results, title, body)
            print(f"wrote {args.results}", file=sys.stderr)
    return 0
