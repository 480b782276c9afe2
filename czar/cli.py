"""``qengine query``: run one query and print or write its result."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa

from qengine.errors import QEngineError

FORMATS = ("table", "csv", "parquet", "votable")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sql", help="the query (ADQL by default)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="a running czar, e.g. http://localhost:8080")
    where.add_argument("--root", type=Path, help="a store root: start a local cluster over it for this query")
    p.add_argument("--workers", type=int, default=2, help="workers of the local cluster (with --root; default 2)")
    p.add_argument("--lang", default="adql", choices=["adql", "qserv"], help="query language (default adql)")
    p.add_argument("--database", help="default database for unqualified table names (like USE db)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: a text table)")
    p.add_argument("--out", type=Path, help="write to this file instead of standard output")
    p.add_argument("--explain", action="store_true", help="print the plan instead of running the query")
    p.add_argument("--max-rows", type=int, default=0, help="refuse results larger than this (0: no limit)")


def write_table(table: pa.Table, fmt: str, out: Path | None) -> None:
    """Write a result in one of FORMATS to ``out`` (or standard output)."""
    if fmt == "parquet":
        if out is None:
            raise QEngineError("--format parquet needs --out FILE")
        import pyarrow.parquet as pq

        pq.write_table(table, out)
        return
    if fmt == "csv":
        import pyarrow.csv as pcsv

        sink = pa.BufferOutputStream()
        pcsv.write_csv(table, sink)
        data = sink.getvalue().to_pybytes()
    elif fmt == "votable":
        import io

        from astropy.table import Table

        t = Table(table.to_pydict())
        for f in table.schema:
            md = f.metadata or {}
            if b"unit" in md:
                t[f.name].unit = md[b"unit"].decode()
            if b"description" in md:
                t[f.name].description = md[b"description"].decode()
        buf = io.BytesIO()
        t.write(buf, format="votable")
        data = buf.getvalue()
    else:
        data = (table.to_pandas().to_string(index=False, max_rows=200) + f"\n({table.num_rows} rows)\n").encode()
    if out is None:
        sys.stdout.buffer.write(data)
    else:
        out.write_bytes(data)


def run(args: argparse.Namespace) -> int:
    if args.url:
        from czar.client import connect

        qe = connect(args.url)
    else:
        from czar.local import LocalCluster

        qe = LocalCluster(args.root, workers=args.workers)
    try:
        if args.explain:
            print(qe.explain(args.sql, lang=args.lang, database=args.database))
            return 0
        table = qe.query(args.sql, lang=args.lang, database=args.database, max_rows=args.max_rows)
        write_table(table, args.format, args.out)
    finally:
        qe.close()
    return 0
