"""TAP_SCHEMA generated from the czar's metadata, kept as Arrow tables and queried in ADQL on a
local DuckDB (the same parser and DuckDB translation as catalogue queries). The VOSI tableset is
written from the same records, so the two always agree."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
from sqlglot import exp

from czar.dialects import to_duckdb
from czar.metadata import Metadata
from czar.tap.votable import column_votable_type
from qengine.catalog import Column
from qengine.errors import QueryError
from qengine.sqlfuncs import register

__all__ = ["ColumnDesc", "KeyDesc", "TableDesc", "TapSchema", "tap_schema_tables"]

SCHEMA = "TAP_SCHEMA"
UPLOAD_SCHEMA = "TAP_UPLOAD"


@dataclass
class ColumnDesc:
    name: str
    datatype: str
    arraysize: str | None = None
    xtype: str | None = None
    unit: str | None = None
    ucd: str | None = None
    description: str | None = None
    utype: str | None = None
    principal: bool = False
    indexed: bool = False
    std: bool = False
    nullable: bool = True


@dataclass
class KeyDesc:
    key_id: str
    from_table: str
    target_table: str
    columns: list[tuple[str, str]]  # (from column, target column)
    description: str | None = None


@dataclass
class TableDesc:
    schema: str
    name: str  # qualified: schema.table
    description: str | None
    columns: list[ColumnDesc]
    keys: list[KeyDesc] = field(default_factory=list)
    table_type: str = "table"
    nrows: int | None = None


@dataclass
class SchemaDesc:
    name: str
    description: str | None
    tables: list[TableDesc]


def _c(name: str, datatype: str, description: str, *, principal: bool = True, std: bool = True,
       nullable: bool = True) -> ColumnDesc:
    arraysize = "*" if datatype == "char" else None
    return ColumnDesc(name, datatype, arraysize, description=description, principal=principal, std=std,
                      nullable=nullable)


# TAP 1.1 section 4: the five tables, their columns (all required ones) and their own keys.
_TS_TABLES = {
    "schemas": ("description of schemas in this tableset", [
        _c("schema_name", "char", "schema name for reference to TAP_SCHEMA.schemas", nullable=False),
        _c("utype", "char", "lists the utypes of schemas in the tableset"),
        _c("description", "char", "describes schemas in the tableset"),
        _c("schema_index", "int", "recommended sort order when listing schemas"),
    ]),
    "tables": ("description of tables in this tableset", [
        _c("schema_name", "char", "the schema this table belongs to", nullable=False),
        _c("table_name", "char", "the fully qualified table name", nullable=False),
        _c("table_type", "char", "one of: table view", nullable=False),
        _c("utype", "char", "lists the utype of tables in the tableset"),
        _c("description", "char", "describes tables in the tableset"),
        _c("table_index", "int", "recommended sort order when listing tables"),
    ]),
    "columns": ("description of columns in this tableset", [
        _c("table_name", "char", "the table this column belongs to", nullable=False),
        _c("column_name", "char", "the column name", nullable=False),
        _c("utype", "char", "lists the utypes of columns in the tableset"),
        _c("ucd", "char", "lists the UCDs of columns in the tableset"),
        _c("unit", "char", "lists the unit used for column values in the tableset"),
        _c("description", "char", "describes the columns in the tableset"),
        _c("datatype", "char", "lists the ADQL datatype of columns in the tableset", nullable=False),
        _c("arraysize", "char", "lists the size of variable-length columns in the tableset"),
        _c("xtype", "char", "a DALI or custom extended type annotation"),
        _c('"size"', "int", "deprecated: use arraysize"),  # a reserved word: delimited, as TAP 1.1 says
        _c("principal", "int", "a principal column; 1 means 1, 0 means 0", nullable=False),
        _c("indexed", "int", "an indexed column; 1 means 1, 0 means 0", nullable=False),
        _c("std", "int", "a standard column; 1 means 1, 0 means 0", nullable=False),
        _c("column_index", "int", "recommended sort order when listing columns"),
    ]),
    "keys": ("description of foreign keys in this tableset", [
        _c("key_id", "char", "unique key to join to TAP_SCHEMA.key_columns", nullable=False),
        _c("from_table", "char", "the table with the foreign key", nullable=False),
        _c("target_table", "char", "the table with the primary key", nullable=False),
        _c("utype", "char", "lists the utype of keys in the tableset"),
        _c("description", "char", "describes keys in the tableset"),
    ]),
    "key_columns": ("description of foreign key columns in this tableset", [
        _c("key_id", "char", "key to join to TAP_SCHEMA.keys", nullable=False),
        _c("from_column", "char", "column in the from_table", nullable=False),
        _c("target_column", "char", "column in the target_table", nullable=False),
    ]),
}
_TS_KEYS = [
    ("tables_schema", "tables", "schemas", [("schema_name", "schema_name")]),
    ("columns_table", "columns", "tables", [("table_name", "table_name")]),
    ("keys_from", "keys", "tables", [("from_table", "table_name")]),
    ("keys_target", "keys", "tables", [("target_table", "table_name")]),
    ("key_columns_key", "key_columns", "keys", [("key_id", "key_id")]),
]


def _tap_schema_desc() -> SchemaDesc:
    tables = []
    for name, (desc, cols) in _TS_TABLES.items():
        keys = [KeyDesc(f"{SCHEMA}.{kid}", f"{SCHEMA}.{frm}", f"{SCHEMA}.{to}", pairs)
                for kid, frm, to, pairs in _TS_KEYS if frm == name]
        tables.append(TableDesc(SCHEMA, f"{SCHEMA}.{name}", desc, cols, keys))
    return SchemaDesc(SCHEMA, "the IVOA TAP 1.1 metadata schema", tables)


_ROLE_TEXT = {
    "director": "director table: partitioned into sky chunks by its position, id {id}",
    "child": "child table of {director}: its rows live in their {director} row's chunk",
    "replicated": "replicated table: a copy on every worker",
}


def _catalogue_schemas(meta: Metadata) -> list[SchemaDesc]:
    by_db: dict[str, list[TableDesc]] = {}
    for t in sorted(meta.tables.values(), key=lambda t: (t.database.lower(), t.name.lower())):
        m = t.manifest
        qualified = f"{t.database}.{t.name}"
        indexed = {c for c in (m.id_column, m.ra_column, m.dec_column, m.foreign_key) if c}
        principal = {c for c in (m.id_column, m.ra_column, m.dec_column) if c}
        cols = []
        for c in t.columns:
            datatype, arraysize, xtype = column_votable_type(Column(c["name"], c["datatype"]).arrow_type())
            if datatype == "char" and c.get("arraysize"):
                arraysize = str(c["arraysize"])
            cols.append(ColumnDesc(
                c["name"], datatype, arraysize, c.get("xtype") or xtype, c.get("unit") or None,
                c.get("ucd") or None, c.get("description") or None,
                principal=bool(c.get("principal", c["name"] in principal)), indexed=c["name"] in indexed,
                nullable=bool(c.get("nullable", True))))
        keys = []
        if m.role == "child" and m.director and m.foreign_key:
            director = next((d for d in meta.tables.values()
                             if d.database.lower() == t.database.lower() and d.name.lower() == m.director.lower()),
                            None)
            if director is not None and director.manifest.id_column:
                keys.append(KeyDesc(f"{qualified}.{m.foreign_key}", qualified, f"{director.database}.{director.name}",
                                    [(m.foreign_key, director.manifest.id_column)],
                                    f"{t.name}.{m.foreign_key} refers to {director.name}"))
        desc = _ROLE_TEXT.get(m.role, "{role} table").format(id=m.id_column, director=m.director, role=m.role)
        by_db.setdefault(t.database, []).append(TableDesc(t.database, qualified, desc, cols, keys, nrows=t.rows))
    return [SchemaDesc(db, f"catalogue database {db}", tables) for db, tables in by_db.items()]


def _string_table(columns: list[ColumnDesc], rows: list[tuple]) -> pa.Table:
    arrays = {}
    for i, c in enumerate(columns):
        typ = pa.int32() if c.datatype == "int" else pa.string()
        arrays[c.name.strip('"')] = pa.array([r[i] for r in rows], type=typ)
    return pa.table(arrays)


def tap_schema_tables(schemas: list[SchemaDesc]) -> dict[str, pa.Table]:
    """The five TAP_SCHEMA tables (Arrow) describing ``schemas``."""
    srows, trows, crows, krows, kcrows = [], [], [], [], []
    ti = 0
    for si, s in enumerate(schemas):
        srows.append((s.name, None, s.description, si))
        for t in s.tables:
            ti += 1
            trows.append((s.name, t.name, t.table_type, None, t.description, ti))
            for ci, c in enumerate(t.columns):
                size = int(c.arraysize.rstrip("*")) if c.arraysize and c.arraysize.rstrip("*") else None
                crows.append((t.name, c.name, c.utype, c.ucd, c.unit, c.description, c.datatype, c.arraysize,
                              c.xtype, size, int(c.principal), int(c.indexed), int(c.std), ci + 1))
            for k in t.keys:
                krows.append((k.key_id, k.from_table, k.target_table, None, k.description))
                kcrows += [(k.key_id, f, to) for f, to in k.columns]
    rows = {"schemas": srows, "tables": trows, "columns": crows, "keys": krows, "key_columns": kcrows}
    return {name: _string_table(_TS_TABLES[name][1], rows[name]) for name in _TS_TABLES}


def _column_meta(name: str) -> dict[str, dict[str, str]]:
    return {c.name.strip('"'): {"description": c.description} for c in _TS_TABLES[name][1] if c.description}


class TapSchema:
    """The tableset (catalogue databases plus TAP_SCHEMA) and a DuckDB answering ADQL over
    TAP_SCHEMA."""

    def __init__(self, metadata: Metadata) -> None:
        self.metadata = metadata
        self._lock = threading.Lock()
        self.refresh()

    def refresh(self) -> None:
        """Rebuild from the metadata (after the czar reloaded it)."""
        self._source = self.metadata.tables  # Metadata.reload() replaces this dict
        schemas = _catalogue_schemas(self.metadata) + [_tap_schema_desc()]
        tables = tap_schema_tables(schemas)
        con = duckdb.connect(config={"threads": 1, "enable_external_access": False,
                                     "autoinstall_known_extensions": False,
                                     "autoload_known_extensions": False})
        register(con, persistent=True)  # ADQL functions (DISTANCE, CONTAINS...) over TAP_SCHEMA too
        con.execute(f'CREATE SCHEMA "{SCHEMA}"')
        for name, t in tables.items():
            con.register(f"__ts_{name}", t)
            # materialised: cursors (one per query, from any thread) do not see registered views
            con.execute(f'CREATE TABLE "{SCHEMA}"."{name}" AS SELECT * FROM "__ts_{name}"')
            con.unregister(f"__ts_{name}")
        with self._lock:
            self.schemas, self.tables, self._con = schemas, tables, con

    def current(self) -> "TapSchema":
        """Itself, rebuilt first if the czar reloaded its metadata (``Czar.refresh``)."""
        if self.metadata.tables is not self._source:
            self.refresh()
        return self

    def table(self, qualified: str) -> TableDesc | None:
        low = qualified.lower()
        return next((t for s in self.schemas for t in s.tables if t.name.lower() == low), None)

    @staticmethod
    def references(tree: exp.Expression) -> tuple[bool, bool, bool]:
        """Whether a parsed query reads TAP_SCHEMA, TAP_UPLOAD, and other tables."""
        ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
        ts = up = other = False
        for t in tree.find_all(exp.Table):
            db = (t.db or "").upper()
            if db == SCHEMA:
                ts = True
            elif db == UPLOAD_SCHEMA:
                up = True
            elif t.name.lower() not in ctes:
                other = True
        return ts, up, other

    def query(self, tree: exp.Expression, maxrec: int) -> tuple[pa.Table, bool]:
        """Run a parsed ADQL query over TAP_SCHEMA; (first ``maxrec`` rows, overflow)."""
        sql = to_duckdb(tree)
        with self._lock:
            cur = self._con.cursor()
        try:
            try:
                rel = cur.sql(sql)
                table = rel.limit(maxrec + 1).to_arrow_table() if rel is not None else None
            except duckdb.Error as exc:
                raise QueryError(f"TAP_SCHEMA query failed: {str(exc).splitlines()[0]}") from None
        finally:
            cur.close()
        if table is None:
            raise QueryError("the query returned no table")
        overflow = table.num_rows > maxrec
        table = table.slice(0, maxrec)
        # descriptions of TAP_SCHEMA columns, when a result column is one of them by name
        meta: dict[str, dict[str, str]] = {}
        for name in _TS_TABLES:
            meta.update({k: v for k, v in _column_meta(name).items() if k not in meta})
        fields = [f.with_metadata({k: v for k, v in meta[f.name].items() if v}) if f.name in meta else f
                  for f in table.schema]
        return table.cast(pa.schema(fields)), overflow
