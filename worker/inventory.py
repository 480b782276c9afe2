"""What a worker holds: the tables of its data root, their files and chunks, and the DuckDB
views that bind logical table names to the files a query needs."""
from __future__ import annotations

import bisect
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from qengine.catalog import Column
from qengine.store import FileEntry, TableManifest, list_tables, load_manifest, table_dir

log = logging.getLogger(__name__)

OVERLAP_SUFFIX = "__overlap"
INDEX_SUFFIX = "__index"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


@dataclass
class HeldTable:
    """One table as held by this worker: its manifest and the files present on disk."""

    manifest: TableManifest
    directory: Path
    files: dict[str, list[FileEntry]] = field(default_factory=dict)  # kind -> held files
    chunks: list[int] = field(default_factory=list)                 # sorted chunk ids held
    chunk_array: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))  # chunks, as numpy
    # chunks (with rows or overlap rows) covered by a data or overlap file of the store not held
    # here: joins reading this table's rows and overlap there must go elsewhere
    lacking_overlap: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    @property
    def database(self) -> str:
        return self.manifest.database

    @property
    def name(self) -> str:
        return self.manifest.table

    def schema(self) -> pa.Schema:
        cols = [Column(c["name"], c["datatype"]) for c in self.manifest.columns]
        fields = [pa.field(c.name, c.arrow_type()) for c in cols]
        if self.manifest.role != "replicated":
            fields += [pa.field("chunkId", pa.int32()), pa.field("subChunkId", pa.int32())]
        return pa.schema(fields)

    def files_for(self, kind: str, chunks: list[int] | None) -> list[FileEntry]:
        """Held files of ``kind`` whose chunk range meets ``chunks`` (sorted; None: all)."""
        files = self.files.get(kind, [])
        if chunks is None or kind in ("index", "replicated"):
            return files
        c = np.asarray(chunks, dtype=np.int64)
        out = []
        for f in files:
            i = int(np.searchsorted(c, f.first_chunk))
            if i < c.size and c[i] <= f.last_chunk:
                out.append(f)
        return out


def _all_wanted(held: np.ndarray, wanted: list[int], f: FileEntry) -> bool:
    """Whether every held chunk of the table in ``f``'s chunk range is in ``wanted`` (sorted)."""
    lo, hi = np.searchsorted(held, [f.first_chunk, f.last_chunk + 1])
    i, j = np.searchsorted(wanted, [f.first_chunk, f.last_chunk + 1])
    if j - i < hi - lo:
        return False
    return bool(np.isin(held[lo:hi], wanted[i:j], assume_unique=True).all())


def _covered(chunk_ids: list[int], ranges: list[tuple[int, int]]) -> list[int]:
    """The chunk ids lying in any of the (possibly overlapping) closed ranges."""
    merged: list[list[int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    starts = [a for a, _ in merged]
    out = []
    for c in chunk_ids:
        i = bisect.bisect_right(starts, c) - 1
        if i >= 0 and c <= merged[i][1]:
            out.append(c)
    return out


class Inventory:
    """The tables under a worker's data root, reloaded when their manifests change."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, str], HeldTable] = {}
        self._stamps: dict[tuple[str, str], float] = {}
        self._held: frozenset[int] = frozenset()
        self._held_array = np.empty(0, np.int64)
        self._outside: dict[tuple[str, str], frozenset[str]] = {}
        self.refresh()

    def refresh(self) -> None:
        with self._lock:
            seen = set()
            for db, name in list_tables(self.root):
                key = (db, name)
                seen.add(key)
                d = table_dir(self.root, db, name)
                stamp = (d / "_table.json").stat().st_mtime_ns
                if self._stamps.get(key) == stamp:
                    continue
                m = load_manifest(d)
                held = HeldTable(m, d)
                outside = set()
                for f in m.files:
                    if (d / f.path).exists():
                        held.files.setdefault(f.kind, []).append(f)
                        real = os.path.realpath(d / f.path)
                        if not real.startswith(str(self.root) + os.sep):  # symlinked placement
                            outside.add(os.path.dirname(real))
                self._outside[key] = frozenset(outside)
                if m.role != "replicated":
                    # placement cuts this table's files where it cuts the leader's, and a chunk's
                    # rows may lie in several files (increments): a chunk is held only if every
                    # data file covering it is here, and a join reading this table's rows and
                    # overlap at a chunk needs every data and overlap file covering it
                    here = {f.path for k in ("data", "overlap") for f in held.files.get(k, [])}
                    away_data = [(f.first_chunk, f.last_chunk) for f in m.files
                                 if f.kind == "data" and f.path not in here]
                    away_overlap = [(f.first_chunk, f.last_chunk) for f in m.files
                                    if f.kind == "overlap" and f.path not in here]
                    held.chunks = _covered(m.chunk_ids(), [(f.first_chunk, f.last_chunk)
                                                            for f in held.files.get("data", [])])
                    if away_data and held.chunks:
                        partial = set(_covered(held.chunks, away_data))
                        held.chunks = [c for c in held.chunks if c not in partial]
                    held.chunk_array = np.asarray(held.chunks, dtype=np.int64)
                    if away_data or away_overlap:
                        held.lacking_overlap = np.asarray(_covered(sorted(m.chunks), away_data + away_overlap),
                                                          dtype=np.int64)
                self._tables[key], self._stamps[key] = held, stamp
            for key in set(self._tables) - seen:
                del self._tables[key], self._stamps[key]
                self._outside.pop(key, None)
            self._held = frozenset(c for t in self._tables.values() for c in t.chunks)
            self._held_array = np.asarray(sorted(self._held), dtype=np.int64)

    def outside_dirs(self) -> list[str]:
        """Directories outside the root that held files resolve into (symlinked placement on
        shared storage), sorted: the worker's sandbox must allow reading them."""
        with self._lock:
            return sorted(set().union(*self._outside.values()))

    def tables(self) -> list[HeldTable]:
        with self._lock:
            return list(self._tables.values())

    def held_chunk_array(self) -> np.ndarray:
        """The held chunk ids, sorted, as a numpy array."""
        return self._held_array

    def held_chunks(self) -> frozenset[int]:
        """Chunk ids held for any table (computed once per refresh: queries ask every time)."""
        return self._held


def chunk_condition(chunks, held, max_ranges: int = 64, pos=None) -> str:
    """SQL selecting rows of ``chunks`` (sorted), as ranges where they are runs of ``held``.

    The czar gives each worker contiguous runs of chunks, so a ``BETWEEN`` or two usually
    replace an IN list of thousands of ids (and let Parquet statistics prune row groups).
    Vectorised: a full scan sends ~10^5 chunk ids.
    """
    c = np.asarray(chunks, dtype=np.int64)
    if c.size == 0:
        return "FALSE"
    h = np.asarray(held, dtype=np.int64)
    i = np.searchsorted(h, c)
    known = (i < h.size) & (h[np.minimum(i, max(h.size - 1, 0))] == c) if h.size else np.zeros(c.size, bool)
    # a new range starts where the position in `held` does not follow the previous one
    idx = np.where(known, i, -2 - np.arange(c.size))
    start = np.r_[True, np.diff(idx) != 1]
    first = c[start]
    last = c[np.r_[np.flatnonzero(start)[1:] - 1, c.size - 1]]
    if first.size > max_ranges:
        return "chunkId IN (" + ",".join(map(str, c.tolist())) + ")"
    parts = [f"chunkId = {a}" if a == b else f"chunkId BETWEEN {a} AND {b}"
             for a, b in zip(first.tolist(), last.tolist())]
    return "(" + " OR ".join(parts) + ")"


# {{db.table}} or {{db.table|col1,col2}}: the optional list names the only columns the query
# reads (a hint from the czar: binding a star over a wide table costs more than a cone search).
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w$]*)\s*\.\s*([A-Za-z_][\w$]*)\s*"
                         r"(?:\|\s*([A-Za-z_][\w$]*(?:\s*,\s*[A-Za-z_][\w$]*)*)\s*)?\}\}")


@dataclass
class Binding:
    """The query's SQL with table placeholders replaced, and what it covers."""

    sql: str
    files: int
    registrations: dict[str, pa.Table]


def bind_sql(inventory: Inventory, sql: str, chunks: list[int] | None,
             uploads: dict[str, pa.Table] | None = None, prefix: str = "q") -> Binding:
    """Replace ``{{db.table}}`` placeholders with the files this query needs.

    ``{{db.T}}`` is T's rows in ``chunks`` (every held chunk when None), ``{{db.T__overlap}}``
    the overlap rows serving those chunks, ``{{db.T__index}}`` the director index,
    ``{{TAP_UPLOAD.name}}`` an uploaded table. ``{{db.T|a,b}}`` reads only columns a and b
    (plus chunkId and subChunkId) of T. The czar writes the placeholders; the worker
    substitutes them and never parses the SQL itself.
    """
    tables = {(t.database.lower(), t.name.lower()): t for t in inventory.tables()}
    uploads = {k.lower(): (k, v) for k, v in (uploads or {}).items()}
    regs: dict[str, pa.Table] = {}
    n_files = 0

    def register(table: pa.Table) -> str:
        name = f"__{prefix}_{len(regs)}"
        regs[name] = table
        return _quote(name)

    if chunks is not None:
        chunks = np.asarray(chunks, dtype=np.int64)

    def substitute(match: re.Match) -> str:
        nonlocal n_files
        db, name = match.group(1), match.group(2)
        if db.lower() == "tap_upload":
            if name.lower() not in uploads:
                raise KeyError(f"no uploaded table named {name!r}")
            return register(uploads[name.lower()][1])
        kind = "data"
        base = name
        for suffix, k in ((OVERLAP_SUFFIX, "overlap"), (INDEX_SUFFIX, "index")):
            if name.lower().endswith(suffix):
                base, kind = name[: -len(suffix)], k
        t = tables.get((db.lower(), base.lower()))
        if t is None:
            raise KeyError(f"table {db}.{base} is not held by this worker")
        if t.manifest.role == "replicated":
            kind = "replicated"
        elif kind != "data" and t.manifest.role != "director":
            raise KeyError(f"table {db}.{base} is a {t.manifest.role} table: it has no {kind}")
        files = t.files_for(kind, chunks)
        if not files:
            schema = t.schema() if kind != "index" else pa.schema(
                [("id", pa.int64()), ("chunkId", pa.int32()), ("subChunkId", pa.int32())])
            return register(schema.empty_table())
        n_files += len(files)

        def scan(fs: list[FileEntry]) -> str:
            return "read_parquet([" + ", ".join(_sql_str(str(t.directory / f.path)) for f in fs) + "])"

        if chunks is None or kind not in ("data", "overlap"):
            return scan(files)
        cols = "*"
        if match.group(3):
            names = {c.strip().lower(): c.strip() for c in ["chunkId", "subChunkId"] + match.group(3).split(",")}
            cols = ", ".join(_quote(c) for c in names.values())
        # Data files whose every chunk is wanted need no chunk filter (a full scan split
        # between workers then filters only the files at the edges of each worker's run).
        full = [f for f in files if kind == "data" and _all_wanted(t.chunk_array, chunks, f)]
        part = [f for f in files if not (kind == "data" and _all_wanted(t.chunk_array, chunks, f))]
        sel = []
        if full:
            sel.append(f"SELECT {cols} FROM {scan(full)}")
        if part:
            sel.append(f"SELECT {cols} FROM {scan(part)} WHERE {chunk_condition(chunks, t.chunk_array)}")
        return "(" + " UNION ALL ".join(sel) + ")"

    text = PLACEHOLDER.sub(substitute, sql)
    return Binding(text, n_files, regs)
