"""Command-line front of the partitioner: ``qengine ingest`` and ``qengine catalog info|verify``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qengine.errors import IngestError


def add_ingest_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("table definition (a qengine catalogue, or Qserv's schema + partition configs)")
    src.add_argument("--catalog", help="catalogue name (lsst_dr, sdss, ...) or YAML definition file")
    src.add_argument("--table", required=True,
                     help="table to ingest into (a child or match table: ingest its director(s) first)")
    src.add_argument("--database", help="database name (default: the catalogue's)")
    src.add_argument("--schema", type=Path, help="Qserv: MySQL CREATE TABLE file for the table")
    src.add_argument("--partition", type=Path, action="append", default=[],
                     help="Qserv: sph-partition JSON config; repeat to merge several in order")
    src.add_argument("--replicated", action="store_true", help="Qserv: a small table copied to every worker")
    p.add_argument("--out", "--root", dest="root", type=Path, required=True, help="store root directory")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE",
                   help="input files: CSV/TSV (optionally .gz/.bz2), Parquet, FITS, VOTable")
    fmt = p.add_argument_group("input format")
    fmt.add_argument("--format", choices=["csv", "tsv", "parquet", "fits", "votable"],
                     help="input format (default: from the file extension)")
    fmt.add_argument("--delimiter", help="field separator for text input (default , or TAB)")
    hdr = fmt.add_mutually_exclusive_group()
    hdr.add_argument("--header", dest="header", action="store_true", default=None, help="text input has a header line")
    hdr.add_argument("--no-header", dest="header", action="store_false", help="text input has no header line")
    fmt.add_argument("--fields", help="comma-separated field names in file order (headerless text)")
    fmt.add_argument("--null", action="append", help="string meaning NULL (repeatable; default \\N, NULL and empty)")
    run = p.add_argument_group("run")
    run.add_argument("--skip-bad-rows", type=int, default=0, metavar="N",
                     help="reject up to N bad rows into a reject file instead of failing")
    run.add_argument("--rows-per-file", type=int, default=1_000_000, help="rows per output file (default 1e6)")
    run.add_argument("--row-group-rows", type=int, default=100_000, help="rows per Parquet row group (default 1e5)")
    run.add_argument("--threads", type=int, default=2, help="threads for writing (default 2)")
    run.add_argument("--abort", action="store_true", help="do all the work, then roll back (dry run)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_ingest(args: argparse.Namespace) -> int:
    from partitioner.ingest import IngestOptions, ingest
    from partitioner.readers import InputSpec

    place_by_position = None
    spec_kwargs: dict = {}
    if args.schema or args.partition or (args.replicated and not args.catalog):
        from partitioner.qserv_config import load_qserv_table

        if not args.database:
            raise IngestError("--database is required with Qserv's --schema/--partition")
        q = load_qserv_table(args.database, args.table, args.schema, args.partition, replicated=args.replicated)
        table, partitioning, database = q.to_table(), q.partitioning, args.database
        if q.child_pos:
            place_by_position = q.child_pos
        if q.csv_fields:
            spec_kwargs["columns"] = tuple(q.csv_fields)
            spec_kwargs.setdefault("header", False)
        if q.csv_null is not None:
            spec_kwargs["null_values"] = (q.csv_null,)
        if q.csv_delimiter:
            spec_kwargs["delimiter"] = q.csv_delimiter
        if q.csv_escape is not None:
            spec_kwargs["escape_char"] = q.csv_escape or None
        if q.csv_quote is not None:
            spec_kwargs["quote_char"] = q.csv_quote or None
    elif args.catalog:
        from qengine.catalog import load_catalog

        cat = load_catalog(args.catalog)
        table, partitioning = cat.table(args.table), cat.partitioning
        database = args.database or cat.database
    else:
        raise IngestError("give --catalog, or Qserv's --schema and --partition configs")
    if args.format:
        spec_kwargs["format"] = args.format
    if args.delimiter:
        spec_kwargs["delimiter"] = args.delimiter.encode().decode("unicode_escape")
    if args.header is not None:
        spec_kwargs["header"] = args.header
    if args.fields:
        spec_kwargs["columns"] = tuple(f.strip() for f in args.fields.split(","))
    if args.null:
        spec_kwargs["null_values"] = tuple(args.null)
    options = IngestOptions(
        rows_per_file=args.rows_per_file, row_group_rows=args.row_group_rows,
        skip_bad_rows=args.skip_bad_rows, threads=args.threads, abort=args.abort,
        progress=False if args.no_progress else None,
    )
    result = ingest(args.root, database, table, args.files, partitioning=partitioning,
                    spec=InputSpec(**spec_kwargs), options=options, place_by_position=place_by_position)
    print(result.summary(), file=sys.stderr)
    return 0


def add_catalog_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="catalog_command", metavar="ACTION", required=True)
    i = sub.add_parser("info", help="tables, rows, chunks, files and sizes of a store",
                       description="Print the tables of a store with rows, chunks, files and sizes.")
    i.add_argument("root", type=Path, help="store root directory")
    v = sub.add_parser("verify", help="check that every row sits in its chunk, overlaps are exact, the index agrees",
                       description="Check a store: files against manifests, chunk placement of every row, "
                       "overlap completeness and exactness, the director index and child placement.")
    v.add_argument("root", type=Path, help="store root directory")


def run_catalog(args: argparse.Namespace) -> int:
    from partitioner.verify import info, verify

    if args.catalog_command == "info":
        rows = info(args.root)
        if not rows:
            print(f"no tables under {args.root}", file=sys.stderr)
            return 1
        print(f"{'table':32} {'role':10} {'rows':>14} {'overlap':>12} {'chunks':>7} {'files':>6} {'MiB':>9} txns")
        for t in rows:
            print(f"{t.database + '.' + t.table:32} {t.role:10} {t.rows:>14,} {t.overlap_rows:>12,} "
                  f"{t.chunks:>7,} {t.files:>6} {t.bytes / 2**20:>9.1f} {t.transactions}")
        return 0
    rep = verify(args.root)
    for line in rep.checked:
        print(f"ok  {line}")
    for line in rep.problems:
        print(f"BAD {line}")
    print("verify: " + ("all checks passed" if rep.ok else f"{len(rep.problems)} problem(s)"), file=sys.stderr)
    return 0 if rep.ok else 1
