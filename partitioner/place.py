"""Placement of rows in chunks: pure functions over Arrow batches, no I/O.

Director rows are located by their position; overlap copies go to every other chunk within
the overlap distance (Qserv's rule); child rows go to their director's chunk, looked up in the
director index. Rows that cannot be placed are returned with the reason, never silently lost.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from qengine.chunker import Chunker, validate_positions
from qengine.store import ChunkStats

CHUNK_COL = "chunkId"
SUB_CHUNK_COL = "subChunkId"


@dataclass
class Placed:
    """A batch with chunkId/subChunkId appended, sorted by (chunkId, subChunkId)."""

    data: pa.RecordBatch
    overlap: pa.RecordBatch | None
    bad_rows: np.ndarray  # indices into the input batch that could not be placed
    bad_reason: list[str]


def placed_schema(schema: pa.Schema) -> pa.Schema:
    """A table's schema with the chunkId and subChunkId columns every stored row carries."""
    return schema.append(pa.field(CHUNK_COL, pa.int32(), False)).append(
        pa.field(SUB_CHUNK_COL, pa.int32(), False))


def _with_chunks(batch: pa.RecordBatch, cid: np.ndarray, scid: np.ndarray) -> pa.RecordBatch:
    arrays = list(batch.columns) + [pa.array(cid, pa.int32()), pa.array(scid, pa.int32())]
    return pa.RecordBatch.from_arrays(arrays, schema=placed_schema(batch.schema))


def _sorted(batch: pa.RecordBatch, cid: np.ndarray, scid: np.ndarray,
            rows: np.ndarray | None = None) -> pa.RecordBatch:
    """``batch`` (or its ``rows``, which ``cid``/``scid`` belong to) sorted by (cid, scid).

    Selecting and sorting is one ``take``: taking ``rows`` first and then sorting would copy
    every column twice.
    """
    order = np.lexsort((scid, cid))
    if rows is None:
        if order.size and np.all(order[1:] > order[:-1]):
            return _with_chunks(batch, cid, scid)
        return _with_chunks(batch.take(pa.array(order)), cid[order], scid[order])
    return _with_chunks(batch.take(pa.array(rows[order])), cid[order], scid[order])


def _positions(batch: pa.RecordBatch, ra_col: str, dec_col: str) -> tuple[np.ndarray, np.ndarray]:
    ra = batch.column(ra_col)
    dec = batch.column(dec_col)
    # NULL positions become NaN so that they are reported as invalid like NaN ones.
    ra = pc.fill_null(pc.cast(ra, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    dec = pc.fill_null(pc.cast(dec, pa.float64()), np.nan).to_numpy(zero_copy_only=False)
    return ra, dec


def place_director(batch: pa.RecordBatch, chunker: Chunker, ra_col: str, dec_col: str,
                   id_col: str) -> Placed:
    """Locate director rows by position and make their overlap copies."""
    ra, dec = _positions(batch, ra_col, dec_col)
    ok = validate_positions(ra, dec)
    ids = batch.column(id_col)
    if ids.null_count:
        ok &= ~np.asarray(ids.is_null().to_numpy(zero_copy_only=False))
    bad = np.flatnonzero(~ok)
    reasons = []
    for i in bad.tolist():
        if batch.column(id_col)[i].as_py() is None:
            reasons.append(f"NULL {id_col}")
        else:
            reasons.append(f"invalid position {ra_col}={ra[i]!r}, {dec_col}={dec[i]!r} "
                           "(need finite values with dec in [-90, 90])")
    keep = None
    if bad.size:
        keep = np.flatnonzero(ok)
        ra, dec = ra[keep], dec[keep]
    cid, scid = chunker.locate(ra, dec)
    data = _sorted(batch, cid, scid, keep)
    overlap = None
    rows, ocid, oscid = chunker.overlap_locations(ra, dec)
    if rows.size:
        overlap = _sorted(batch, ocid, oscid, rows if keep is None else keep[rows])
    return Placed(data, overlap, bad, reasons)


def place_by_index(batch: pa.RecordBatch, fk_col: str, index_ids: np.ndarray,
                   index_chunk: np.ndarray, index_sub: np.ndarray, director: str) -> Placed:
    """Place child rows in their director's chunk through a sorted director index."""
    fk_arr = batch.column(fk_col)
    fk = pc.fill_null(pc.cast(fk_arr, pa.int64()), np.iinfo(np.int64).min).to_numpy(zero_copy_only=False)
    pos = np.searchsorted(index_ids, fk)
    pos_c = np.minimum(pos, max(index_ids.size - 1, 0))
    if index_ids.size == 0:
        found = np.zeros(fk.size, dtype=bool)
    else:
        found = (pos < index_ids.size) & (index_ids[pos_c] == fk)
    if fk_arr.null_count:
        found &= ~np.asarray(fk_arr.is_null().to_numpy(zero_copy_only=False))
    bad = np.flatnonzero(~found)
    reasons = [
        f"NULL {fk_col}" if fk_arr[i].as_py() is None else
        f"{fk_col}={fk_arr[i].as_py()} has no row in director table {director}"
        for i in bad.tolist()
    ]
    keep = np.flatnonzero(found)
    cid = index_chunk[pos_c[keep]].astype(np.int32)
    scid = index_sub[pos_c[keep]].astype(np.int32)
    return Placed(_sorted(batch, cid, scid, keep if bad.size else None), None, bad, reasons)


class StatsAccumulator:
    """Per-chunk row counts and position bounds, accumulated column-wise over sorted batches.

    A batch touches most chunks of a sky-wide input (~7 arrays x 100k chunks per batch on
    the LSST Object table), so the per-batch parts are folded into one every ``FOLD`` batches:
    memory stays at about one part per chunk of the sky instead of growing with the input.
    """

    FOLD = 8

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, ...]] = []

    def add(self, batch: pa.RecordBatch, ra_col: str | None, dec_col: str | None,
            overlap: bool = False) -> None:
        if batch.num_rows == 0:
            return
        cid = batch.column(CHUNK_COL).to_numpy()
        starts = np.flatnonzero(np.r_[True, cid[1:] != cid[:-1]])
        counts = np.diff(np.r_[starts, cid.size])
        nan = np.full(starts.size, np.nan)
        bounds = (nan, nan, nan, nan)
        if ra_col and dec_col and not overlap:
            ra, dec = _positions(batch, ra_col, dec_col)
            # fmin/fmax ignore NaN (a child's own position may be missing)
            bounds = (np.fmin.reduceat(ra, starts), np.fmax.reduceat(ra, starts),
                      np.fmin.reduceat(dec, starts), np.fmax.reduceat(dec, starts))
        zeros = np.zeros(starts.size, np.int64)
        rows, over = (zeros, counts) if overlap else (counts, zeros)
        self._parts.append((cid[starts].astype(np.int64), rows, over, *bounds))
        if len(self._parts) > self.FOLD:
            self._parts = [self._folded()]

    def _folded(self) -> tuple[np.ndarray, ...]:
        """All parts as one: one entry per chunk, sorted by chunk id."""
        if len(self._parts) == 1:
            return self._parts[0]
        cols = [np.concatenate(c) for c in zip(*self._parts)]
        order = np.argsort(cols[0], kind="stable")
        cid, rows, over, ra0, ra1, de0, de1 = (c[order] for c in cols)
        starts = np.flatnonzero(np.r_[True, cid[1:] != cid[:-1]])
        return (cid[starts], np.add.reduceat(rows, starts), np.add.reduceat(over, starts),
                np.fmin.reduceat(ra0, starts), np.fmax.reduceat(ra1, starts),
                np.fmin.reduceat(de0, starts), np.fmax.reduceat(de1, starts))

    def result(self) -> dict[int, ChunkStats]:
        if not self._parts:
            return {}
        cids, *agg = self._folded()
        out: dict[int, ChunkStats] = {}
        for c, n, o, a, b, d0, d1 in zip(cids.tolist(), *(x.tolist() for x in agg)):
            nanless = [None if v != v else v for v in (a, b, d0, d1)]
            out[c] = ChunkStats(n, o, *nanless)
        return out


def merge_stats(into: dict[int, ChunkStats], other: dict[int, ChunkStats]) -> None:
    for c, s in other.items():
        if c in into:
            into[c].merge(s)
        else:
            into[c] = s


def group_chunks(counts: dict[int, int], rows_per_file: int) -> list[tuple[int, int]]:
    """Cut the sorted chunk ids into runs of consecutive chunks of about ``rows_per_file`` rows.

    A run never splits a chunk; a chunk larger than ``rows_per_file`` is a run of its own.
    """
    groups: list[tuple[int, int]] = []
    first = last = None
    total = 0
    for c in sorted(counts):
        n = counts[c]
        if first is not None and total + n > rows_per_file and total > 0:
            groups.append((first, last))
            first, total = None, 0
        if first is None:
            first = c
        last = c
        total += n
    if first is not None:
        groups.append((first, last))
    return groups
