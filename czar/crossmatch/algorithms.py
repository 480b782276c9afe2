"""Match algorithms behind one small interface (as LSDB's crossmatch algorithms are): each one
writes the single DuckDB query a worker runs over its chunks and the external rows shipped to it,
and combines the workers' parts in the czar.

Both algorithms here bucket the two sides into zone/RA-bin cells (:mod:`czar.crossmatch.cells`:
the external copies arrive with their cells, shipped as ``TAP_UPLOAD.__xm`` with the zone table
``TAP_UPLOAD.__xm_zones``) and meet them in a hash equi-join on the cell before the exact
predicate: never a quadratic product.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import pyarrow as pa

from czar.crossmatch.cells import CELL, Grid, _lit, grid_for, own_cells_sql
from czar.crossmatch.job import CHUNKS, SEP, UPLOAD, XID, ZONES, MatchJob, quote
from czar.crossmatch.limits import reach

__all__ = ["ALGORITHMS", "AllMatches", "MatchAlgorithm", "NearestMatch", "catalogue_density", "first_pairs",
           "grid_of", "pair_order"]

RunLocal = Callable[[str, dict[str, pa.Table]], pa.Table]
_SKY_DEG2 = 4 * math.pi * (180 / math.pi) ** 2
_RAD = _lit(math.pi / 180.0)          # as qengine.sqlfuncs writes them
_HALF_RAD = _lit(0.5 * math.pi / 180.0)
_TWO_DEG = _lit(2.0 * 180.0 / math.pi)
FEW_PAIRS = 2.0   # expected matches per external row (densest chunks) up to which workers send all pairs


def catalogue_density(job: MatchJob) -> float:
    """Rows per square degree in the catalogue's densest chunks (the 99th percentile of chunk
    densities), which sizes the cells: external rows tend to lie where the catalogue is dense."""
    info = job.table
    rows = np.fromiter(info.chunk_rows().values(), dtype=np.float64)
    if rows.size == 0:
        return 0.0
    chunk_area = _SKY_DEG2 / max(1, info.chunker().all_chunks().size)
    return float(np.quantile(rows, 0.99)) / chunk_area


def grid_of(job: MatchJob) -> Grid:
    """The cells of this crossmatch: sized by its radius and the catalogue's density."""
    return grid_for(reach(job.radius), catalogue_density(job))


def pair_order(pairs: pa.Table, cat_id: str | None, n: int, *, outer: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, take)``: ``pairs`` (``XID`` in [0, n), ``SEP``) in the order of external row, then
    separation, then ``cat_id`` (when a column), then position: ``take`` indexes ``pairs`` and
    ``rows`` is each one's external row; ``outer``: each external row without a pair once, in its
    place, with ``take`` -1. Counting by external row: only rows with several pairs (a few per
    cent) are sorted (a lexsort of every pair cost a third of a second per million)."""
    xid = pairs.column(XID).to_numpy().astype(np.int64, copy=False)
    if not outer and (xid.size < 2 or bool(np.all(xid[1:] > xid[:-1]))):  # one pair per row, in order
        return xid, np.arange(xid.size, dtype=np.int64)
    counts = np.bincount(xid, minlength=n) if xid.size else np.zeros(n, np.int64)
    slots = np.maximum(counts, 1) if outer else counts
    start = np.cumsum(slots) - slots
    take = np.full(int(slots.sum()), -1, np.int64)
    multi = counts[xid] > 1
    single = np.flatnonzero(~multi)
    take[start[xid[single]]] = single
    o, xs = _multi_pairs_sorted(pairs, xid, multi, cat_id)
    if o.size:
        first = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
        rank = np.arange(xs.size) - np.repeat(first, np.diff(np.r_[first, xs.size]))
        take[start[xs] + rank] = o
    return np.repeat(np.arange(n, dtype=np.int64), slots), take


def _multi_pairs_sorted(pairs: pa.Table, xid: np.ndarray, multi: np.ndarray,
                        cat_id: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The pairs of external rows with several pairs (``multi``), ordered by external row, then
    separation (then catalogue id), and the external row of each."""
    m = np.flatnonzero(multi)
    if not m.size:
        return m, m
    keys = [pairs.column(SEP).to_numpy()[m], xid[m]]
    if cat_id and cat_id in pairs.column_names:
        keys.insert(0, pairs.column(cat_id).to_numpy(zero_copy_only=False)[m])
    o = m[np.lexsort(keys)]
    return o, xid[o]


def first_pairs(pairs: pa.Table, cat_id: str | None, n: int) -> np.ndarray:
    """The index of each external row's first pair in :func:`pair_order`'s order, by external
    row: pairs of rows with one pair go straight to their row's slot, and only rows with several
    are sorted."""
    xid = pairs.column(XID).to_numpy().astype(np.int64, copy=False)
    counts = np.bincount(xid, minlength=n)
    slot = np.full(n, -1, np.int64)
    multi = counts[xid] > 1
    single = np.flatnonzero(~multi)
    slot[xid[single]] = single
    o, xs = _multi_pairs_sorted(pairs, xid, multi, cat_id)
    if o.size:
        first = np.r_[True, xs[1:] != xs[:-1]]
        slot[xs[first]] = o[first]
    return slot[slot >= 0]


class MatchAlgorithm(ABC):
    """One way of matching external rows with a catalogue, chunk by chunk."""

    name: ClassVar[str]

    @abstractmethod
    def worker_sql(self, job: MatchJob, *, chunk_filter: bool = False) -> str:
        """The worker's query: columns ``XID``, ``job.columns`` and ``SEP`` (degrees);
        ``chunk_filter``: catalogue rows of the chunks in ``TAP_UPLOAD.__xm_chunks`` only."""

    @abstractmethod
    def combine(self, parts: pa.Table, job: MatchJob, run_local: RunLocal, n: int) -> pa.Table:
        """The answer from the workers' parts (same columns; ``n`` external rows)."""


class AllMatches(MatchAlgorithm):
    """Every catalogue row within the radius of each external row."""

    name = "all"

    def worker_sql(self, job: MatchJob, *, chunk_filter: bool = False) -> str:
        g = grid_of(job)
        t = job.table
        cols = list(dict.fromkeys([*job.columns, job.cat_ra, job.cat_dec]))
        cat = f"{{{{{t.database}.{t.name}|{','.join(cols)}}}}}"
        e, c = quote(job.ext_alias), quote(job.cat_alias)
        cat_side = own_cells_sql(cat, quote(job.cat_ra), quote(job.cat_dec), g, f"{{{{TAP_UPLOAD.{ZONES}}}}}",
                                 f"{{{{TAP_UPLOAD.{CHUNKS}}}}}" if chunk_filter else None)
        join = f"FROM {{{{TAP_UPLOAD.{UPLOAD}}}}} AS {e} JOIN ({cat_side}) AS {c} ON {e}.{CELL} = {c}.{CELL}"
        cols = [f"{c}.{quote(n)} AS {quote(n)}" for n in job.columns]
        if job.predicate is None and job.radius < 90.0:
            return self._within_radius_sql(job, join, cols)
        select = ", ".join([f"{e}.{XID} AS {XID}", *cols, f"{job.separation()} AS {SEP}"])
        where = " AND ".join([f"({job.match_condition()})"] + [f"({p})" for p in job.pushed])
        return f"SELECT {select} {join} WHERE {where}"

    @staticmethod
    def _within_radius_sql(job: MatchJob, join: str, cols: list[str]) -> str:
        """Pairs within ``job.radius``: the haversine of each candidate computed once, for the test
        and the separation (``qe_in_circle`` and ``qe_distance`` each compute it, in CASEs that
        check what holds here: shipped positions are valid, catalogue rows finite). The same
        expressions as those macros (:mod:`qengine.sqlfuncs`), so the same pairs to the bit, and
        the separation of their small-angle branch, which applies within 90 degrees."""
        e, c = quote(job.ext_alias), quote(job.cat_alias)
        ra1, dec1 = f"{e}.{quote(job.ext_ra)}", f"{e}.{quote(job.ext_dec)}"
        ra2, dec2 = f"{c}.{quote(job.cat_ra)}", f"{c}.{quote(job.cat_dec)}"
        dra = f"(({ra2} - {ra1}) - 360.0e0 * round(({ra2} - {ra1}) / 360.0e0))"
        hav = (f"pow(sin(({dec2} - {dec1}) * {_HALF_RAD}), 2) + cos({dec1} * {_RAD}) * cos({dec2} * {_RAD}) * "
               f"pow(sin({dra} * {_HALF_RAD}), 2)")
        r = _lit(job.radius)
        where = " AND ".join([f"abs({dec2} - {dec1}) <= {r}", f"{dec2} BETWEEN -90.0e0 AND 90.0e0"]
                             + [f"({p})" for p in job.pushed])
        inner = ", ".join([f"{e}.{XID} AS {XID}", *cols, f"{hav} AS __xm_h"])
        outer = ", ".join([XID, *[quote(n) for n in job.columns], f"{_TWO_DEG} * asin(sqrt(__xm_h)) AS {SEP}"])
        return (f"SELECT {outer} FROM (SELECT {inner} {join} WHERE {where}) AS __xm_p "
                f"WHERE __xm_h <= pow(sin({r} * {_HALF_RAD}), 2)")

    def combine(self, parts: pa.Table, job: MatchJob, run_local: RunLocal, n: int) -> pa.Table:
        return parts  # each pair is found once: in the catalogue row's own chunk, on one worker


class NearestMatch(AllMatches):
    """The nearest catalogue row within the radius of each external row (ties: lowest id)."""

    name = "nearest"

    @staticmethod
    def _order(job: MatchJob, prefix: str = "") -> str:
        key = f"{SEP}" + (f", {prefix}{quote(job.cat_id)}" if job.cat_id and job.cat_id in job.columns else "")
        return key

    def worker_sql(self, job: MatchJob, *, chunk_filter: bool = False) -> str:
        pairs = super().worker_sql(job, chunk_filter=chunk_filter)
        if catalogue_density(job) * math.pi * job.radius ** 2 <= FEW_PAIRS:
            # about one candidate per external row: the workers send every pair and the czar
            # picks (a window in each worker cost more than the few extra rows it saves)
            return pairs
        # best per external row among this worker's chunks; the czar picks among workers
        return (f"SELECT * FROM ({pairs}) AS __xm_p "
                f"QUALIFY row_number() OVER (PARTITION BY {XID} ORDER BY {self._order(job)}) = 1")

    def combine(self, parts: pa.Table, job: MatchJob, run_local: RunLocal, n: int) -> pa.Table:
        if parts.num_rows == 0:
            return parts
        # the first pair of each external row by (separation, id), by counting (a window over
        # 700k pairs in DuckDB took about a second, a lexsort of them a third)
        return parts.take(pa.array(first_pairs(parts, job.cat_id if job.cat_id in job.columns else None, n)))


ALGORITHMS: dict[str, type[MatchAlgorithm]] = {a.name: a for a in (AllMatches, NearestMatch)}
