"""``qengine xmatch``: crossmatch a table file against a hosted director table.

    qengine xmatch (--root ROOT | --cluster URL) --table db.Object --radius 1arcsec
                   [--nearest] [--outer] [--ra COL] [--dec COL] [--columns a,b] [--out F] FILE
    qengine xmatch --root ROOT --table gaia.gaia_source --against dp02.Object --radius 1arcsec [...]

FILE and F are CSV/TSV, Parquet, FITS or VOTable (by extension; without --out, CSV on stdout).
``--root`` starts a LocalCluster over a store; ``--cluster`` sends the positions to a running
czar's TAP service as an UPLOAD (ADQL ``CONTAINS(POINT, CIRCLE)`` join; nearest matches are
picked here from all matches). Progress and errors go to stderr.
"""
from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

import numpy as np
import pyarrow as pa

from czar.crossmatch.io import read_table, write_table
from qengine.errors import QEngineError

__all__ = ["add_arguments", "parse_radius", "run"]

log = logging.getLogger(__name__)


def parse_radius(text: str) -> float:
    """Degrees from an angle with a unit: ``1arcsec``, ``1.5"``, ``0.5arcmin``, ``2e-4deg``."""
    import astropy.units as u

    t = text.strip().replace('"', "arcsec").replace("'", "arcmin")
    try:
        q = u.Quantity(t)
    except (TypeError, ValueError):
        raise QEngineError(f"radius {text!r} is not an angle: give a number and a unit, e.g. 1arcsec") from None
    if q.unit == u.dimensionless_unscaled:
        raise QEngineError(f"radius {text!r} has no unit: write e.g. {text}arcsec or {text}deg")
    try:
        return float(q.to_value(u.deg))
    except u.UnitConversionError:
        raise QEngineError(f"radius {text!r} is not an angle (unit {q.unit})") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--root", help="store root: run a LocalCluster over it")
    where.add_argument("--cluster", metavar="URL", help="a running czar (e.g. http://localhost:8080)")
    p.add_argument("--token", default=os.environ.get("QENGINE_TOKEN"),
                   help="with --cluster: bearer token for a czar with authentication (default: $QENGINE_TOKEN)")
    p.add_argument("--table", required=True, help="director table to match against, e.g. dp02.Object")
    p.add_argument("--radius", required=True, help="match radius with a unit, e.g. 1arcsec, 0.5arcmin")
    p.add_argument("--nearest", action="store_true", help="only the nearest match of each row")
    p.add_argument("--outer", action="store_true", help="keep rows without a match (NULL catalogue columns)")
    p.add_argument("--ra", default=None, help="RA column of FILE in degrees (default: ra, RA, RAJ2000, ...)")
    p.add_argument("--dec", default=None, help="Dec column of FILE in degrees (default: dec, DEC, DEJ2000, ...)")
    p.add_argument("--columns", default=None, help="catalogue columns to return, comma-separated (default: all)")
    p.add_argument("--workers", type=int, default=2, help="worker processes with --root (default 2)")
    p.add_argument("--out", default=None, help="output file (.csv, .tsv, .parquet, .fits, .vot); default CSV on stdout")
    p.add_argument("file", metavar="FILE", nargs="?", help="the external table (.csv, .tsv, .parquet, .fits, "
                   ".vot/.xml); or, instead, --against")
    p.add_argument("--against", metavar="DB.TABLE", default=None,
                   help="match the rows of this hosted director table (instead of FILE) against --table, chunk by "
                        "chunk through --table's stored overlap (radius at most that overlap; same chunking; "
                        "with --root)")


_RA_NAMES = ("ra", "raj2000", "ra_icrs", "radeg", "ra_deg", "alpha")
_DEC_NAMES = ("dec", "decl", "dej2000", "dec_icrs", "dedeg", "dec_deg", "delta")


def _column(table: pa.Table, given: str | None, guesses: tuple[str, ...], what: str) -> str:
    if given:
        return given
    low = {n.lower(): n for n in table.column_names}
    for g in guesses:
        if g in low:
            return low[g]
    raise QEngineError(f"no {what} column found among {', '.join(table.column_names)}: name it with --{what.lower()}")


def _via_cluster(args, ext: pa.Table, ra: str, dec: str, radius: float, columns: list[str] | None) -> pa.Table:
    """All matches through the czar's TAP service, then nearest/outer assembled here."""
    import duckdb
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    up = pa.table({"xm_row": pa.array(np.arange(ext.num_rows, dtype=np.int64)),
                   "ra": ext.column(ra).cast(pa.float64()), "dec": ext.column(dec).cast(pa.float64())})
    buf = io.BytesIO()
    pcsv.write_csv(up, buf)
    cols = ", ".join(f"o.{c}" for c in columns) if columns else "o.*"
    adql = (f"SELECT m.xm_row, {cols}, DISTANCE(POINT('ICRS', m.ra, m.dec), POINT('ICRS', o.{{ra}}, o.{{dec}})) "
            f"* 3600.0 AS separation_arcsec FROM TAP_UPLOAD.xm AS m JOIN {args.table} AS o "
            f"ON 1 = CONTAINS(POINT('ICRS', o.{{ra}}, o.{{dec}}), CIRCLE('ICRS', m.ra, m.dec, {radius!r}))")
    ra_col, dec_col = _remote_positions(args.cluster, args.table, args.token)
    adql = adql.replace("{ra}", ra_col).replace("{dec}", dec_col)
    fields = {"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": adql, "UPLOAD": "xm,param:xm",
              "RESPONSEFORMAT": "parquet", "MAXREC": "10000000"}
    body, ctype = _multipart(fields, {"xm": buf.getvalue()})
    req = urllib.request.Request(args.cluster.rstrip("/") + "/tap/sync", data=body,
                                 headers=_headers(ctype, args.token), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=3600) as resp:
            data = resp.read()
    except urllib.error.HTTPError as exc:
        raise QEngineError(f"the czar refused the crossmatch: {_tap_error(exc.read())}") from None
    except urllib.error.URLError as exc:
        raise QEngineError(f"cannot reach the czar at {args.cluster}: {exc.reason}") from None
    pairs = pq.read_table(pa.BufferReader(data))
    con = duckdb.connect()
    con.register("e", ext.append_column("__xm_row", pa.array(np.arange(ext.num_rows, dtype=np.int64))))
    con.register("p", pairs)
    if args.nearest:
        con.execute("CREATE TEMP TABLE q AS SELECT * FROM p QUALIFY row_number() OVER "
                    "(PARTITION BY xm_row ORDER BY separation_arcsec) = 1")
    else:
        con.execute("CREATE TEMP TABLE q AS SELECT * FROM p")
    ext_names = {n.lower() for n in ext.column_names}
    tname = args.table.rpartition(".")[2]
    sel = [f'q."{c}" AS "{c + "_" + tname if c.lower() in ext_names else c}"'
           for c in pairs.column_names if c not in ("xm_row", "separation_arcsec")]
    sql = (f"SELECT e.* EXCLUDE (__xm_row), {', '.join(sel + ['q.separation_arcsec'])} FROM e "
           f"{'LEFT ' if args.outer else ''}JOIN q ON e.__xm_row = q.xm_row ORDER BY e.__xm_row, q.separation_arcsec")
    return con.sql(sql).to_arrow_table()


def _headers(ctype: str, token: str | None) -> dict[str, str]:
    """The request headers, with the bearer token when there is one (a czar with ``auth``)."""
    return {"Content-Type": ctype, **({"Authorization": f"Bearer {token}"} if token else {})}


def _remote_positions(url: str, table: str, token: str | None = None) -> tuple[str, str]:
    """The position columns of ``table``, from the czar's TAP_SCHEMA (UCDs pos.eq.ra/dec;meta.main)."""
    import pyarrow.csv as pcsv

    q = ("SELECT column_name, ucd FROM TAP_SCHEMA.columns WHERE table_name = "
         f"'{table.replace(chr(39), '')}'")
    body, ctype = _multipart({"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": q, "RESPONSEFORMAT": "csv"}, {})
    req = urllib.request.Request(url.rstrip("/") + "/tap/sync", data=body, headers=_headers(ctype, token),
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            t = pcsv.read_csv(io.BytesIO(resp.read()))
    except urllib.error.HTTPError as exc:
        raise QEngineError(f"cannot read the columns of {table} from the czar: {_tap_error(exc.read())}") from None
    except urllib.error.URLError as exc:
        raise QEngineError(f"cannot reach the czar at {url}: {exc.reason}") from None
    pairs = list(zip(t.column("ucd").to_pylist(), t.column("column_name").to_pylist())) if t.num_rows else []
    ra = [c for u, c in pairs if u and u.lower().startswith("pos.eq.ra")]
    dec = [c for u, c in pairs if u and u.lower().startswith("pos.eq.dec")]
    if not pairs:
        raise QEngineError(f"the czar knows no table {table}")
    if not ra or not dec:  # no UCDs: the usual names
        names = {c.lower(): c for _, c in pairs}
        ra = [names[n] for n in ("coord_ra", *_RA_NAMES) if n in names][:1]
        dec = [names[n] for n in ("coord_dec", *_DEC_NAMES) if n in names][:1]
    if not ra or not dec:
        raise QEngineError(f"{table} has no columns with UCDs pos.eq.ra/pos.eq.dec: cannot tell its positions")
    main = lambda cs, u: next((c for uu, c in pairs if uu and uu.lower().startswith(u) and "main" in uu.lower()), cs[0])
    return main(ra, "pos.eq.ra"), main(dec, "pos.eq.dec")


def _multipart(fields: dict[str, str], files: dict[str, bytes]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for k, v in fields.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    for k, v in files.items():
        out.write(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{k}.csv"\r\n'
                  f"Content-Type: text/csv\r\n\r\n".encode())
        out.write(v + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def _tap_error(body: bytes) -> str:
    import html
    import re

    m = re.search(rb'<INFO[^>]*name="QUERY_STATUS"[^>]*>(.*?)</INFO>', body, re.DOTALL)
    return html.unescape((m.group(1) if m else body[:500]).decode(errors="replace").strip())


def _write(result: pa.Table, out: str | None) -> None:
    if out:
        write_table(result, out)
    else:
        import pyarrow.csv as pcsv

        sink = io.BytesIO()
        pcsv.write_csv(result, sink)
        sys.stdout.buffer.write(sink.getvalue())
        sys.stdout.flush()


def _against(args: argparse.Namespace, radius: float) -> pa.Table:
    """Two hosted tables: the rows of --against matched against --table (a LocalCluster)."""
    if args.file:
        raise QEngineError("give either FILE or --against, not both")
    if not args.root:
        raise QEngineError("--against runs over a store (--root); with a running czar send the ADQL join of the "
                           "two tables (SELECT ... FROM a JOIN b ON 1 = CONTAINS(POINT(..), CIRCLE(..)))")
    from czar.crossmatch.hosted import crossmatch_hosted
    from czar.local import LocalCluster

    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    print(f"xmatch: {args.against} against {args.table} within {radius * 3600:g} arcsec", file=sys.stderr)
    with LocalCluster(args.root, workers=args.workers) as qe:
        return crossmatch_hosted(qe.czar, args.against, args.table, radius, nearest=args.nearest,
                                 outer=args.outer, columns=columns)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    try:
        radius = parse_radius(args.radius)
        if getattr(args, "against", None):
            result = _against(args, radius)
            _write(result, args.out)
            print(f"xmatch: {result.num_rows} rows{' to ' + args.out if args.out else ''} in "
                  f"{time.perf_counter() - t0:.2f} s", file=sys.stderr)
            return 0
        if not args.file:
            raise QEngineError("give the table FILE to match, or --against DB.TABLE (a hosted table)")
        ext = read_table(args.file)
        ra = _column(ext, args.ra, _RA_NAMES, "RA")
        dec = _column(ext, args.dec, _DEC_NAMES, "Dec")
        columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
        print(f"xmatch: {ext.num_rows} rows of {args.file} (positions {ra}, {dec}) against {args.table} "
              f"within {radius * 3600:g} arcsec", file=sys.stderr)
        if args.root:
            from czar.crossmatch.execute import crossmatch
            from czar.local import LocalCluster

            with LocalCluster(args.root, workers=args.workers) as qe:
                result = crossmatch(qe.czar, args.table, ext, radius, ra=ra, dec=dec, nearest=args.nearest,
                                    outer=args.outer, columns=columns)
        else:
            result = _via_cluster(args, ext, ra, dec, radius, columns)
        _write(result, args.out)
        print(f"xmatch: {result.num_rows} rows{' to ' + args.out if args.out else ''} in "
              f"{time.perf_counter() - t0:.2f} s", file=sys.stderr)
        return 0
    except QEngineError as exc:
        print(f"qengine xmatch: error: {exc}", file=sys.stderr)
        return 2
