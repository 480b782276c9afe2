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
import pyarrow.compute as pc

from czar.crossmatch.algorithms import AllMatches, MatchAlgorithm, NearestMatch, grid_of
from czar.crossmatch.cells import CELL, expand, sorted_unique, zone_table
from czar.crossmatch.detect import EXT, EXT_DEC, EXT_RA, PAIRS, PID, detect
from czar.crossmatch.job import SEP, UPLOAD, XID, ZONES, MatchJob
from czar.crossmatch.limits import check_radius, positions
from czar.crossmatch.placement import place
from czar.crossmatch.units import (
    SEPARATION_META,
    annotate,
    column_meta,
    field_meta,
    select_meta,
)
from czar.dialects import to_duckdb
from qengine.errors import QEngineError, QueryError
from qengine.workerclient import WorkerError

if TYPE_CHECKING:
    from czar.engine import Czar

log = logging.getLogger(__name__)

__all__ = ["SEPARATION", "answer_crossmatch", "crossmatch", "match_pairs", "visit_runs"]

SEPARATION = "separation_arcsec"
INTERACTIVE_MAX_CHUNKS = 16
ROW_GROUP_ROWS = 100_000   # rows per Parquet row group (the ingest default): the unit of a skipped read
RUNS_PER_WORKER = 32       # chunk runs per worker query (the worker turns up to 64 into BETWEENs)


PARALLEL_ROWS = 200_000     # external rows from which placement runs in two threads (numpy frees the GIL)


def _copies(job: MatchJob, g, ra: np.ndarray, dec: np.ndarray, offset: int) -> tuple[np.ndarray, ...]:
    """(rows + offset, chunks, cells) of external rows: one per chunk within the radius of a row
    (chunks without catalogue rows left out) times each cell of the row, sorted by chunk."""
    ch = job.table.manifest.chunker
    rows, chunks = place(ra, dec, ch["num_stripes"], ch["num_sub_stripes"], job.radius)
    held = job.table.chunk_array()
    pos = np.minimum(np.searchsorted(held, chunks), max(held.size - 1, 0))
    keep = held[pos] == chunks if held.size else np.zeros(chunks.size, bool)  # no catalogue rows: no match
    rows, chunks = rows[keep], chunks[keep]
    crow, cell = expand(g, ra, dec)
    # every placement (row, chunk) times every cell of that row
    first = np.searchsorted(crow, np.arange(ra.size + 1))
    per = np.diff(first)[rows]
    pick = np.repeat(first[rows], per) + (np.arange(per.sum()) - np.repeat(np.cumsum(per) - per, per))
    return np.repeat(rows, per) + offset, np.repeat(chunks, per), cell[pick]


def _ship(job: MatchJob, ra: np.ndarray, dec: np.ndarray) -> tuple[np.ndarray, dict[str, pa.Table]]:
    """The chunks with external rows and what goes to the workers, both sorted by chunk: the
    external copies (chunkId, XID, positions, cell) and their (chunk, zone) table."""
    g = grid_of(job)
    if ra.size < PARALLEL_ROWS:
        rows, chunks, cell = _copies(job, g, ra, dec, 0)
    else:
        from concurrent.futures import ThreadPoolExecutor

        half = ra.size // 2
        with ThreadPoolExecutor(2) as pool:
            parts = list(pool.map(lambda s: _copies(job, g, ra[s], dec[s], s.start),
                                  [slice(0, half), slice(half, ra.size)]))
        rows, chunks, cell = (np.concatenate(x) for x in zip(*parts))
        order = np.argsort(chunks, kind="stable")
        rows, chunks, cell = rows[order], chunks[order], cell[order]
    table = pa.table({"chunkId": pa.array(chunks.astype(np.int32)), XID: pa.array(rows),
                      EXT_RA: pa.array(ra[rows]), EXT_DEC: pa.array(dec[rows]), CELL: pa.array(cell)})
    return sorted_unique(chunks), {UPLOAD: table, ZONES: zone_table(g, chunks, cell)}


def visit_runs(all_chunks: np.ndarray, rows: np.ndarray, wanted: np.ndarray, max_runs: int) -> np.ndarray:
    """The chunks to visit for external rows in ``wanted`` (sorted, a subset of the table's sorted
    ``all_chunks`` of ``rows`` rows each): ``wanted`` with the gaps between its chunks filled where
    skipping them would save no read (fewer rows than a Parquet row group), then the smallest
    gaps filled until at most ``max_runs`` runs are left. Runs become ``BETWEEN``s in the worker,
    a filter its scan evaluates (an IN list of scattered ids is slower than reading everything),
    and the join with the shipped (chunk, zone) table does the selecting."""
    if wanted.size <= 1:
        return wanted
    pos = np.searchsorted(all_chunks, wanted)
    cum = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)])
    gap = cum[pos[1:]] - cum[pos[:-1] + 1]  # rows strictly between consecutive wanted chunks
    keep = gap >= ROW_GROUP_ROWS
    if keep.sum() > max_runs - 1:
        keep[:] = False
        keep[np.argsort(-gap, kind="stable")[: max(max_runs - 1, 0)]] = True
    breaks = np.flatnonzero(keep)
    starts = pos[np.r_[0, breaks + 1]]
    ends = pos[np.r_[breaks, pos.size - 1]]
    mark = np.zeros(all_chunks.size + 1, np.int64)
    np.add.at(mark, starts, 1)
    np.add.at(mark, ends + 1, -1)
    return all_chunks[np.cumsum(mark)[:-1] > 0]


def _run_workers(czar: Czar, sql: str, assignment: dict[str, np.ndarray], shipped: dict[str, pa.Table],
                 timeout: float) -> list[pa.RecordBatch]:
    """One query per worker, concurrently, each with the shipped rows of its own chunks (the
    tables are sorted by chunkId); the first error cancels the others."""
    clients = {w.address: w for w in czar.workers}
    qid = uuid.uuid4().hex
    out: queue.Queue = queue.Queue()
    stop = threading.Event()

    def share(table: pa.Table, chunks: np.ndarray) -> pa.Table:
        col = table.column("chunkId").to_numpy()
        lo, hi = np.searchsorted(col, [chunks[0], chunks[-1] + 1])
        part = table.slice(lo, hi - lo)
        inside = np.isin(part.column("chunkId").to_numpy(), chunks)
        return part if inside.all() else part.filter(pa.array(inside))  # chunks not one run

    shares = {a: {k: share(t, cs) for k, t in shipped.items()} for a, cs in assignment.items()}
    # a worker given only chunks without external rows (gaps filled between runs) has nothing to do
    if UPLOAD in shipped:
        assignment = {a: cs for a, cs in assignment.items() if shares[a][UPLOAD].num_rows}

    def run(addr: str, chunks: np.ndarray) -> None:
        lane = "interactive" if chunks.size <= INTERACTIVE_MAX_CHUNKS else "scan"
        kw = {"query_id": f"{qid}-{addr}", "chunk_ids": chunks, "uploads": shares[addr], "lane": lane,
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
    all_chunks = job.table.chunk_array()
    runs = RUNS_PER_WORKER * max(1, len(czar.live_workers()))
    visit = visit_runs(all_chunks, job.table.chunk_row_weights(all_chunks), chunks, runs)
    assignment = czar._assign(SimpleNamespace(table=job.table, tables=[job.table], overlap_tables=[]), visit)
    sql = algorithm.worker_sql(job)
    batches = _run_workers(czar, sql, assignment, shipped, timeout)
    t2 = time.perf_counter()
    parts = pa.Table.from_batches(batches) if batches else _empty_parts(job)
    result = algorithm.combine(parts, job, czar._run_local)
    log.info("crossmatch %s: %d external rows -> %d copies in %d chunks (%d visited) on %d workers; placed "
             "in %.3f s, matched in %.3f s, %d pairs", algorithm.name, ra.size, shipped[UPLOAD].num_rows,
             chunks.size, visit.size, len(assignment), t1 - t0, t2 - t1, result.num_rows)
    return result


def _truncate(table: pa.Table, maxrec: int | None) -> pa.Table:
    if maxrec is None or table.num_rows <= maxrec:
        return table
    md = dict(table.schema.metadata or {})
    md[b"qengine.overflow"] = b"true"
    return table.slice(0, maxrec).replace_schema_metadata(md)


def _with_xid(table: pa.Table) -> pa.Table:
    return table.append_column(XID, pa.array(np.arange(table.num_rows, dtype=np.int64)))


def _assemble(external: pa.Table, pairs: pa.Table, cols: list[str], cat_id: str | None, outer: bool,
              names: list[str]) -> pa.Table:
    """The external rows with their pairs' ``cols`` (named ``names``) and separations in arcsec, by
    external row, then separation and id; ``outer``: unmatched external rows once, with NULLs.
    Index arithmetic in numpy/Arrow: a DuckDB join and sort of ~10^6 rows took a second."""
    xid = pairs.column(XID).to_numpy()
    keys = [pairs.column(SEP).to_numpy(), xid]
    if cat_id and cat_id in pairs.column_names:
        keys.insert(0, pairs.column(cat_id).to_numpy(zero_copy_only=False))
    order = np.lexsort(keys)
    rows, take = xid[order], order
    if outer:
        lonely = np.setdiff1d(np.arange(external.num_rows, dtype=np.int64), xid)
        rows = np.concatenate([rows, lonely])
        take = np.concatenate([take, np.full(lonely.size, -1, np.int64)])
        by_row = np.argsort(rows, kind="stable")  # each row's pairs keep their order
        rows, take = rows[by_row], take[by_row]
    picks = pa.array(take, mask=take < 0)
    out = external.take(pa.array(rows))
    for c, name in zip(cols, names):
        out = out.append_column(name, pairs.column(c).take(picks))
    sep = pc.multiply(pairs.column(SEP).take(picks), pa.scalar(3600.0))
    return out.append_column(SEPARATION, sep)


def answer_crossmatch(czar: Czar, tree, sql: str, lang: str, database: str | None,
                      uploads: dict[str, pa.Table] | None, maxrec: int | None) -> pa.Table | None:
    """The answer to a crossmatch query (an uploaded table joined with a director table by a
    distance predicate), or None when ``tree`` is not one: the czar then plans it as usual."""
    found = detect(tree, czar.metadata.with_uploads(uploads), database, uploads)
    if found is None:
        from czar.crossmatch.hosted import answer_hosted

        hosted = answer_hosted(czar, tree, database)
        return None if hosted is None else _truncate(hosted, maxrec)
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
    return _truncate(annotate(result, _sql_meta(found, ext.schema)), maxrec)


def _sql_meta(found, schema: pa.Schema) -> dict[str, dict[str, str]]:
    """Units/UCDs of the columns a crossmatch query selects (catalogue, upload, separations)."""
    info = found.job.table

    def column(col) -> dict[str, str]:
        q = (col.table or "").lower()
        if q in found.cat_quals or (not q and info.column(col.name) is not None):
            return column_meta(info, col.name)
        return field_meta(schema, col.name) if not q or q in found.ext_quals else {}

    def star(q: str | None) -> dict[str, dict[str, str]]:
        out = {}
        if q is None or q.lower() in found.ext_quals:
            out.update({n: field_meta(schema, n) for n in schema.names})
        if q is None or q.lower() in found.cat_quals:
            out.update({n: column_meta(info, n) for n in info.column_names()})
        return {k: v for k, v in out.items() if v}

    return select_meta(found.local, column, star)


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
    ext_names = {n.lower() for n in external.column_names}
    result = _assemble(external, pairs, cols, m.id_column, outer,
                       [c + "_" + info.name if c.lower() in ext_names else c for c in cols])
    meta = {n: field_meta(external.schema, n) for n in external.column_names}
    meta.update({(c + "_" + info.name if c.lower() in ext_names else c): column_meta(info, c) for c in cols})
    meta[SEPARATION] = SEPARATION_META
    return annotate(result, {k: v for k, v in meta.items() if v})


