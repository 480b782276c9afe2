"""The distributed part of a crossmatch: place the external rows in chunks, ship each worker the
rows of the chunks it serves, run one query per worker, and combine the parts in the czar.

Entry points: :func:`answer_crossmatch` (the czar's hook for SQL with an uploaded table) and
:func:`crossmatch` (the Python API and the CLI: all or nearest matches, inner or outer, with a
separation column in arcsec).
"""
from __future__ import annotations

import functools
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass
from types import SimpleNamespace
from typing import TYPE_CHECKING, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from czar.crossmatch.algorithms import AllMatches, MatchAlgorithm, NearestMatch, grid_of, pair_order
from czar.crossmatch.cells import CELL, expand, zone_table
from czar.crossmatch.detect import EXT, EXT_DEC, EXT_RA, PAIRS, PID, detect
from czar.crossmatch.job import CHUNKS, SEP, UPLOAD, XID, ZONES, MatchJob
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
RESULT_BATCH_ROWS = 65_536  # rows per result batch (pairs are narrow: fewer, larger messages than the default 8,192)


PARALLEL_ROWS = 200_000     # external rows from which placement and cells run in two threads (numpy frees the GIL)
CHUNK_FILTER_SHARE = 0.8    # below this share of visited chunks with external rows, workers filter by chunk


@dataclass
class _Located:
    """Where the external rows go: ``rows``/``chunks``, one per chunk within the radius of a row
    (chunks without catalogue rows left out), and ``crow``/``cell``, one per cell of a row; both
    in no particular order."""

    rows: np.ndarray
    chunks: np.ndarray
    crow: np.ndarray
    cell: np.ndarray


def _lookup(keys: np.ndarray, values: np.ndarray, missing: int = -1) -> np.ndarray:
    """The index in ``values`` (sorted, distinct, non-negative ints) of each of ``keys``, or
    ``missing``: a dense table when the values are small (chunk ids are), else a binary search."""
    keys = np.asarray(keys, dtype=np.int64)
    if values.size == 0:
        return np.full(keys.size, missing, np.int64)
    top = int(values[-1])
    if top < max(1 << 20, 8 * keys.size):
        table = np.full(top + 2, missing, np.int64)
        table[values] = np.arange(values.size)
        return table[np.clip(keys, -1, top + 1)]
    pos = np.minimum(np.searchsorted(values, keys), values.size - 1)
    return np.where(values[pos] == keys, pos, missing)


def _distinct(x: np.ndarray) -> np.ndarray:
    """The sorted distinct values of non-negative ints ``x`` (a mark per value when they are small)."""
    x = np.asarray(x, dtype=np.int64)
    if x.size == 0:
        return x
    top = int(x.max())
    if top < max(1 << 20, 8 * x.size):
        seen = np.zeros(top + 1, bool)
        seen[x] = True
        return np.flatnonzero(seen).astype(np.int64)
    return np.unique(x)


def _locate(job: MatchJob, g, ra: np.ndarray, dec: np.ndarray) -> _Located:
    """Chunks and cells of the external rows: two independent computations, in two threads for
    a large upload."""
    ch = job.table.manifest.chunker

    def placement() -> tuple[np.ndarray, np.ndarray]:
        rows, chunks = place(ra, dec, ch["num_stripes"], ch["num_sub_stripes"], job.radius, by_chunk=False)
        keep = _lookup(chunks, job.table.chunk_array()) >= 0  # no catalogue rows: no match
        return rows[keep], chunks[keep]

    if ra.size < PARALLEL_ROWS:
        rows, chunks = placement()
        crow, cell = expand(g, ra, dec, by_row=False)
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            cells = pool.submit(expand, g, ra, dec, by_row=False)
            rows, chunks = placement()
            crow, cell = cells.result()
    return _Located(rows, chunks, crow, cell)


def _share_makers(g, loc: _Located, assignment: dict[str, np.ndarray], ra: np.ndarray, dec: np.ndarray,
                  chunk_filter: bool) -> dict[str, Callable[[], dict[str, pa.Table]]]:
    """What each worker gets, made when called (in the worker's thread, so that one worker's rows
    are gathered while another's are sent): the external rows with a chunk among its chunks,
    once each whatever the number of those chunks, in every cell they reach (XID, positions,
    cell); the zones of those cells with their binning; with ``chunk_filter``, its chunks that
    have external rows. Workers with no external row get nothing."""
    addrs = list(assignment)
    if not addrs:
        return {}
    visit = np.concatenate([np.asarray(assignment[a], np.int64) for a in addrs])
    owner_of = np.concatenate([np.full(len(assignment[a]), i, np.int64) for i, a in enumerate(addrs)])
    order = np.argsort(visit, kind="stable")
    visit, owner_of = visit[order], owner_of[order]
    at = _lookup(loc.chunks, visit)
    if (at < 0).any():
        raise QEngineError(f"crossmatch: chunk {int(loc.chunks[at < 0][0])} was assigned to no worker")
    owner = owner_of[at]
    has_rows = np.bincount(owner, minlength=len(addrs)) > 0

    def make(i: int) -> dict[str, pa.Table]:
        mine = owner == i
        wanted = np.zeros(ra.size, bool)
        wanted[loc.rows[mine]] = True
        sel = wanted[loc.crow]
        x, cell = loc.crow[sel], loc.cell[sel]
        xid = x.astype(np.int32) if ra.size <= np.iinfo(np.int32).max else x  # a smaller upload
        share = {UPLOAD: pa.table({XID: pa.array(xid), EXT_RA: pa.array(ra[x]), EXT_DEC: pa.array(dec[x]),
                                   CELL: pa.array(cell)}),
                 ZONES: zone_table(g, cell)}
        if chunk_filter:
            share[CHUNKS] = pa.table({"chunkId": pa.array(_distinct(loc.chunks[mine]).astype(np.int32))})
        return share

    return {addr: functools.partial(make, i) for i, addr in enumerate(addrs) if has_rows[i]}


def _shares(g, loc: _Located, assignment: dict[str, np.ndarray], ra: np.ndarray, dec: np.ndarray,
            chunk_filter: bool) -> dict[str, dict[str, pa.Table]]:
    """Every worker's share (:func:`_share_makers`), made now."""
    return {a: make() for a, make in _share_makers(g, loc, assignment, ra, dec, chunk_filter).items()}


def visit_runs(all_chunks: np.ndarray, rows: np.ndarray, wanted: np.ndarray, max_runs: int) -> np.ndarray:
    """The chunks to visit for external rows in ``wanted`` (sorted, a subset of the table's sorted
    ``all_chunks`` of ``rows`` rows each): ``wanted`` with the gaps between its chunks filled where
    skipping them would save no read (fewer rows than a Parquet row group), then the smallest
    gaps filled until at most ``max_runs`` runs are left. Runs become ``BETWEEN``s in the worker,
    a filter its scan evaluates (an IN list of scattered ids is slower than reading everything),
    and the join with the shipped zones and cells does the selecting (with a list of the chunks
    that have external rows when most visited chunks have none: ``CHUNK_FILTER_SHARE``)."""
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
                 timeout: float, shares: dict[str, Callable[[], dict[str, pa.Table]]] | None = None
                 ) -> list[pa.RecordBatch]:
    """One query per worker, concurrently, each with the shipped rows of its own chunks (the
    tables are sorted by chunkId), or with ``shares``, each worker's own tables, made in its
    thread (a worker without a share has nothing to do); the first error cancels the others."""
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

    if shares is not None:
        assignment = {a: cs for a, cs in assignment.items() if a in shares}
    else:
        parts = {a: {k: share(t, cs) for k, t in shipped.items()} for a, cs in assignment.items()}
        shares = {a: functools.partial(dict, p) for a, p in parts.items()}
        # a worker given only chunks without external rows (gaps filled between runs) has nothing to do
        if UPLOAD in shipped:
            assignment = {a: cs for a, cs in assignment.items() if parts[a][UPLOAD].num_rows}

    def run(addr: str, chunks: np.ndarray) -> None:
        lane = "interactive" if chunks.size <= INTERACTIVE_MAX_CHUNKS else "scan"
        try:
            kw = {"query_id": f"{qid}-{addr}", "chunk_ids": chunks, "uploads": shares[addr](), "lane": lane,
                  "timeout_seconds": timeout, "batch_rows": RESULT_BATCH_ROWS}
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
    g = grid_of(job)
    loc = _locate(job, g, ra, dec)
    chunks = _distinct(loc.chunks)
    if chunks.size == 0:
        return _empty_parts(job)
    all_chunks = job.table.chunk_array()
    runs = RUNS_PER_WORKER * max(1, len(czar.live_workers()))
    visit = visit_runs(all_chunks, job.table.chunk_row_weights(all_chunks), chunks, runs)
    assignment = czar._assign(SimpleNamespace(table=job.table, tables=[job.table], overlap_tables=[]), visit)
    chunk_filter = chunks.size < CHUNK_FILTER_SHARE * visit.size
    shares = _share_makers(g, loc, assignment, ra, dec, chunk_filter)
    t1 = time.perf_counter()
    sql = algorithm.worker_sql(job, chunk_filter=chunk_filter)
    batches = _run_workers(czar, sql, assignment, {}, timeout, shares=shares)
    t2 = time.perf_counter()
    parts = pa.Table.from_batches(batches) if batches else _empty_parts(job)
    if parts.schema.field(XID).type != pa.int64():  # shipped as int32
        parts = parts.set_column(parts.schema.get_field_index(XID), XID, pc.cast(parts.column(XID), pa.int64()))
    result = algorithm.combine(parts, job, czar._run_local, ra.size)
    log.info("crossmatch %s: %d external rows -> %d cells on %d workers, %d chunks (%d visited%s); placed "
             "in %.3f s, matched in %.3f s, combined in %.3f s, %d pairs", algorithm.name, ra.size,
             loc.crow.size, len(shares), chunks.size, visit.size,
             ", filtered by chunk" if chunk_filter else "", t1 - t0, t2 - t1, time.perf_counter() - t2,
             result.num_rows)
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
    Index arithmetic in numpy/Arrow (a DuckDB join and sort of ~10^6 rows took a second)."""
    rows, take = pair_order(pairs, cat_id, external.num_rows, outer=outer)
    picks = pa.array(take, mask=take < 0) if outer else pa.array(take)
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


