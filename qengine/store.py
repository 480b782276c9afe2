"""The on-disk layout of a partitioned table and its manifest, ``_table.json``.

``<root>/<database>/<table>/`` holds ``data/``, ``overlap/`` and ``index/`` Parquet files (each a
sorted run of consecutive chunks, or of director ids for the index) and ``_table.json``. The
manifest is the single source of truth: a file not listed in it does not exist for readers,
which is what makes an ingest one transaction (files are written first, the manifest is
replaced atomically last). The partitioner writes manifests; workers and the czar read them.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from qengine.errors import QEngineError

__all__ = [
    "MANIFEST",
    "FORMAT",
    "FileEntry",
    "ChunkStats",
    "Transaction",
    "TableManifest",
    "StoreError",
    "table_dir",
    "load_manifest",
    "list_tables",
    "atomic_write_text",
]

MANIFEST = "_table.json"
FORMAT = "qengine-table/1"
KINDS = ("data", "overlap", "index", "replicated")


class StoreError(QEngineError):
    """A table directory or manifest is missing or inconsistent."""


@dataclass
class FileEntry:
    """One Parquet file of a table: a sorted run of chunks (or of ids, for the index)."""

    kind: str  # data | overlap | index | replicated
    path: str  # relative to the table directory
    rows: int
    bytes: int
    txn: int
    first_chunk: int | None = None
    last_chunk: int | None = None
    first_id: int | None = None
    last_id: int | None = None


@dataclass
class ChunkStats:
    """Rows held for one chunk and the bounding box of their positions (degrees)."""

    rows: int = 0
    overlap_rows: int = 0
    ra_min: float | None = None
    ra_max: float | None = None
    dec_min: float | None = None
    dec_max: float | None = None

    def merge(self, other: "ChunkStats") -> None:
        self.rows += other.rows
        self.overlap_rows += other.overlap_rows
        for attr, fn in (("ra_min", min), ("dec_min", min), ("ra_max", max), ("dec_max", max)):
            a, b = getattr(self, attr), getattr(other, attr)
            setattr(self, attr, b if a is None else a if b is None else fn(a, b))


_CHUNK_FIELDS = ("rows", "overlap_rows", "ra_min", "ra_max", "dec_min", "dec_max")


@dataclass
class Transaction:
    """One committed ingest."""

    id: int
    started: str
    committed: str
    fingerprint: str  # of the inputs and options: re-running the same ingest is a no-op
    inputs: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    rejected: int = 0
    note: str = ""


@dataclass
class TableManifest:
    """Everything a reader needs to know about a partitioned (or replicated) table."""

    database: str
    table: str
    role: str
    columns: list[dict[str, Any]]
    chunker: dict[str, Any] | None = None  # num_stripes, num_sub_stripes, overlap
    id_column: str | None = None
    ra_column: str | None = None
    dec_column: str | None = None
    director: str | None = None
    foreign_key: str | None = None
    files: list[FileEntry] = field(default_factory=list)
    chunks: dict[int, ChunkStats] = field(default_factory=dict)
    transactions: list[Transaction] = field(default_factory=list)
    format: str = FORMAT

    # ------------------------------------------------------------------ queries
    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files if f.kind in ("data", "replicated"))

    def files_of(self, kind: str) -> list[FileEntry]:
        return [f for f in self.files if f.kind == kind]

    def chunk_ids(self) -> list[int]:
        return sorted(c for c, s in self.chunks.items() if s.rows > 0)

    def next_txn(self) -> int:
        return max((t.id for t in self.transactions), default=0) + 1

    def find_transaction(self, fingerprint: str) -> Transaction | None:
        return next((t for t in self.transactions if t.fingerprint == fingerprint), None)

    # ------------------------------------------------------------------ (de)serialisation
    def to_json(self) -> str:
        # Per-chunk statistics are stored column-wise: tables have up to ~150k chunks, and one
        # JSON object per chunk made the manifest slow to write and read.
        ids = sorted(self.chunks)
        cols = {name: [getattr(self.chunks[c], name) for c in ids] for name in _CHUNK_FIELDS}
        d = {
            "format": self.format, "database": self.database, "table": self.table, "role": self.role,
            "chunker": self.chunker, "id_column": self.id_column, "ra_column": self.ra_column,
            "dec_column": self.dec_column, "director": self.director, "foreign_key": self.foreign_key,
            "columns": self.columns,
            "transactions": [vars(t) for t in self.transactions],
            "files": [vars(f) for f in self.files],
            "chunks": {"chunkId": ids, **cols},
        }
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str, source: str = "<manifest>") -> "TableManifest":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StoreError(f"{source}: not valid JSON: {exc}") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            fmt = d.get("format") if isinstance(d, dict) else None
            raise StoreError(f"{source}: unknown manifest format {fmt!r}, expected {FORMAT!r}")
        try:
            d["files"] = [FileEntry(**f) for f in d.get("files", [])]
            ch = d.get("chunks", {})
            cols = [ch[name] for name in _CHUNK_FIELDS]
            d["chunks"] = {int(c): ChunkStats(*vals) for c, *vals in zip(ch["chunkId"], *cols)}
            d["transactions"] = [Transaction(**t) for t in d.get("transactions", [])]
            return cls(**d)
        except (TypeError, KeyError) as exc:
            raise StoreError(f"{source}: malformed manifest: {exc}") from None

    def save(self, directory: Path) -> None:
        """Replace ``directory/_table.json`` atomically (the commit point of a transaction)."""
        atomic_write_text(Path(directory) / MANIFEST, self.to_json())


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def table_dir(root: str | os.PathLike, database: str, table: str) -> Path:
    return Path(root) / database / table


def load_manifest(directory: str | os.PathLike) -> TableManifest:
    path = Path(directory) / MANIFEST
    if not path.exists():
        raise StoreError(f"{directory}: no {MANIFEST} (not a qengine table, or never committed)")
    return TableManifest.from_json(path.read_text(), source=str(path))


def list_tables(root: str | os.PathLike) -> list[tuple[str, str]]:
    """(database, table) pairs with a committed manifest under ``root``, sorted."""
    root = Path(root)
    out: Iterable[Path] = root.glob(f"*/*/{MANIFEST}") if root.exists() else []
    return sorted((p.parent.parent.name, p.parent.name) for p in out)
