"""The single ``qengine`` command: the one place that wires the components together.

Each sub-command imports its component lazily so that ``qengine --help`` stays fast and the
core never depends on the partitioner, worker or czar at import time.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Callable

from qengine.errors import QEngineError

log = logging.getLogger("qengine")


def _cmd_generate(sub: argparse._SubParsersAction) -> None:
    from catalogs import generate

    p = sub.add_parser(
        "generate",
        help="write a seeded synthetic catalogue (Parquet) with realistic sky density",
        description="Generate a synthetic catalogue (directors and their children) as Parquet.",
    )
    generate.add_arguments(p)
    p.set_defaults(func=generate.run)


def _cmd_chunk(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "chunk",
        help="locate positions in Qserv's chunking (chunk, sub-chunk, bounds, overlap)",
        description="Print the chunk and sub-chunk of each RA/Dec position (degrees), the "
        "chunk's bounds and the chunks that receive the position as overlap.",
    )
    p.add_argument("positions", nargs="+", metavar="RA,DEC", help="positions in degrees, e.g. 10.5,-3.25")
    p.add_argument("--num-stripes", type=int, default=85)
    p.add_argument("--num-sub-stripes", type=int, default=12)
    p.add_argument("--overlap", type=float, default=0.01667, help="overlap in degrees (default 1')")
    p.set_defaults(func=_run_chunk)


def _run_chunk(args: argparse.Namespace) -> int:
    import numpy as np

    from qengine.chunker import Chunker

    ch = Chunker(args.num_stripes, args.num_sub_stripes, args.overlap)
    try:
        ra, dec = zip(*(tuple(float(v) for v in p.split(",")) for p in args.positions))
    except ValueError:
        raise QEngineError("positions must be written RA,DEC in degrees, e.g. 10.5,-3.25") from None
    cid, scid = ch.locate(np.array(ra), np.array(dec))
    rows, ocid, _ = ch.overlap_locations(np.array(ra), np.array(dec))
    b = ch.chunk_bounds(cid)
    print("ra\tdec\tchunkId\tsubChunkId\tchunk_ra\tchunk_dec\toverlap_for")
    for i in range(len(ra)):
        over = ",".join(str(c) for c in ocid[rows == i].tolist()) or "-"
        print(
            f"{ra[i]:.8f}\t{dec[i]:.8f}\t{cid[i]}\t{scid[i]}\t"
            f"{b.ra_min[i]:.6f}..{b.ra_max[i]:.6f}\t{b.dec_min[i]:.6f}..{b.dec_max[i]:.6f}\t{over}"
        )
    return 0


def _cmd_catalogs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "catalogs",
        help="list the shipped catalogue definitions, or show one",
        description="List shipped catalogue definitions; with NAME, show its tables and roles.",
    )
    p.add_argument("name", nargs="?", help="catalogue name (e.g. lsst_dr) or a YAML path")
    p.set_defaults(func=_run_catalogs)


def _run_catalogs(args: argparse.Namespace) -> int:
    from qengine.catalog import available_catalogs, load_catalog

    if not args.name:
        for name in available_catalogs():
            cat = load_catalog(name)
            print(f"{name}\tdatabase={cat.database}\ttables={','.join(cat.tables)}")
        return 0
    cat = load_catalog(args.name)
    p = cat.partitioning
    print(f"{cat.name}: database {cat.database}; {p.num_stripes} stripes, "
          f"{p.num_sub_stripes} sub-stripes, overlap {p.overlap} deg")
    for t in cat.tables.values():
        extra = f" director={t.director} via {t.foreign_key}" if t.director else ""
        print(f"  {t.name}\t{t.role}\t{len(t.columns)} columns\tid={t.id_column}"
              f" ra={t.ra_column} dec={t.dec_column}{extra}")
    return 0


def _cmd_demo(sub: argparse._SubParsersAction) -> None:
    from qengine import demo

    p = sub.add_parser(
        "demo",
        help="generate a sample LSST-DR-like catalogue and show how it chunks",
        description="Generate (once, cached) a sample LSST-DR-like catalogue and print its "
        "chunk statistics. Later versions start a local cluster and run example queries.",
    )
    demo.add_arguments(p)
    p.set_defaults(func=demo.run)


def _cmd_bench(sub: argparse._SubParsersAction) -> None:
    from benchmarks import runner

    p = sub.add_parser(
        "bench",
        help="run benchmarks side by side with reference tools; write benchmarks/RESULTS.md",
        description="Run qengine's benchmarks and record ratios to reference tools measured "
        "in the same run.",
    )
    runner.add_arguments(p)
    p.set_defaults(func=runner.run)


def _cmd_ingest(sub: argparse._SubParsersAction) -> None:
    from partitioner import cli

    p = sub.add_parser(
        "ingest",
        help="partition input files into a table of the chunked Parquet store (one transaction)",
        description="Ingest CSV/TSV, Parquet, FITS or VOTable files into ROOT/<database>/<table>/ as "
        "one transaction: rows placed in Qserv chunks, overlap, director index, manifest.",
    )
    cli.add_ingest_arguments(p)
    p.set_defaults(func=cli.run_ingest)


def _cmd_worker(sub: argparse._SubParsersAction) -> None:
    from worker import server

    p = sub.add_parser(
        "worker",
        help="serve a data root to the czar over gRPC (DuckDB over its Parquet chunks)",
        description="Run a worker: answers the czar's chunk queries with DuckDB over the Parquet "
        "files under --data, streaming Arrow results over gRPC.",
    )
    server.add_arguments(p)
    p.set_defaults(func=server.run)


def _cmd_czar(sub: argparse._SubParsersAction) -> None:
    from czar import server

    p = sub.add_parser(
        "czar",
        help="run the czar: plans queries, fans them out to workers, merges (HTTP API)",
        description="Run the czar for the workers and metadata named in cluster.yaml; serves the "
        "HTTP API that qengine.connect(url) uses.",
    )
    server.add_arguments(p)
    p.set_defaults(func=server.run)


def _cmd_query(sub: argparse._SubParsersAction) -> None:
    from czar import cli

    p = sub.add_parser(
        "query",
        help="run one ADQL or Qserv query and print or write the result",
        description="Run one query against a czar (--url) or a local cluster over a store (--root).",
    )
    cli.add_arguments(p)
    p.set_defaults(func=cli.run)


def _cmd_catalog(sub: argparse._SubParsersAction) -> None:
    from partitioner import cli

    p = sub.add_parser(
        "catalog",
        help="inspect (info) or check (verify) a partitioned store",
        description="Inspect or check a partitioned store.",
    )
    cli.add_catalog_arguments(p)
    p.set_defaults(func=cli.run_catalog)


_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _cmd_demo,
    _cmd_generate,
    _cmd_ingest,
    _cmd_catalog,
    _cmd_worker,
    _cmd_czar,
    _cmd_query,
    _cmd_catalogs,
    _cmd_chunk,
    _cmd_bench,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qengine",
        description="qengine: a Qserv-compatible distributed query engine for astronomical catalogues.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except QEngineError as exc:
        print(f"qengine {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"qengine {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
