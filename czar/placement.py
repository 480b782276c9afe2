"""Placement: which worker holds which data files, R replicas each, balanced by bytes.

Pure functions over the stores' manifests (no I/O here but :func:`store_files`).

A data file is a run of consecutive chunks (DESIGN.md), and the unit of placement. Queries
join tables chunk by chunk (director with child, near-neighbour with overlap), so a worker
serves a chunk only if it holds that chunk for every table: placing each table's files
independently would leave joins with no worker able to serve them. So the chunk line is cut
into *segments* at the first chunks of the biggest table's data files (the "leader": its files
are placed exactly R times), each segment goes to R workers, and every other data or overlap
file goes to every worker holding a segment its chunk range meets. Files of other tables that
straddle a segment boundary are thus held more than R times (at most the workers of the
segments they meet): the price of co-location. Index and replicated files go everywhere.

Rebalancing (a worker added or removed) starts from the current holders and moves only what is
needed: missing replicas go to the least loaded workers, then segments move from the most to
the least loaded worker while that narrows the spread by more than a tolerance.
"""
from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from qengine.errors import ConfigError
from qengine.store import list_tables, load_manifest, table_dir

__all__ = ["PlacedFile", "Placement", "place", "store_files"]

FileKey = tuple[str, str, str]  # (database, table, path relative to the table directory)


@dataclass(frozen=True)
class PlacedFile:
    """One file of a store, as placement sees it."""

    database: str
    table: str
    kind: str            # data | overlap | index | replicated
    path: str            # relative to the table directory
    bytes: int
    first_chunk: int | None = None
    last_chunk: int | None = None

    @property
    def key(self) -> FileKey:
        return (self.database, self.table, self.path)

    @property
    def chunked(self) -> bool:
        return self.kind in ("data", "overlap")


@dataclass
class Placement:
    """Where each file goes; ``segments`` are (first chunk, workers) of the leader's runs."""

    workers: list[str]
    replicas: int
    files: dict[FileKey, tuple[str, ...]] = field(default_factory=dict)
    sizes: dict[FileKey, int] = field(default_factory=dict)
    segments: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)

    def files_of(self, worker: str) -> set[FileKey]:
        return {k for k, ws in self.files.items() if worker in ws}

    def bytes_per_worker(self) -> dict[str, int]:
        out = {w: 0 for w in self.workers}
        for k, ws in self.files.items():
            for w in ws:
                out[w] += self.sizes.get(k, 0)
        return out

    def moved(self, previous: Mapping[FileKey, Iterable[str]]) -> int:
        """How many (file, worker) copies this placement adds to ``previous``."""
        return sum(len(set(ws) - set(previous.get(k, ()))) for k, ws in self.files.items())


def store_files(root: str | Path) -> list[PlacedFile]:
    """Every file listed in the manifests under ``root``."""
    out = []
    for db, name in list_tables(root):
        m = load_manifest(table_dir(root, db, name))
        kind_of = (lambda f: "replicated") if m.role == "replicated" else (lambda f: f.kind)
        for f in m.files:
            out.append(PlacedFile(db, name, kind_of(f), f.path, int(f.bytes or 0), f.first_chunk, f.last_chunk))
    return out


def _leader(files: list[PlacedFile]) -> tuple[str, str] | None:
    size: dict[tuple[str, str], int] = defaultdict(int)
    for f in files:
        if f.kind == "data":
            size[(f.database, f.table)] += max(f.bytes, 1)
    return max(sorted(size), key=lambda t: size[t]) if size else None


def _segments_met(starts: list[int], f: PlacedFile) -> range:
    """Indices of the segments (starting at ``starts``, the first one open to the left) that
    the chunk range of ``f`` meets."""
    lo = max(bisect.bisect_right(starts, f.first_chunk) - 1, 0)
    hi = max(bisect.bisect_right(starts, f.last_chunk) - 1, 0)
    return range(lo, hi + 1)


def _spread(starts: list[int], f: PlacedFile) -> list[tuple[int, float]]:
    """(segment, share of the file's bytes) by the length of chunk range met in each."""
    segs = _segments_met(starts, f)
    if len(segs) == 1:
        return [(segs[0], float(f.bytes))]
    span = f.last_chunk - f.first_chunk + 1
    out = []
    for s in segs:
        a = f.first_chunk if s == segs[0] else max(f.first_chunk, starts[s])
        b = f.last_chunk if s == segs[-1] else min(f.last_chunk, starts[s + 1] - 1)
        out.append((s, f.bytes * (b - a + 1) / span))
    return out


def place(files: list[PlacedFile], workers: list[str], replicas: int,
          previous: Mapping[FileKey, Iterable[str]] | None = None, *, tolerance: float = 0.05) -> Placement:
    """Place ``files`` on ``workers`` with ``replicas`` copies of every chunk.

    ``previous`` maps file keys to the workers holding them now (what a rebalance starts from).
    ``tolerance``: segments move only while the most loaded worker is more than this fraction
    above the mean (moving a file has a cost; a perfect spread has none).
    """
    if not workers:
        raise ConfigError("placement needs at least one worker")
    if len(set(workers)) != len(workers):
        raise ConfigError(f"workers named twice: {sorted(w for w in set(workers) if workers.count(w) > 1)}")
    if replicas < 1:
        raise ConfigError(f"replicas must be 1 or more, got {replicas}")
    r = min(replicas, len(workers))
    previous = {k: set(v) for k, v in (previous or {}).items()}
    out = Placement(list(workers), r, sizes={f.key: f.bytes for f in files})
    everywhere = tuple(workers)
    for f in files:
        if not f.chunked or f.first_chunk is None or f.last_chunk is None:
            out.files[f.key] = everywhere  # no chunk range: every worker may need it
    chunked = [f for f in files if f.chunked and f.first_chunk is not None and f.last_chunk is not None]
    lead = _leader(chunked)
    if lead is None:
        return out
    starts = sorted({f.first_chunk for f in chunked if f.kind == "data" and (f.database, f.table) == lead})
    weight = [0.0] * len(starts)
    for f in chunked:
        for s, w in _spread(starts, f):
            weight[s] += w

    # current holders of a segment: the workers that hold every leader file meeting it
    lead_files: dict[int, list[FileKey]] = defaultdict(list)
    for f in chunked:
        if f.kind == "data" and (f.database, f.table) == lead:
            for s in _segments_met(starts, f):
                lead_files[s].append(f.key)
    live = set(workers)
    holders: list[list[str]] = []
    for s in range(len(starts)):
        sets = [previous.get(k, set()) for k in lead_files[s]]
        common = set.intersection(*sets) & live if sets else set()
        holders.append([w for w in workers if w in common][:r])

    load = {w: 0.0 for w in workers}
    for s, hs in enumerate(holders):
        for w in hs:
            load[w] += weight[s]
    # missing replicas: biggest segments first, each to the least loaded worker not holding it
    for s in sorted(range(len(starts)), key=lambda s: -weight[s]):
        while len(holders[s]) < r:
            w = min((w for w in workers if w not in holders[s]), key=lambda w: (load[w], workers.index(w)))
            holders[s].append(w)
            load[w] += weight[s]
    # narrow the spread: move segments from the most to the least loaded worker
    mean = sum(load.values()) / len(workers)
    for _ in range(4 * len(starts) * r + 1):
        hi = max(workers, key=lambda w: load[w])
        if load[hi] <= mean * (1 + tolerance):
            break
        best = None
        for lo in sorted(workers, key=lambda w: load[w]):
            gap = load[hi] - load[lo]
            cands = [s for s, hs in enumerate(holders) if hi in hs and lo not in hs and 0 < weight[s] < gap]
            if cands:
                # the move that leaves the pair closest to even
                s = min(cands, key=lambda s: abs(gap - 2 * weight[s]))
                best = (s, lo)
                break
        if best is None:
            break
        s, lo = best
        holders[s][holders[s].index(hi)] = lo
        load[hi] -= weight[s]
        load[lo] += weight[s]

    out.segments = [(starts[s], tuple(holders[s])) for s in range(len(starts))]
    for f in chunked:
        ws = {w for s in _segments_met(starts, f) for w in holders[s]}
        out.files[f.key] = tuple(w for w in workers if w in ws)
    return out
