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


# ------------------------------------------------------------------------------ match tables
#: Qserv's sph-partition-matches refuses a match whose two positions are farther apart than
#: the overlap minus this (1 mas, its EPSILON_DEG).
MATCH_EPSILON_DEG = 0.001 / 3600
FLAG_FIRST, FLAG_SECOND, FLAG_BOTH = 1, 2, 3


@dataclass
class DirectorLookup:
    """A director's rows by id (sorted): chunk, sub-chunk and position, for placing matches."""

    name: str
    ids: np.ndarray
    chunk: np.ndarray
    sub: np.ndarray
    ra: np.ndarray
    dec: np.ndarray

    def find(self, column: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(is NULL, found, index into the lookup) for each value of ``column``."""
        null = np.asarray(column.is_null().to_numpy(zero_copy_only=False), bool)
        v = pc.fill_null(pc.cast(column, pa.int64()), np.iinfo(np.int64).min).to_numpy(zero_copy_only=False)
        if self.ids.size == 0:
            return null, np.zeros(v.size, bool), np.zeros(v.size, np.int64)
        pos = np.minimum(np.searchsorted(self.ids, v), self.ids.size - 1)
        return null, (self.ids[pos] == v) & ~null, pos


def match_schema(schema: pa.Schema, flag_col: str) -> pa.Schema:
    """A match table's stored schema: its columns, the flag column, chunkId and subChunkId."""
    return placed_schema(schema.append(pa.field(flag_col, pa.int32(), False)))


def _separation(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Angular separation in degrees (haversine: accurate at small angles)."""
    r1, d1, r2, d2 = (np.radians(x) for x in (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0.0, 1.0))))


def _in_overlap_of(chunker: Chunker, ra: np.ndarray, dec: np.ndarray, chunk: np.ndarray) -> np.ndarray:
    """Whether each position lies in the overlap the partitioner stores for ``chunk``."""
    rows, ocid, _ = chunker.overlap_locations(ra, dec)
    have = rows.astype(np.int64) * (1 << 32) + ocid.astype(np.int64)
    want = np.arange(ra.size, dtype=np.int64) * (1 << 32) + chunk.astype(np.int64)
    return np.isin(want, have)


def place_matches(batch: pa.RecordBatch, chunker: Chunker, key1: str, key2: str,
                  first: DirectorLookup, second: DirectorLookup, flag_col: str) -> Placed:
    """Place match rows as Qserv's sph-partition-matches does, locating each side through its
    director's stored rows: a row goes to the chunk of its first director row (flag 1) and to
    that of its second (flag 2), once with flag 3 when both are in one chunk. A NULL id on one
    side places the row by the other side only; both NULL, an id with no director row, or two
    rows farther apart than the overlap (they could not be joined chunk by chunk) are bad rows.
    """
    n = batch.num_rows
    null1, found1, p1 = first.find(batch.column(key1))
    null2, found2, p2 = second.find(batch.column(key2))
    c1, s1, c2, s2 = first.chunk[p1], first.sub[p1], second.chunk[p2], second.sub[p2]
    reason: dict[int, str] = {}
    for i in np.flatnonzero(null1 & null2).tolist():
        reason[i] = f"NULL {key1} and {key2}: a match row needs at least one director id"
    for key, null, found, d in ((key1, null1, found1, first), (key2, null2, found2, second)):
        col = batch.column(key)
        for i in np.flatnonzero(~null & ~found).tolist():
            reason.setdefault(i, f"{key}={col[i].as_py()} has no row in director table {d.name}")
    both = np.flatnonzero(found1 & found2)
    if both.size:
        ra1, de1 = first.ra[p1[both]], first.dec[p1[both]]
        ra2, de2 = second.ra[p2[both]], second.dec[p2[both]]
        sep = _separation(ra1, de1, ra2, de2)
        far = sep > chunker.overlap - MATCH_EPSILON_DEG
        # The join reads the other side from the overlap of this side's chunk: check that it is
        # there (it is whenever the separation is within the overlap; this guards the geometry).
        cross = ~far & (c1[both] != c2[both])
        if cross.any():
            x = np.flatnonzero(cross)
            ok = (_in_overlap_of(chunker, ra2[x], de2[x], c1[both][x])
                  & _in_overlap_of(chunker, ra1[x], de1[x], c2[both][x]))
            far[x[~ok]] = True
        for j in np.flatnonzero(far).tolist():
            i = int(both[j])
            reason.setdefault(i, (
                f"{key1}={batch.column(key1)[i].as_py()} and {key2}={batch.column(key2)[i].as_py()} lie "
                f"{sep[j] * 3600:.3f} arcsec apart, more than the overlap ({chunker.overlap:g} deg): a "
                "match must lie within the overlap to be joined chunk by chunk (Qserv's "
                "sph-partition-matches refuses it too)"))
    bad = np.array(sorted(reason), dtype=np.int64)
    good = np.ones(n, bool)
    good[bad] = False
    same = good & found1 & found2 & (c1 == c2)
    by1 = good & found1 & ~same
    by2 = good & found2 & ~same
    rows = np.concatenate([np.flatnonzero(same), np.flatnonzero(by1), np.flatnonzero(by2)])
    cid = np.concatenate([c1[same], c1[by1], c2[by2]]).astype(np.int32)
    scid = np.concatenate([s1[same], s1[by1], s2[by2]]).astype(np.int32)
    flag = np.concatenate([np.full(same.sum(), FLAG_BOTH), np.full(by1.sum(), FLAG_FIRST),
                           np.full(by2.sum(), FLAG_SECOND)]).astype(np.int32)
    order = np.lexsort((scid, cid))
    taken = batch.take(pa.array(rows[order]))
    arrays = list(taken.columns) + [pa.array(flag[order], pa.int32()), pa.array(cid[order], pa.int32()),
                                    pa.array(scid[order], pa.int32())]
    data = pa.RecordBatch.from_arrays(arrays, schema=match_schema(batch.schema, flag_col))
    return Placed(data, None, bad, [reason[i] for i in bad.tolist()])
