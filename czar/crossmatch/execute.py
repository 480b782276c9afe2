"""The distributed part of a crossmatch: place the external rows in chunks, ship each worker the
rows of the chunks it serves, run one query per worker, and combine the parts in the czar.

Entry points: :func:`answer_crossmatch` (the czar's hook for SQL with an uploaded table) and
:func:`crossmatch` (the Python API and the CLI: all or nearest matches, inner or outer, with a
separation column in arcsec).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from czar.crossmatch.algorithms import AllMatches, MatchAlgorithm, NearestMatch
from czar.crossmatch.detect import EXT, EXT_DEC, EXT_RA, PAIRS, PID, detect
from czar.crossmatch.job import SEP, UPLOAD, XID, MatchJob, quote
from czar.crossmatch.limits import check_radius, positions
from czar.crossmatch.placement import place
from czar.dialects import to_duckdb
from qengine.errors import QEngineError, QueryError
from qengine.workerclient import WorkerError

if TYPE_CHECKING:
    from czar.engine import Czar

log = logging.getLogger(__name__)

__all__ = ["SEPARATION", "answer_crossmatch", "crossmatch", "match_pairs"]

SEPARATION = "separation_arcsec"
INTERACTIVE_MAX_CHUNKS = 16
VISIT_ALL_FRACTION = 0.5   # visit every chunk of the table when this share of them has external rows


def _ship(job: MatchJob, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, pa.Table]:
    """The chunks to visit and the external rows for them: chunkId, XID and the positions."""
    ch = job.table.manifest.chunker
    rows, chunks = place(ra, dec, ch["num_stripes"], ch["num_sub_stripes"], job.radius)
    held = job.table.chunk_array()
    keep = np.isin(chunks, held)  # chunks without catalogue rows cannot match
    rows, chunks = rows[keep], chunks[keep]
    table = pa.table({"chunkId": pa.array(chunks.astype(np.int32)), XID: pa.array(rows),
                      EXT_RA: pa.array(ra[rows]), EXT_DEC: pa.array(dec[rows])})
    return np.unique(chunks), table


def _run_workers(czar: Czar, sql: str, assignment: dict[str, np.ndarray], shipped: pa.Table,
                 timeout: float) -> list[pa.RecordBatch]:
    """One query per worker, concurrently; the first error cancels the others."""
    clients = {w.address: w for w in czar.workers}
    chunk_col = shipped.column("chunkId").to_numpy()
    qid = uuid.uuid4().hex
    out: queue.Queue = queue.Queue()
    stop = threading.Event()

    def run(addr: str, chunks: np.ndarray) -> None:
        lo, hi = np.searchsorted(chunk_col, [chunks[0], chunks[-1] + 1])
        part = shipped.slice(lo, hi - lo)  # shipped rows are sorted by chunk
        inside = np.isin(part.column("chunkId").to_numpy(), chunks, assume_unique=False)
        if not inside.all():  # the worker's chunks are not one run: keep only its own
            part = part.filter(pa.array(inside))
        lane = "interactive" if chunks.size <= INTERACTIVE_MAX_CHUNKS else "scan"
        kw = {"query_id": f"{qid}-{addr}", "chunk_ids": chunks, "uploads": {UPLOAD: part}, "lane": lane,
                  "timeout_seconds": timeout}
        try:
            if lane == "interactive":
                table = clients[addr].execute_small(sql, **kw)
                if table is not None:
                    out.put(("batches", table.to_batches()))
                    out.put(("done", addr))
                    return
            for b in clients[addr].execute(sql, **kw):
                if stop.is_set():
                    return
                out.put(("batches", [b]))
            out.put(("done", addr))
        except Exception as exc:  # noqa: BLE001 - reported to the caller, never a hang
            out.put(("error", exc))

    threads = [threading.Thread(target=run, args=(a, cs), daemon=True) for a, cs in assignment.items()]
    for th in threads:
        th.start()
    batches: list[pa.RecordBatch] = []
    pending, error = len(threads), None
    while pending:
        kind, item = out.get()
        if kind == "batches":
            batches.extend(item)
        elif kind == "done":
            pending -= 1
        else:
            error = item
            break
    if pending:
        stop.set()
        for a in assignment:
            try:
                clients[a].cancel(f"{qid}-{a}")
            except WorkerError:
                pass
    for th in threads:
        th.join(timeout=5)
    if error is not None:
        if isinstance(error, WorkerError):
            raise QueryError(f"crossmatch failed on worker {error.worker}: {error}") from None
        raise QEngineError(f"crossmatch failed: {error!r}") from error
    return batches


def _empty_parts(job: MatchJob) -> pa.Table:
    from qengine.catalog import Column

    fields = [pa.field(XID, pa.int64())]
    for n in job.columns:
        c = job.table.column(n)
        fields.append(pa.field(n, Column(c["name"], c["datatype"]).arrow_type()))
    fields.append(pa.field(SEP, pa.float64()))
    return pa.schema(fields).empty_table()


def match_pairs(czar: Czar, job: MatchJob, ra: np.ndarray, dec: np.ndarray,
                algorithm: MatchAlgorithm, timeout: float = 0.0) -> pa.Table:
    """The matched catalogue rows: ``XID`` (index into ra/dec), ``job.columns`` and ``SEP`` (deg)."""
    t0 = time.perf_counter()
    chunks, shipped = _ship(job, ra, dec)
    t1 = time.perf_counter()
    if chunks.size == 0:
        return _empty_parts(job)
    visit = chunks
    if chunks.size >= VISIT_ALL_FRACTION * job.table.chunk_array().size:
        # most chunks have external rows: read whole files rather than filter on ~all chunk ids
        visit = job.table.chunk_array()
    assignment = czar._assign(SimpleNamespace(table=job.table, tables=[job.table]), visit)
    sql = algorithm.worker_sql(job)
    batches = _run_workers(czar, sql, assignment, shipped, timeout)
    t2 = time.perf_counter()
    parts = pa.Table.from_batches(batches) if batches else _empty_parts(job)
    result = algorithm.combine(parts, job, czar._run_local)
    log.info("crossmatch %s: %d external rows -> %d copies in %d chunks on %d workers; placed in %.3f s, "
             "matched in %.3f s, %d pairs", algorithm.name, ra.size, shipped.num_rows, chunks.size,
             len(assignment), t1 - t0, t2 - t1, result.num_rows)
    return result


def _truncate(table: pa.Table, maxrec: int | None) -> pa.Table:
    if maxrec is None or table.num_rows <= maxrec:
        return table
    md = dict(table.schema.metadata or {})
    md[b"qengine.overflow"] = b"true"
    return table.slice(0, maxrec).replace_schema_metadata(md)


def _with_xid(table: pa.Table) -> pa.Table:
    return table.append_column(XID, pa.array(np.arange(table.num_rows, dtype=np.int64)))


def answer_crossmatch(czar: Czar, tree, sql: str, lang: str, database: str | None,
                      uploads: dict[str, pa.Table] | None, maxrec: int | None) -> pa.Table | None:
    """The answer to a crossmatch query (an uploaded table joined with a director table by a
    distance predicate), or None when ``tree`` is not one: the czar then plans it as usual."""
    found = detect(tree, czar.metadata.with_uploads(uploads), database, uploads)
    if found is None:
        return None
    job = found.job
    ch = job.table.manifest.chunker
    check_radius(job.radius, ch["num_stripes"], ch["num_sub_stripes"], f"{job.table.database}.{job.table.name}")
    ext = uploads[found.upload]
    ra, dec = positions(ext, found.ext_ra, found.ext_dec, f"uploaded table {found.upload}")
    pairs = match_pairs(czar, job, ra, dec, AllMatches())
    pairs = pairs.rename_columns([PID if n == XID else n for n in pairs.column_names])
    local_sql = to_duckdb(found.local)
    log.debug("crossmatch final step: %s", local_sql)
    result = czar._run_local(local_sql, {EXT: _with_xid(ext), PAIRS: pairs})
    return _truncate(result, maxrec)


def crossmatch(czar: Czar, table: str, external: pa.Table, radius: float, *, ra: str = "ra", dec: str = "dec",
               nearest: bool = False, outer: bool = False, columns: list[str] | None = None,
               database: str | None = None, timeout: float = 0.0) -> pa.Table:
    """Match each row of ``external`` (a pyarrow table; positions in degrees in columns ``ra``,
    ``dec``) with the rows of the director ``table`` ("db.Object") within ``radius`` degrees.

    Returns the external columns, the catalogue's ``columns`` (default: all; a name the external
    table has too gets the suffix ``_<table>``) and ``separation_arcsec``; one row per pair, or
    per external row with ``nearest`` (the closest; ties: lowest id); ``outer`` keeps external
    rows without a match (NULL catalogue columns). Rows come in external-row order, then by
    separation."""
    db, _, name = table.rpartition(".")
    info = czar.metadata.resolve(db or None, name, database)
    m = info.manifest
    if m.role != "director" or not m.ra_column or not m.dec_column:
        raise QueryError(f"{info.database}.{info.name} is a {m.role} table: crossmatch needs a director table "
                         "with its own position columns")
    check_radius(radius, m.chunker["num_stripes"], m.chunker["num_sub_stripes"], f"{info.database}.{info.name}")
    a, d = positions(external, ra, dec, "external table")
    wanted = info.column_names() if columns is None else columns
    cols = []
    for c in wanted:
        col = info.column(c)
        if col is None:
            raise QueryError(f"unknown column {c!r} in table {info.database}.{info.name}", token=c)
        cols.append(col["name"])
    job = MatchJob(table=info, radius=float(radius), ext_ra=EXT_RA, ext_dec=EXT_DEC,
                   columns=list(dict.fromkeys(cols + ([m.id_column] if m.id_column else []))))
    algorithm = (NearestMatch if nearest else AllMatches)()
    pairs = match_pairs(czar, job, a, d, algorithm, timeout)
    pairs = pairs.rename_columns([PID if n == XID else n for n in pairs.column_names])
    ext_names = {n.lower() for n in external.column_names}
    out_cols = [f"p.{quote(c)} AS {quote(c + '_' + info.name if c.lower() in ext_names else c)}" for c in cols]
    order = f"e.{XID}, p.{SEP}" + (f", p.{quote(m.id_column)}" if m.id_column else "")
    sql = (f"SELECT e.* EXCLUDE ({XID}), {', '.join(out_cols + [f'p.{SEP} * 3600.0 AS {SEPARATION}'])} "
           f"FROM {EXT} AS e {'LEFT ' if outer else ''}JOIN {PAIRS} AS p ON e.{XID} = p.{PID} ORDER BY {order}")
    return czar._run_local(sql, {EXT: _with_xid(external), PAIRS: pairs})


