"""What the czar knows about tables: schemas, roles, keys and per-chunk statistics, read from
the table manifests (metadata only: the czar never reads chunk files)."""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from qengine.chunker import Chunker
from qengine.errors import QueryError
from qengine.store import TableManifest, list_tables, load_manifest, table_dir

__all__ = ["TableInfo", "Metadata", "UPLOAD_DB", "upload_table_info"]

CHUNK_COLUMNS = ("chunkId", "subChunkId")
UPLOAD_DB = "TAP_UPLOAD"   # the schema TAP clients reference uploaded tables in


def _felis_type(t: pa.DataType) -> str:
    """The catalogue datatype word for an uploaded column's Arrow type."""
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_integer(t):
        return {1: "byte", 2: "short", 4: "int"}.get(t.bit_width // 8, "long")
    if pa.types.is_floating(t):
        return "float" if t.bit_width <= 32 else "double"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    return "string"


def upload_table_info(name: str, schema: pa.Schema) -> "TableInfo":
    """A table uploaded with a query (TAP UPLOAD): shipped to the workers like a replicated table."""
    cols = []
    for f in schema:
        c: dict = {"name": f.name, "datatype": _felis_type(f.type)}
        for key in ("unit", "ucd", "description"):
            v = (f.metadata or {}).get(key.encode())
            if v:
                c[key] = v.decode()
        cols.append(c)
    return TableInfo(TableManifest(database=UPLOAD_DB, table=name, role="replicated", columns=cols))


@dataclass
class TableInfo:
    """One table as the planner sees it."""

    manifest: TableManifest

    def __post_init__(self) -> None:
        # computed once: a cone search must not sort 150k chunk ids per query
        self._chunk_ids = self.manifest.chunk_ids()
        self._chunk_set = frozenset(self._chunk_ids)
        self._chunk_rows = {c: s.rows for c, s in self.manifest.chunks.items() if s.rows}
        self._chunk_array = np.asarray(self._chunk_ids, dtype=np.int64)
        self._rows_array = np.asarray([self._chunk_rows[c] for c in self._chunk_ids], dtype=np.int64)
        self._chunker = Chunker(**self.manifest.chunker) if self.manifest.chunker else None

    @property
    def database(self) -> str:
        return self.manifest.database

    @property
    def name(self) -> str:
        return self.manifest.table

    @property
    def role(self) -> str:
        return self.manifest.role

    @property
    def partitioned(self) -> bool:
        return self.role in ("director", "child")

    @property
    def columns(self) -> list[dict]:
        return self.manifest.columns

    def column_names(self) -> list[str]:
        return [c["name"] for c in self.manifest.columns]

    def column(self, name: str) -> dict | None:
        low = name.lower()
        return next((c for c in self.manifest.columns if c["name"].lower() == low), None)

    @property
    def rows(self) -> int:
        return self.manifest.rows

    def chunker(self) -> Chunker:
        return self._chunker

    def chunk_ids(self) -> list[int]:
        return self._chunk_ids

    def chunk_array(self) -> np.ndarray:
        """The chunk ids with rows, sorted (shared: do not modify)."""
        return self._chunk_array

    def chunk_set(self) -> frozenset[int]:
        return self._chunk_set

    def chunk_rows(self) -> dict[int, int]:
        return self._chunk_rows

    def chunk_row_weights(self, chunks: np.ndarray) -> np.ndarray:
        """Rows of each chunk (1 for a chunk without rows: it still costs a visit)."""
        if self._chunk_array.size == 0:
            return np.ones(len(chunks), np.int64)
        if chunks is self._chunk_array or (len(chunks) == self._chunk_array.size
                                           and np.array_equal(chunks, self._chunk_array)):
            return self._rows_array  # a full scan: no lookup
        i = np.minimum(np.searchsorted(self._chunk_array, chunks), self._chunk_array.size - 1)
        return np.where(self._chunk_array[i] == chunks, self._rows_array[i], 1)


class Metadata:
    """The tables of a store root, by database and name (case-insensitive)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.reload()

    def reload(self) -> None:
        self.tables: dict[tuple[str, str], TableInfo] = {}
        for db, name in list_tables(self.root):
            m = load_manifest(table_dir(self.root, db, name))
            self.tables[(db.lower(), name.lower())] = TableInfo(m)

    def with_uploads(self, uploads: dict[str, pa.Table] | None) -> "Metadata":
        """This metadata plus ``TAP_UPLOAD.<name>`` for each uploaded table (a per-query view)."""
        if not uploads:
            return self
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.tables = dict(self.tables)
        for name, table in uploads.items():
            view.tables[(UPLOAD_DB.lower(), name.lower())] = upload_table_info(name, table.schema)
        return view

    def for_user(self, principal) -> "Metadata":
        """The tables ``principal`` (a :class:`qengine.users.Principal`) may read, with the same
        interface: a table outside its grants resolves exactly like one that does not exist
        (same error, never named in a "did you mean" hint)."""
        view = object.__new__(type(self))
        view.__dict__.update(self.__dict__)
        view.tables = {k: t for k, t in self.tables.items() if principal.allows(t.database, t.name)}
        return view

    def databases(self) -> list[str]:
        return sorted({t.database for t in self.tables.values()})

    def resolve(self, database: str | None, table: str, default_db: str | None = None) -> TableInfo:
        """Find a table; unqualified names resolve in ``default_db`` or, failing that, in the one
        database holding a table of that name (an ambiguous name is an error naming candidates)."""
        if database:
            t = self.tables.get((database.lower(), table.lower()))
            if t is not None:
                return t
            known = [f"{d}.{n}" for d, n in ((t.database, t.name) for t in self.tables.values())]
            hint = difflib.get_close_matches(f"{database}.{table}", known, n=3)
            raise QueryError(f"unknown table {database}.{table}" +
                             (f" (did you mean {', '.join(hint)}?)" if hint else
                              f"; known tables: {', '.join(sorted(known)) or 'none'}"), token=table)
        if default_db:
            t = self.tables.get((default_db.lower(), table.lower()))
            if t is not None:
                return t
        matches = [t for (d, n), t in self.tables.items() if n == table.lower()]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(sorted(f"{t.database}.{t.name}" for t in matches))
            raise QueryError(f"table name {table} is ambiguous: qualify it as one of {names}", token=table)
        known = sorted({t.name for t in self.tables.values()})
        hint = difflib.get_close_matches(table, known, n=3)
        raise QueryError(f"unknown table {table}" +
                         (f" (did you mean {', '.join(hint)}?)" if hint else
                          f"; known tables: {', '.join(known) or 'none'}"), token=table)
