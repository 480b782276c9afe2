"""The single ``qengine`` command: the one place that wires the components together.

Each sub-command imports its component lazily so that ``qengine --help`` stays fast and the
core never depends on the partitioner, worker or czar at import time.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import dataclass

from qengine.alloc import tune_for_large_messages

from qengine.errors import QEngineError

log = logging.getLogger("qengine")


@dataclass(frozen=True)
class _Command:
    """A sub-command: its module is imported only when that command runs (or shows --help)."""

    name: str
    module: str
    add_arguments: str
    run: str
    help: str
    description: str


_COMMANDS = [
    _Command("demo", "qengine.demo", "add_arguments", "run",
             "sample catalogue -> chunked store -> local cluster -> example queries; serves the czar",
             "Generate (once, cached) a sample LSST-DR-like catalogue, ingest and verify it, start a czar "
             "with workers on loopback, run example queries with timings and serve until Ctrl-C."),
    _Command("generate", "catalogs.generate", "add_arguments", "run",
             "write a seeded synthetic catalogue (Parquet) with realistic sky density",
             "Generate a synthetic catalogue (directors and their children) as Parquet."),
    _Command("ingest", "partitioner.cli", "add_ingest_arguments", "run_ingest",
             "partition input files into a table of the chunked Parquet store (one transaction)",
             "Ingest CSV/TSV, Parquet, FITS or VOTable files into ROOT/<database>/<table>/ as one "
             "transaction: rows placed in Qserv chunks, overlap, director index, manifest."),
    _Command("catalog", "partitioner.cli", "add_catalog_arguments", "run_catalog",
             "inspect (info) or check (verify) a partitioned store",
             "Inspect or check a partitioned store."),
    _Command("worker", "worker.server", "add_arguments", "run",
             "serve a data root to the czar over gRPC (DuckDB over its Parquet chunks)",
             "Run a worker: answers the czar's chunk queries with DuckDB over the Parquet files under "
             "--data, streaming Arrow results over gRPC."),
    _Command("czar", "czar.server", "add_arguments", "run",
             "run the czar: plans queries, fans them out to workers, merges (HTTP API)",
             "Run the czar for the workers and metadata named in cluster.yaml; serves the HTTP API that "
             "qengine.connect(url) uses."),
    _Command("place", "czar.place_cli", "add_arguments", "run",
             "place a store's data files on the workers of cluster.yaml (R replicas, balanced by bytes)",
             "Assign the data files of the store ROOT to the workers of cluster.yaml with R replicas each, "
             "balanced by bytes, and write each worker's data directory (copies, hard links or symlinks); "
             "run again after adding a worker: only the files the new placement needs move."),
    _Command("status", "czar.status_cli", "add_arguments", "run",
             "workers up/down, chunks and replicas per table, running queries of a cluster",
             "Ask the workers of cluster.yaml (and the czar, if it answers) for their state: workers up or "
             "down, chunks and live replicas per table, queries running now."),
    _Command("user", "qengine.user_cli", "add_arguments", "run",
             "manage users: add, grant, revoke, token, passwd, class, remove, list",
             "Manage the user store of a cluster (cluster.yaml auth.users): users and their class (guest, "
             "power, science: resource limits), MySQL passwords and TAP bearer tokens (stored hashed), "
             "and grants per database or table."),
    _Command("query", "czar.cli", "add_arguments", "run",
             "run one ADQL or Qserv query and print or write the result",
             "Run one query against a czar (--url) or a local cluster over a store (--root)."),
    _Command("catalogs", "qengine.cli", "_catalogs_arguments", "_run_catalogs",
             "list the shipped catalogue definitions, or show one",
             "List shipped catalogue definitions; with NAME, show its tables and roles."),
    _Command("chunk", "qengine.cli", "_chunk_arguments", "_run_chunk",
             "locate positions in Qserv's chunking (chunk, sub-chunk, bounds, overlap)",
             "Print the chunk and sub-chunk of each RA/Dec position (degrees), the chunk's bounds and "
             "the chunks that receive the position as overlap."),
    _Command("xmatch", "czar.crossmatch.cli", "add_arguments", "run",
             "crossmatch a table file (CSV/Parquet/FITS/VOTable), or a hosted director table with --against, "
             "against a hosted director table",
             "Match every row of FILE with the objects of a hosted director table within a radius, "
             "chunk by chunk on the workers (all matches, --nearest, --outer)."),
    _Command("bench", "benchmarks.runner", "add_arguments", "run",
             "run benchmarks side by side with reference tools; write benchmarks/RESULTS.md",
             "Run qengine's benchmarks and record ratios to reference tools measured in the same run."),
]


def _chunk_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("positions", nargs="+", metavar="RA,DEC", help="positions in degrees, e.g. 10.5,-3.25")
    p.add_argument("--num-stripes", type=int, default=85)
    p.add_argument("--num-sub-stripes", type=int, default=12)
    p.add_argument("--overlap", type=float, default=0.01667, help="overlap in degrees (default 1')")


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


def _catalogs_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", nargs="?", help="catalogue name (e.g. lsst_dr) or a YAML path")


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


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only ``command``'s module is imported (all of them when None)."""
    parser = argparse.ArgumentParser(
        prog="qengine",
        description="qengine: a Qserv-compatible distributed query engine for astronomical catalogues.",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for c in _COMMANDS:
        p = sub.add_parser(c.name, help=c.help, description=c.description)
        if command is None or command == c.name:
            module = importlib.import_module(c.module)
            getattr(module, c.add_arguments)(p)
            p.set_defaults(func=getattr(module, c.run))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    names = {c.name for c in _COMMANDS}
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in names else "")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # Every qengine process moves large result messages (workers, czar, query, bench).
    tune_for_large_messages()
    try:
        return int(args.func(args) or 0)
    except QEngineError as exc:
        print(f"qengine {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"qengine {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and friends
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
