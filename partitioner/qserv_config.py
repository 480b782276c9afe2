"""Read an existing Qserv data set's table description as a qengine table definition.

Qserv's loaders describe a table with two kinds of files:

* a MySQL schema file (``Object.schema`` / ``Object.sql``): a ``CREATE TABLE`` statement, often a
  ``mysqldump`` with ``DROP TABLE IF EXISTS``, ``/*!40101 SET ... */`` lines, backquoted names,
  ``KEY``/``PRIMARY KEY`` clauses, ``ENGINE=MyISAM`` and per-column ``COMMENT '...'``;
* one or more ``sph-partition`` JSON configs (typically a database-wide ``common.json`` and a
  per-table ``Object.json``), merged in order.

:func:`load_qserv_table` reads both and returns a :class:`QservTableConfig`; its
:meth:`~QservTableConfig.to_table` is a :class:`qengine.catalog.Table` with the same role, keys
and columns. :func:`parse_mysql_schema` and :func:`load_partition_configs` are the two halves.

Config keys (names and meaning as in ``sph-partition`` / ``sph-partition-matches``, Qserv's
``PartConfig`` loader and its CSS; nested JSON ``{"part": {"pos": ...}}`` and flat dotted keys
``{"part.pos": ...}`` are the same key ``part.pos``):

- ``part.num-stripes``, ``part.num-sub-stripes``: the chunker (required when partitioned).
- ``part.overlap``: the table's own overlap radius (deg), sph-partition's overlap;
  ``part.default-overlap``: the database's overlap (deg), usually in ``common.json``.
- ``part.pos``: ``"raCol, declCol"``, the position a row is placed by: a director's own
  position; for a child, the director's position carried in the child rows (case01 ``Source``:
  ``raObject, declObject``). ``part.pos1``/``part.pos2``: a match table's two positions.
- ``part.id``: sph-partition's object id field: a director's id (secondary index), or a child's
  foreign key to its director (``--part.id-url`` mode). ``part.id1``/``part.id2``: a match
  table's two director ids.
- ``part.chunk``/``part.sub-chunk``: names of the chunkId/subChunkId columns (dropped).
- ``id``: the table's own unique id column (legacy; case01 ``Source``: ``sourceId``).
- ``pos``: list of ``"ra, dec"`` positions (sph-duplicate); the first is taken as a child's own
  position (data only; else the child's ``part.pos``).
- ``dirTable``/``dirDb``: the director table (and its database). Absent, or naming this table:
  the table is a director; naming another table: a child.
- ``dirColName`` (CSS): the column of *this* table holding the director's id (a director's own
  id; a child's foreign key). ``lonColName``/``latColName`` (CSS): the position, used when
  ``part.pos`` is absent.
- ``dirTable1``/``dirColName1``/``dirTable2``/``dirColName2``: a match table's two directors.
- ``in.csv.field``: input field names in file order; ``in.csv.null``, ``in.csv.delimiter``,
  ``in.csv.escape``, ``in.csv.quote``, ``in.csv.no-quote``, ``in.csv.no-escape``: input dialect.

Everything else (``out.*``, ``mr.*``, ``htm.*``, ``sharedScan.*``, ``part.prefix`` ...) is
ignored.

Merge order: later files override earlier keys, as sph-partition's ``ConfigStore`` does (a JSON
merge patch: a ``null`` value deletes a key, an object replaces a scalar and vice versa). Qserv's
legacy Python loader (``PartConfig``) did the opposite -- the *first* file to set a key won; pass
``first_wins=True`` to reproduce that.

Roles: ``replicated=True`` gives a replicated table (partition keys are ignored, the CSV dialect
is still read). Otherwise ``part.pos1``/``part.pos2`` (or ``part.id1``/``part.id2``) make a match
table; a ``dirTable`` (or ``dirDb``) naming another table makes a child; else the table is a
director and needs ``part.pos``.

Id columns: a director's id is ``dirColName``, ``id`` or ``part.id`` (they must agree when
several are set, as Qserv's loader reads ``dirColName`` and sph-partition ``part.id``); a child's
foreign key is ``dirColName`` or ``part.id`` (must agree), and its own ``id`` is its id_column.

Overlap: a director's :class:`~qengine.catalog.Partitioning` overlap is ``part.overlap``, else
``part.default-overlap``; a child's or match table's is the database's ``part.default-overlap``,
else its own ``part.overlap`` (children carry no overlap rows in qengine; Qserv configs often
set ``part.overlap: 0`` for them). The table's own value is kept in ``table_overlap``.

Columns: Qserv's internal ``chunkId`` and ``subChunkId`` columns (and whatever ``part.chunk`` /
``part.sub-chunk`` name) are dropped from the schema: qengine adds its own. ``in.csv.field`` is
returned as given (it may still list them). Column references in the configs are matched to the
schema case-insensitively and returned in the schema's spelling.

Every error is a :class:`~qengine.errors.CatalogError` naming the file (and line where known),
the table, and the column or config key at fault.
"""
from __future__ import annotations

import difflib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import sqlglot
from sqlglot import exp
from sqlglot import errors as sqlglot_errors

from qengine.catalog import DEFAULT_FLAG_COLUMN, FLOAT_TYPES, INTEGER_TYPES, Column, Partitioning, Table
from qengine.errors import CatalogError

__all__ = [
    "QservTableConfig",
    "parse_mysql_schema",
    "load_partition_configs",
    "load_qserv_table",
    "QSERV_INTERNAL_COLUMNS",
]

log = logging.getLogger(__name__)

#: Columns Qserv adds to partitioned tables; dropped from schemas (qengine adds its own).
QSERV_INTERNAL_COLUMNS = ("chunkId", "subChunkId")

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _suggest(name: str, candidates: Iterable[str]) -> str:
    lowered: dict[str, str] = {}
    for c in candidates:
        lowered.setdefault(c.lower(), c)
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
    return (" (did you mean " + " or ".join(repr(lowered[h]) for h in hits) + "?)") if hits else ""


# --------------------------------------------------------------------------------------------
# the result


@dataclass(frozen=True)
class QservTableConfig:
    """A Qserv table as described by its schema file and sph-partition configs.

    ``csv_*`` are the input dialect sph-partition would use, its defaults filled in (delimiter
    tab, quote ``"``, escape ``\\``, null ``NULL`` when quoting, else ``<escape>N``);
    ``csv_quote``/``csv_escape`` are None when ``in.csv.no-quote``/``no-escape`` disable them.
    ``csv_fields`` is ``in.csv.field`` (None when absent: the file has the schema's columns).
    """

    database: str
    table: str
    columns: tuple[Column, ...]
    role: str
    id_column: str | None = None
    ra_column: str | None = None
    dec_column: str | None = None
    director: str | None = None
    foreign_key: str | None = None
    child_pos: tuple[str, str] | None = None
    partitioning: Partitioning | None = None
    csv_fields: tuple[str, ...] | None = None
    csv_null: str | None = None
    csv_delimiter: str | None = None
    csv_escape: str | None = None
    csv_quote: str | None = None
    description: str | None = None
    director_database: str | None = None
    match_directors: tuple[tuple[str, str], ...] = ()
    match_pos: tuple[tuple[str, str], tuple[str, str]] | None = None
    flag_column: str | None = None     # a match table's part.flags (dropped from the columns)
    table_overlap: float | None = None
    sources: tuple[str, ...] = ()

    def to_table(self) -> Table:
        """The qengine :class:`~qengine.catalog.Table` with this role, keys and columns."""
        partitioned = self.role in ("child", "match")
        return Table(
            name=self.table, role=self.role, columns=self.columns, description=self.description,
            id_column=self.id_column, ra_column=self.ra_column, dec_column=self.dec_column,
            director=self.director if partitioned else None,
            foreign_key=self.foreign_key if partitioned else None,
            match_directors=self.match_directors if self.role == "match" else (),
            flag_column=self.flag_column if self.role == "match" else None)


# --------------------------------------------------------------------------------------------
# MySQL schema files


def _blank_sql_comments(text: str) -> str:
    """``text`` with MySQL comments (``-- ``, ``#``, ``/* */`` incl. ``/*! */``) turned into
    spaces, newlines kept: same length, so offsets and line numbers still match."""
    out = list(text)
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "'\"`":
            j = i + 1
            while j < n:
                if text[j] == "\\" and c != "`":
                    j += 2
                    continue
                if text[j] == c:
                    if j + 1 < n and text[j + 1] == c:  # doubled quote
                        j += 2
                        continue
                    break
                j += 1
            i = j + 1
            continue
        end = -1
        if c == "#" or (c == "-" and text.startswith("--", i)
                        and (i + 2 >= n or text[i + 2] in " \t\r\n")):
            end = text.find("\n", i)
            end = n if end < 0 else end
        elif c == "/" and text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
        if end >= 0:
            for k in range(i, end):
                if out[k] != "\n":
                    out[k] = " "
            i = end
            continue
        i += 1
    return "".join(out)


def _split_statements(code: str) -> list[tuple[int, int]]:
    """(start, end) spans of the ``;``-separated statements of comment-free ``code``."""
    spans = []
    start, i, n = 0, 0, len(code)
    while i < n:
        c = code[i]
        if c in "'\"`":
            j = i + 1
            while j < n:
                if code[j] == "\\" and c != "`":
                    j += 2
                    continue
                if code[j] == c:
                    if j + 1 < n and code[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            i = j + 1
            continue
        if c == ";":
            spans.append((start, i))
            start = i + 1
        i += 1
    if code[start:].strip():
        spans.append((start, n))
    return spans


_CREATE_TABLE = re.compile(
    r"\s*CREATE\s+(?:TEMPORARY\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?"
    r"((?:`(?:[^`]|``)+`|[\w$]+)(?:\s*\.\s*(?:`(?:[^`]|``)+`|[\w$]+))?)", re.I)
# sqlglot cannot read UNSIGNED/ZEROFILL after floating types (deprecated but valid MySQL).
_FLOAT_UNSIGNED = re.compile(
    r"(\b(?:float|double(?:\s+precision)?|real|decimal|numeric|dec|fixed)\b(?:\s*\([^)]*\))?)"
    r"((?:\s+(?:unsigned|zerofill)\b)+)", re.I)

_T = exp.DataType.Type


def _types(*names: str) -> frozenset:
    return frozenset(getattr(_T, n) for n in names if hasattr(_T, n))


_INT_TYPES = {
    _T.TINYINT: "byte", _T.SMALLINT: "short", _T.MEDIUMINT: "int", _T.INT: "int",
    _T.BIGINT: "long",
}
_UINT_TYPES = {  # unsigned: widened to hold the range (BIGINT UNSIGNED stays long)
    getattr(_T, "UTINYINT", None): "short", getattr(_T, "USMALLINT", None): "int",
    getattr(_T, "UMEDIUMINT", None): "int", getattr(_T, "UINT", None): "long",
    getattr(_T, "UBIGINT", None): "long", getattr(_T, "SERIAL", None): "long",
}
_UINT_TYPES.pop(None, None)
_DOUBLE_TYPES = _types("DOUBLE", "UDOUBLE", "DECIMAL", "UDECIMAL", "BIGDECIMAL", "MONEY")
_CHAR_TYPES = _types("CHAR", "NCHAR")
_VARCHAR_TYPES = _types("VARCHAR", "NVARCHAR")
_TEXT_TYPES = _types("TEXT", "TINYTEXT", "MEDIUMTEXT", "LONGTEXT", "BLOB", "TINYBLOB",
                     "MEDIUMBLOB", "LONGBLOB", "ENUM", "SET", "JSON")
_TIME_TYPES = _types("DATETIME", "DATETIME2", "DATETIME64", "TIMESTAMP", "TIMESTAMPTZ",
                     "TIMESTAMPLTZ", "TIMESTAMPNTZ", "DATE", "DATE32")
# MySQL type words sqlglot reads differently from MySQL (REAL is DOUBLE unless the server runs
# with REAL_AS_FLOAT; INTn are byte counts).
_WORD_TYPES = {"real": "double", "float4": "float", "float8": "double", "int1": "byte",
               "int2": "short", "int3": "int", "middleint": "int", "int4": "int", "int8": "long"}
_WIDEN = {"byte": "short", "short": "int", "int": "long", "long": "long"}


def _type_args(kind: exp.DataType) -> list[int]:
    out = []
    for p in kind.expressions:
        try:
            out.append(int(p.sql()))
        except ValueError:
            pass
    return out


def _felis_type(kind: exp.DataType, word: str) -> tuple[str, str | None]:
    """(felis datatype, arraysize) for a MySQL column type; ValueError if unsupported."""
    t = kind.this
    args = _type_args(kind)
    word = word.lower()
    if t == _T.BOOLEAN:
        return "boolean", None
    if t in (_T.TINYINT, getattr(_T, "UTINYINT", None)) and args == [1] and word.startswith(
            "tinyint"):
        return "boolean", None  # TINYINT(1): MySQL's BOOL
    if word in _WORD_TYPES and (t in _INT_TYPES or t in _UINT_TYPES or t in _DOUBLE_TYPES
                                or t == _T.FLOAT):
        felis = _WORD_TYPES[word]
        if t in _UINT_TYPES:
            felis = _WIDEN.get(felis, felis)
        return felis, None
    if t in _INT_TYPES:
        return _INT_TYPES[t], None
    if t in _UINT_TYPES:
        return _UINT_TYPES[t], None
    if t == _T.BIT:
        if args in ([], [1]):
            return "boolean", None
        raise ValueError(f"unsupported MySQL type {kind.sql('mysql')} (only BIT(1) maps to "
                         "boolean; use an integer type)")
    if t == _T.FLOAT:  # FLOAT(p): p > 24 is a DOUBLE in MySQL; FLOAT(M,D) stays single
        return ("double" if len(args) == 1 and args[0] > 24 else "float"), None
    if t in _DOUBLE_TYPES:
        return "double", None
    if t in _CHAR_TYPES:
        return "char", str(args[0] if args else 1)
    if t in _VARCHAR_TYPES:
        return "string", (f"{args[0]}*" if args else "*")
    if t == _T.BINARY:
        return "string", str(args[0] if args else 1)
    if t == _T.VARBINARY:
        return "string", (f"{args[0]}*" if args else "*")
    if t in _TEXT_TYPES:
        return "string", None
    if t in _TIME_TYPES:
        return "timestamp", None
    if t == getattr(_T, "YEAR", None):
        return "short", None
    raise ValueError(f"unsupported MySQL type {kind.sql('mysql')}")


def _key_names(nodes: Iterable[exp.Expression]) -> list[str]:
    names = []
    for node in nodes:
        while isinstance(node, (exp.Ordered, exp.ColumnPrefix)):
            node = node.this
        if isinstance(node, (exp.Column, exp.Identifier)):
            names.append(node.name)
    return names


def _unquote_name(raw: str) -> str:
    part = re.split(r"\s*\.\s*(?=(?:`|[\w$]))", raw.strip())[-1]
    if part.startswith("`") and part.endswith("`"):
        part = part[1:-1].replace("``", "`")
    return part


def _parse_schema(text: str, source: str, *, table: str | None = None,
                  drop: Iterable[str] = QSERV_INTERNAL_COLUMNS
                  ) -> tuple[str | None, list[Column], str | None]:
    """(table name, columns, table comment) of the CREATE TABLE in ``text``."""
    code = _blank_sql_comments(text)
    creates = []
    for start, end in _split_statements(code):
        m = _CREATE_TABLE.match(code, start, end)
        if m:
            creates.append((start, end, _unquote_name(m.group(1))))
    if not creates:
        raise CatalogError(f"{source}: no CREATE TABLE statement found")
    if len(creates) > 1:
        chosen = [c for c in creates if table is not None and c[2].lower() == table.lower()]
        if len(chosen) != 1:
            names = ", ".join(repr(c[2]) for c in creates)
            raise CatalogError(f"{source}: {len(creates)} CREATE TABLE statements ({names}); "
                               + (f"none for table {table!r}" if table is not None and not chosen
                                  else "name the table to use"))
        creates = chosen
    start, end, name = creates[0]
    base_line = code.count("\n", 0, start)
    stmt = _FLOAT_UNSIGNED.sub(lambda m: m.group(1) + " " * len(m.group(2)), code[start:end])

    def line_of(offset: int) -> int:
        return base_line + stmt.count("\n", 0, offset) + 1

    try:
        parsed = [s for s in sqlglot.parse(stmt, read="mysql") if s is not None]
    except sqlglot_errors.ParseError as err:
        info = err.errors[0] if err.errors else {}
        line = base_line + int(info.get("line") or 1)
        desc = info.get("description") or str(err)
        where = f"{source}:{line}:{info.get('col') or 1}"
        # "Expecting )" right after "<column> <word>" is an unknown type word
        offset = _offset_of(stmt, int(info.get("line") or 1), int(info.get("col") or 1))
        m = re.search(r"[(,]\s*(`(?:[^`]|``)+`|[\w$]+)\s+([A-Za-z_]\w*)\s*$",
                      stmt[:offset + 1]) if offset is not None else None
        if m and desc.startswith("Expecting )") and not _is_type_word(m.group(2)):
            col = _unquote_name(m.group(1))
            raise CatalogError(f"{where}: table {name!r}: column {col!r}: unsupported MySQL type "
                               f"{m.group(2).upper()}") from None
        raise CatalogError(f"{where}: malformed CREATE TABLE: {desc}") from None
    except sqlglot_errors.TokenError as err:
        raise CatalogError(f"{source}:{line_of(0)}: malformed CREATE TABLE: {err}") from None
    create = next((s for s in parsed if isinstance(s, exp.Create)), None)
    if create is None or not isinstance(create.this, exp.Schema):
        kind = "unsupported syntax" if create is None else "no column list (CREATE ... LIKE?)"
        raise CatalogError(f"{source}:{line_of(0)}: malformed CREATE TABLE {name!r}: {kind}")
    name = create.this.this.name if isinstance(create.this.this, exp.Table) else name

    not_null: set[str] = set()
    indexed: set[str] = set()
    defs: list[exp.ColumnDef] = []
    for node in create.this.expressions:
        if isinstance(node, exp.ColumnDef):
            defs.append(node)
        elif isinstance(node, exp.PrimaryKey):
            keys = {k.lower() for k in _key_names(node.expressions)}
            not_null |= keys
            indexed |= keys
        elif isinstance(node, exp.IndexColumnConstraint):
            indexed |= {k.lower() for k in _key_names(node.expressions)}
        elif isinstance(node, exp.UniqueColumnConstraint):
            target = node.this
            exprs = target.expressions if isinstance(target, exp.Schema) else node.expressions
            indexed |= {k.lower() for k in _key_names(exprs)}
    if not defs:
        raise CatalogError(f"{source}:{line_of(0)}: CREATE TABLE {name!r} has no columns")

    dropped = {d.lower() for d in drop}
    seen: dict[str, str] = {}
    columns: list[Column] = []
    for d in defs:
        ident = d.this
        cname = d.name
        meta = getattr(ident, "meta", None) or {}
        line = (base_line + int(meta["line"])) if "line" in meta else line_of(0)
        where = f"{source}:{line}: table {name!r}: column {cname!r}"
        if cname.lower() in dropped:
            continue
        if not _IDENT.match(cname):
            raise CatalogError(f"{where}: column name is not an identifier "
                               "([A-Za-z_][A-Za-z0-9_]*)")
        if cname.lower() in seen:
            raise CatalogError(f"{where}: duplicate column (already have {seen[cname.lower()]!r})")
        seen[cname.lower()] = cname
        kind = d.args.get("kind")
        if not isinstance(kind, exp.DataType):
            raise CatalogError(f"{where}: missing column type")
        word = ""
        if "end" in meta:
            wm = re.match(r"\s*([A-Za-z_]\w*)", stmt[int(meta["end"]) + 1:])
            word = wm.group(1) if wm else ""
        try:
            datatype, arraysize = _felis_type(kind, word)
        except ValueError as err:
            raise CatalogError(f"{where}: {err}") from None
        nullable, description = True, None
        for c in d.constraints:
            k = c.kind
            if isinstance(k, exp.NotNullColumnConstraint):
                nullable = bool(k.args.get("allow_null"))
            elif isinstance(k, exp.PrimaryKeyColumnConstraint):
                nullable = False
                indexed.add(cname.lower())
            elif isinstance(k, exp.UniqueColumnConstraint):
                indexed.add(cname.lower())
            elif isinstance(k, exp.CommentColumnConstraint) and k.this is not None:
                description = k.this.name if isinstance(k.this, exp.Literal) else k.this.sql()
        if cname.lower() in not_null:
            nullable = False
        columns.append(Column(name=cname, datatype=datatype, description=description or None,
                              nullable=nullable, indexed=cname.lower() in indexed,
                              arraysize=arraysize))
    if not columns:
        raise CatalogError(f"{source}: table {name!r}: no columns left after dropping Qserv's "
                           f"{', '.join(drop)}")
    comment = None
    props = create.args.get("properties")
    if props is not None:
        for p in props.expressions:
            if isinstance(p, exp.SchemaCommentProperty) and p.this is not None:
                comment = p.this.name or None
    return name, columns, comment


def _is_type_word(word: str) -> bool:
    """True if sqlglot reads ``word`` as a MySQL column type."""
    try:
        sqlglot.parse_one(f"CREATE TABLE _t (_c {word})", read="mysql")
        return True
    except (sqlglot_errors.ParseError, sqlglot_errors.TokenError):
        return False


def _offset_of(text: str, line: int, col: int) -> int | None:
    """0-based offset of 1-based (line, col) in ``text``."""
    pos = 0
    for _ in range(line - 1):
        nl = text.find("\n", pos)
        if nl < 0:
            return None
        pos = nl + 1
    return min(pos + max(col - 1, 0), len(text) - 1) if text else None


def parse_mysql_schema(text: str, source: str = "<schema>", *, table: str | None = None,
                       drop: Iterable[str] = QSERV_INTERNAL_COLUMNS
                       ) -> tuple[str | None, list[Column]]:
    """(table name, columns in order) of the ``CREATE TABLE`` in a MySQL schema file's ``text``.

    Other statements (``DROP TABLE``, ``SET``, mysqldump ``/*!... */`` lines) are skipped; with
    several CREATE TABLE statements, ``table`` picks one (case-insensitively). Qserv's internal
    ``chunkId``/``subChunkId`` columns (``drop``) are dropped: qengine adds its own.

    Types map to felis words: BIGINT→long, INT/INTEGER/MEDIUMINT→int, SMALLINT→short,
    TINYINT→byte, TINYINT(1)/BOOL/BOOLEAN/BIT(1)→boolean, unsigned integers widened to the next
    type (BIGINT UNSIGNED stays long), FLOAT→float (FLOAT(p>24)→double), REAL/DOUBLE/DOUBLE
    PRECISION/DECIMAL/NUMERIC→double (MySQL's REAL is a DOUBLE), CHAR(n)→char with arraysize n,
    VARCHAR(n)→string with arraysize ``n*``, BINARY/VARBINARY likewise as string,
    TEXT/BLOB/ENUM/SET/JSON→string, DATETIME/TIMESTAMP/DATE→timestamp, YEAR→short.
    ``NOT NULL`` (or membership of the PRIMARY KEY) makes a column non-nullable, a column
    ``COMMENT`` is its description, columns named in a KEY/INDEX/UNIQUE/PRIMARY KEY are marked
    indexed.
    Unsupported types (TIME, BIT(n>1), spatial types...) and malformed statements raise
    :class:`~qengine.errors.CatalogError` naming ``source``, the line and the column.
    """
    name, columns, _ = _parse_schema(text, source, table=table, drop=drop)
    return name, columns


# --------------------------------------------------------------------------------------------
# sph-partition JSON configs


def _strip_json_comments(text: str) -> str:
    """``text`` without ``//``, ``#`` and ``/* */`` comments and trailing commas (outside
    strings), same length and line breaks, so json's line/column numbers still hold."""
    out = list(text)
    i, n = 0, len(text)
    last_comma = -1  # output index of a ',' not yet followed by anything significant
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            last_comma = -1
            continue
        end = -1
        if c == "#" or text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
        if end >= 0:
            for k in range(i, end):
                if out[k] != "\n":
                    out[k] = " "
            i = end
            continue
        if c == ",":
            last_comma = i
        elif c in "}]":
            if last_comma >= 0:
                out[last_comma] = " "
            last_comma = -1
        elif not c.isspace():
            last_comma = -1
        i += 1
    return "".join(out)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"{path}: partition config file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CatalogError(f"{path}: cannot read partition config: {err}") from None
    try:
        doc = json.loads(_strip_json_comments(text))
    except json.JSONDecodeError as err:
        raise CatalogError(f"{path}:{err.lineno}:{err.colno}: invalid JSON: {err.msg}") from None
    if not isinstance(doc, dict):
        raise CatalogError(f"{path}: a partition config must be a JSON object, "
                           f"got {type(doc).__name__}")
    return doc


def _flatten(doc: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    for key, value in doc.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict):
            if value:
                _flatten(value, full + ".", out)
        else:
            out.pop(full, None)  # keep the file's own key order for "last one wins"
            out[full] = value
    return out


def _prefixes(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _load_configs(paths: Sequence[Path], first_wins: bool
                  ) -> tuple[dict[str, Any], dict[str, str]]:
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for path in paths:
        flat = _flatten(_read_json(path), "", {})
        for key, value in flat.items():
            below = [k for k in merged if k.startswith(key + ".")]
            above = [p for p in _prefixes(key) if p in merged]
            if first_wins:
                if value is None or key in merged or below or above:
                    continue
            else:
                for k in below + above:
                    del merged[k]
                    origin.pop(k, None)
                if value is None:  # JSON merge patch: null deletes
                    merged.pop(key, None)
                    origin.pop(key, None)
                    continue
            merged[key] = value
            origin[key] = str(path)
    return merged, origin


def _as_paths(paths: Sequence[str | Path] | str | Path | None) -> list[Path]:
    if paths is None:
        return []
    if isinstance(paths, (str, Path)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def load_partition_configs(paths: Sequence[str | Path], *, first_wins: bool = False
                           ) -> dict[str, Any]:
    """Merge sph-partition JSON configs into one flat ``{"part.pos": ..., ...}`` mapping.

    Nested objects are flattened with dots (``{"part": {"pos": x}}`` is ``part.pos``); lists and
    scalars are kept. Later files override earlier ones (sph-partition's merge patch: ``null``
    deletes a key); ``first_wins=True`` gives Qserv's legacy loader order instead. Files may hold
    ``//``, ``#`` and ``/* */`` comments and trailing commas. Unreadable or invalid files raise
    :class:`~qengine.errors.CatalogError` naming the file (and line:column).
    """
    return _load_configs(_as_paths(paths), first_wins)[0]


class _Config:
    """Typed access to merged config keys; errors name the file that set the key."""

    def __init__(self, values: dict[str, Any], origin: dict[str, str], paths: Sequence[Path],
                 database: str, table: str) -> None:
        self.values, self.origin = values, origin
        self.files = ", ".join(str(p) for p in paths) or "<no partition configs>"
        self.label = f"table {database}.{table}"

    def has(self, key: str) -> bool:
        return key in self.values

    def error(self, key: str, msg: str) -> CatalogError:
        where = self.origin.get(key, self.files)
        return CatalogError(f"{where}: {self.label}: key {key!r}: {msg}")

    def missing(self, key: str, msg: str) -> CatalogError:
        return CatalogError(f"{self.files}: {self.label}: key {key!r}: missing; {msg}")

    def string(self, key: str) -> str | None:
        value = self.values.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def integer(self, key: str) -> int | None:
        value = self.values.get(key)
        if value is None:
            return None
        if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {value!r}")
        return value

    def number(self, key: str) -> float | None:
        value = self.values.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"must be a number, got {value!r}")
        return float(value)

    def flag(self, key: str) -> bool:
        value = self.values.get(key)
        if value is None:
            return False
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0",
                                                                "yes", "no", "on", "off"):
            return value.strip().lower() in ("true", "1", "yes", "on")
        raise self.error(key, f"must be true or false, got {value!r}")

    def char(self, key: str, default: str) -> str:
        value = self.values.get(key)
        if value is None:
            return default
        if not isinstance(value, str) or len(value) != 1:
            raise self.error(key, f"must be a single character, got {value!r}")
        return value

    def pair(self, key: str) -> tuple[str, str] | None:
        """``"ra, decl"`` (or ``["ra", "decl"]``) → ("ra", "decl")."""
        value = self.values.get(key)
        if value is None:
            return None
        names = value.split(",") if isinstance(value, str) else value
        if isinstance(names, list) and len(names) == 2 and all(
                isinstance(x, str) and x.strip() for x in names):
            return names[0].strip(), names[1].strip()
        raise self.error(key, f"must name two columns as \"lonCol, latCol\", got {value!r}")

    def names(self, key: str) -> tuple[str, ...] | None:
        value = self.values.get(key)
        if value is None:
            return None
        if isinstance(value, str):
            value = [v for v in re.split(r"[\s,]+", value) if v]
        if not isinstance(value, list) or not value or not all(
                isinstance(x, str) and x.strip() for x in value):
            raise self.error(key, f"must be a list of field names, got {value!r}")
        return tuple(x.strip() for x in value)

    def first_of(self, keys: Sequence[str], what: str) -> tuple[str, str] | None:
        """(key, value) of the first of ``keys`` set; CatalogError if set ones disagree."""
        found = [(k, self.string(k)) for k in keys if self.has(k)]
        if not found:
            return None
        distinct = {v.lower() for _, v in found}
        if len(distinct) > 1:
            listing = ", ".join(f"{k!r} = {v!r} ({self.origin.get(k, '?')})" for k, v in found)
            raise CatalogError(f"{self.files}: {self.label}: conflicting {what}: {listing}")
        return found[0]


def _csv_dialect(cfg: _Config) -> dict[str, str | None]:
    """sph-partition's input dialect (csv::Dialect), defaults filled in."""
    delimiter = cfg.char("in.csv.delimiter", "\t")
    quote = None if cfg.flag("in.csv.no-quote") else cfg.char("in.csv.quote", '"')
    escape = None if cfg.flag("in.csv.no-escape") else cfg.char("in.csv.escape", "\\")
    if cfg.has("in.csv.null"):
        null = cfg.values["in.csv.null"]
        if not isinstance(null, str):
            raise cfg.error("in.csv.null", f"must be a string, got {null!r}")
    else:
        null = "NULL" if quote else (escape + "N" if escape else "")
    if delimiter in "\r\n":
        raise cfg.error("in.csv.delimiter", "cannot be CR or LF")
    if quote is not None and quote == delimiter:
        raise cfg.error("in.csv.quote", "cannot be the delimiter")
    if escape is not None and escape in (delimiter, quote):
        raise cfg.error("in.csv.escape", "cannot be the delimiter or the quote character")
    return {"csv_null": null, "csv_delimiter": delimiter, "csv_escape": escape,
            "csv_quote": quote}


def _partitioning(cfg: _Config, role: str) -> tuple[Partitioning, float | None]:
    values = {}
    for key in ("part.num-stripes", "part.num-sub-stripes"):
        v = cfg.integer(key)
        if v is None:
            raise cfg.missing(key, f"required for a {role} table")
        if v < 1:
            raise cfg.error(key, f"must be >= 1, got {v}")
        values[key] = v
    order = (("part.overlap", "part.default-overlap") if role == "director"
             else ("part.default-overlap", "part.overlap"))
    key = next((k for k in order if cfg.has(k)), None)
    if key is None:
        raise cfg.missing(order[0], f"a {role} table needs an overlap radius in degrees "
                                    f"('part.overlap' or 'part.default-overlap')")
    overlap = cfg.number(key)
    ns, nss = values["part.num-stripes"], values["part.num-sub-stripes"]
    height = 180.0 / (ns * nss)
    if not 0.0 <= overlap <= 10.0:
        raise cfg.error(key, f"must be between 0 and 10 degrees, got {overlap!r}")
    if overlap > height:
        raise cfg.error(key, f"overlap {overlap!r} deg exceeds the sub-stripe height "
                             f"180/({ns}*{nss}) = {height:.6g} deg")
    table_overlap = cfg.number("part.overlap") if cfg.has("part.overlap") else None
    return Partitioning(num_stripes=ns, num_sub_stripes=nss, overlap=overlap), table_overlap


def _find_schema(table: str, configs: Sequence[Path]) -> Path:
    tried: list[Path] = []
    for cfg in configs:
        for d in (cfg.parent, cfg.parent.parent / "schema"):
            for ext in (".schema", ".sql"):
                p = d / f"{table}{ext}"
                if p not in tried:
                    tried.append(p)
                if p.is_file():
                    return p
    if not tried:
        raise CatalogError(f"table {table}: no schema file given and no partition configs to "
                           "look beside")
    raise CatalogError(f"table {table}: no schema file given and none found; tried "
                       + ", ".join(str(p) for p in tried))


def load_qserv_table(database: str, table: str, schema_path: str | Path | None,
                     partition_configs: Sequence[str | Path], *, replicated: bool = False,
                     first_wins: bool = False) -> QservTableConfig:
    """Describe Qserv table ``database.table`` from its schema file and sph-partition configs.

    ``partition_configs`` are merged in order (see :func:`load_partition_configs`). With
    ``schema_path=None`` the schema is looked for as ``<table>.schema`` or ``<table>.sql``
    beside each config and in a sibling ``schema/`` directory (Qserv's test-data layout
    ``data/partition/*.json`` + ``data/schema/*.schema``). The module docstring lists the keys
    read and the role rules. Errors are :class:`~qengine.errors.CatalogError` naming the file,
    the table and the key or column at fault.
    """
    paths = _as_paths(partition_configs)
    values, origin = _load_configs(paths, first_wins)
    cfg = _Config(values, origin, paths, database, table)
    schema = Path(schema_path) if schema_path is not None else _find_schema(table, paths)
    try:
        text = schema.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"{schema}: schema file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CatalogError(f"{schema}: cannot read schema file: {err}") from None
    drop = list(QSERV_INTERNAL_COLUMNS)
    if not replicated:
        drop += [n for n in (cfg.string("part.chunk"), cfg.string("part.sub-chunk")) if n]
    is_match = not replicated and any(cfg.has(k) for k in ("part.pos1", "part.pos2", "part.id1", "part.id2"))
    flag_column = (cfg.string("part.flags") or DEFAULT_FLAG_COLUMN) if is_match else None
    if flag_column:  # sph-partition-matches writes it, as qengine's partitioner does
        drop.append(flag_column)
    schema_table, columns, comment = _parse_schema(text, str(schema), table=table, drop=drop)
    if schema_table is not None and schema_table.lower() != table.lower():
        log.warning("%s: CREATE TABLE names %r; using its columns for table %s.%s", schema,
                    schema_table, database, table)
    by_lower = {c.name.lower(): c for c in columns}

    def column(key: str, name: str, kinds: frozenset[str] | None = None, what: str = "") -> str:
        col = by_lower.get(name.lower())
        if col is None:
            raise cfg.error(key, f"column {name!r} not in the schema ({schema})"
                                 f"{_suggest(name, [c.name for c in columns])}")
        if kinds is not None and col.datatype not in kinds:
            raise cfg.error(key, f"column {col.name!r} must be {what}, not {col.datatype!r}")
        return col.name

    def position(key: str) -> tuple[str, str] | None:
        pos = cfg.pair(key)
        if pos is None and key == "part.pos" and cfg.has("lonColName") and cfg.has("latColName"):
            key, pos = "lonColName", (cfg.string("lonColName"), cfg.string("latColName"))
        if pos is None:
            return None
        return (column(key, pos[0], FLOAT_TYPES, "float or double (degrees)"),
                column(key if key != "lonColName" else "latColName", pos[1], FLOAT_TYPES,
                       "float or double (degrees)"))

    def table_name(key: str) -> str:
        name = cfg.string(key)
        if name is None:
            raise cfg.missing(key, "required")
        if not _IDENT.match(name):
            raise cfg.error(key, f"{name!r} is not a table name")
        return name

    fields: dict[str, Any] = dict(
        database=database, table=table, columns=tuple(columns), description=comment,
        csv_fields=cfg.names("in.csv.field"), sources=(str(schema), *map(str, paths)),
        **_csv_dialect(cfg))

    if replicated:
        return QservTableConfig(role="replicated", **fields)

    if any(cfg.has(k) for k in ("part.pos1", "part.pos2", "part.id1", "part.id2")):
        for a, b in (("part.pos1", "part.pos2"), ("part.id1", "part.id2")):
            if cfg.has(a) != cfg.has(b):
                present, absent = (a, b) if cfg.has(a) else (b, a)
                raise cfg.missing(absent, f"a match table with {present!r} needs it too")
        pos1, pos2 = position("part.pos1"), position("part.pos2")
        pairs = []
        for i in ("1", "2"):
            dname = table_name(f"dirTable{i}")
            if not cfg.has(f"dirColName{i}"):
                raise cfg.missing(f"dirColName{i}", f"the column holding {dname}'s id")
            pairs.append((dname, column(f"dirColName{i}", cfg.string(f"dirColName{i}"))))
        partitioning, table_overlap = _partitioning(cfg, "match")
        return QservTableConfig(
            role="match", director=pairs[0][0], foreign_key=pairs[0][1],
            match_directors=tuple(pairs), match_pos=(pos1, pos2) if pos1 else None,
            flag_column=flag_column, partitioning=partitioning, table_overlap=table_overlap, **fields)

    dir_table = cfg.string("dirTable")
    dir_db = cfg.string("dirDb")
    is_child = dir_table is not None and (
        dir_table.lower() != table.lower()
        or (dir_db is not None and dir_db.lower() != database.lower()))

    if is_child:
        director = table_name("dirTable")
        fk = cfg.first_of(("dirColName", "part.id"), "foreign keys to the director")
        if fk is None:
            raise cfg.missing("dirColName", f"a child table needs the column holding its "
                                            f"director's ({director}) id ('dirColName' or "
                                            "'part.id')")
        foreign_key = column(*fk)
        own_id = column("id", cfg.string("id")) if cfg.has("id") else None
        child_pos = position("part.pos")
        ra = dec = None
        own = cfg.values.get("pos")
        own = own[0] if isinstance(own, list) and own else own
        if isinstance(own, str) and own.count(",") == 1:
            a, b = (s.strip() for s in own.split(","))
            ca, cb = by_lower.get(a.lower()), by_lower.get(b.lower())
            if ca and cb and ca.datatype in FLOAT_TYPES and cb.datatype in FLOAT_TYPES:
                ra, dec = ca.name, cb.name
        if ra is None and child_pos is not None:
            ra, dec = child_pos
        partitioning, table_overlap = _partitioning(cfg, "child")
        return QservTableConfig(
            role="child", id_column=own_id, ra_column=ra, dec_column=dec, director=director,
            foreign_key=foreign_key, child_pos=child_pos,
            director_database=dir_db if dir_db is not None and dir_db != database else None,
            partitioning=partitioning, table_overlap=table_overlap, **fields)

    pos = position("part.pos")
    if pos is None:
        hint = (" (a child table names its director in 'dirTable')" if cfg.has("part.id")
                else "")
        raise cfg.missing("part.pos", "a director table needs its partitioning position "
                                      f"\"raCol, declCol\"{hint}; pass replicated=True for a "
                                      "replicated table")
    found = cfg.first_of(("dirColName", "id", "part.id"), "director id columns")
    if found is None:
        raise cfg.missing("id", "a director table needs its unique id column ('id', "
                                "'part.id' or 'dirColName')")
    id_column = column(*found, INTEGER_TYPES, "an integer type (byte, short, int, long)")
    partitioning, table_overlap = _partitioning(cfg, "director")
    return QservTableConfig(
        role="director", id_column=id_column, ra_column=pos[0], dec_column=pos[1],
        partitioning=partitioning, table_overlap=table_overlap, **fields)
