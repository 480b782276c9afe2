"""Catalogue metadata: catalogues, tables, columns and their Qserv partitioning roles.

A catalogue is defined in a YAML file (the shipped ones live in the ``catalogs`` package:
``lsst_dr``, ``sdss``, ``ukidss``, ``gaia``); :func:`load_catalog` reads and validates one and
returns a :class:`Catalog`. The YAML layout is documented at the top of each shipped file; in
short::

    name: sdss                    # catalogue key (required)
    database: sdss                # SQL database name (required)
    description: ...
    partitioning: {num_stripes: 85, num_sub_stripes: 12, overlap: 0.01667}
    band_sets:                    # optional: named band lists for column templates
      ugriz: {u: {em: em.opt.U}, g: {em: em.opt.B}}
    tables:
      PhotoObjAll:
        role: director            # director | child | replicated | match
        id_column: objID          # director: required
        ra_column: ra             # director: required (child/replicated: optional, data only)
        dec_column: decl
        aliases: {dec: decl}      # other names users may write for a column
        columns:
          - {name: objID, datatype: long, ucd: meta.id;meta.main, nullable: false}
          - bands: ugriz          # a template group, expanded by the loader
            order: by_band        # or by_column
            columns:
              - {name: "psfMag_{b}", datatype: float, unit: mag, ucd: "phot.mag;{em}"}
      Photoz:
        role: child
        director: PhotoObjAll     # child: required, a director of this catalogue
        foreign_key: objID        # child: required, a column of this table
        columns: [...]
      Neighbors:
        role: match
        match_directors: [[PhotoObjAll, objID], [PhotoObjAll, neighborObjID]]
        flag_column: partitioningFlags   # optional; written by the partitioner, not an input column
        columns: [...]

Column keys: ``name``, ``datatype`` (required; felis/VOTable vocabulary, :data:`DATATYPES`),
``unit`` (astropy-parsable), ``ucd``, ``description``, ``nullable``, ``principal``,
``indexed``, ``sentinel`` (the archive's missing-value marker), ``arraysize`` (char/string),
``sdm_column`` (provenance only: the lsst-sdm-schemas column the metadata was copied from).
``sdm_schema`` (catalogue) and ``sdm_table`` (table) are provenance keys of the same kind.

In a template group, ``{b}`` stands for the band and ``{B}`` for the band in upper case;
a band set given as a mapping supplies further variables per band (``{em}`` above).
Template strings must be quoted in YAML (``"{b}AperMag3"``), else ``{...}`` is a flow mapping.

Partitioning roles are Qserv's: a **director** has its own position and a unique id; a
**child** is placed in its director row's chunk through ``foreign_key`` (its own position, if
any, is kept as data); **replicated** tables are small and copied to every worker; a **match**
table relates rows of two directors (``match_directors``), and is placed with the first
director's row (``director``/``foreign_key`` of a match table are set to that first pair).

Every validation error is a :class:`~qengine.errors.CatalogError` whose message names the file,
the table and the key at fault, e.g.
``catalogs/x.yaml:12: table 'Object': key 'ra_column': column 'ra2' not found (did you mean 'ra'?)``.
"""
from __future__ import annotations

import difflib
import functools
import importlib.resources
import math
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import pyarrow as pa
import yaml

from qengine.errors import CatalogError

__all__ = [
    "DATATYPES",
    "ROLES",
    "Column",
    "Table",
    "Partitioning",
    "Catalog",
    "load_catalog",
    "available_catalogs",
    "validate_catalog",
]

DATATYPES = ("boolean", "byte", "short", "int", "long", "float", "double", "char", "string",
             "timestamp")
ROLES = ("director", "child", "replicated", "match")

INTEGER_TYPES = frozenset({"byte", "short", "int", "long"})
FLOAT_TYPES = frozenset({"float", "double"})
NUMERIC_TYPES = INTEGER_TYPES | FLOAT_TYPES
TEXT_TYPES = frozenset({"char", "string"})

_ARROW_TYPES = {
    "boolean": pa.bool_(),
    "byte": pa.int8(),
    "short": pa.int16(),
    "int": pa.int32(),
    "long": pa.int64(),
    "float": pa.float32(),
    "double": pa.float64(),
    "char": pa.string(),
    "string": pa.string(),
    "timestamp": pa.timestamp("us"),
}
_INT_RANGES = {
    "byte": (-(2**7), 2**7 - 1),
    "short": (-(2**15), 2**15 - 1),
    "int": (-(2**31), 2**31 - 1),
    "long": (-(2**63), 2**63 - 1),
}
_FLOAT32_MAX = 3.4028234663852886e38

# SQL / numpy spellings users are likely to write, mapped to the felis word (for hints only).
_SQL_TYPE_HINTS = {
    "bool": "boolean", "bit": "boolean", "tinyint": "byte", "int8": "byte", "smallint": "short",
    "int16": "short", "integer": "int", "int32": "int", "bigint": "long", "int64": "long",
    "real": "float", "float32": "float", "float64": "double", "double precision": "double",
    "varchar": "string", "text": "string", "str": "string", "datetime": "timestamp",
}

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TEMPLATE_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ARRAYSIZE = re.compile(r"^(\*|[0-9]+\*?)$")

_CATALOG_KEYS = ("name", "database", "description", "partitioning", "tables", "band_sets",
                 "sdm_schema")
_CATALOG_REQUIRED = ("name", "database", "tables")
_PARTITIONING_KEYS = ("num_stripes", "num_sub_stripes", "overlap")
_TABLE_KEYS = ("role", "description", "id_column", "ra_column", "dec_column", "director",
               "foreign_key", "match_directors", "flag_column", "aliases", "columns", "sdm_table")
#: The match-table flag column's name when a catalogue does not choose one (Qserv's default
#: ``--part.flags`` of sph-partition-matches).
DEFAULT_FLAG_COLUMN = "partitioningFlags"
_TABLE_REQUIRED = ("role", "columns")
_COLUMN_KEYS = ("name", "datatype", "unit", "ucd", "description", "nullable", "principal",
                "indexed", "sentinel", "arraysize", "sdm_column")
_COLUMN_REQUIRED = ("name", "datatype")
_TEMPLATE_KEYS = ("bands", "order", "columns")
_ROLE_REQUIRED = {
    "director": ("id_column", "ra_column", "dec_column"),
    "child": ("director", "foreign_key"),
    "match": ("match_directors",),
    "replicated": (),
}
_ROLE_FORBIDDEN = {
    "director": ("director", "foreign_key", "match_directors", "flag_column"),
    "child": ("match_directors", "flag_column"),
    "match": ("director", "foreign_key"),
    "replicated": ("director", "foreign_key", "match_directors", "flag_column"),
}


# --------------------------------------------------------------------------------------------
# helpers


def _suggest(name: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest candidates (case-insensitive), or ''."""
    cands = list(dict.fromkeys(candidates))
    lowered: dict[str, str] = {}
    for c in cands:
        lowered.setdefault(c.lower(), c)
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.6)
    if not hits:
        return ""
    return " (did you mean " + " or ".join(repr(lowered[h]) for h in hits) + "?)"


@functools.lru_cache(maxsize=512)
def _unit_problem(unit: str) -> str | None:
    """None if astropy parses ``unit`` (VOUnit first, then its generic format), else why not."""
    import astropy.units as u  # imported lazily: importing the core should stay cheap

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            u.Unit(unit, format="vounit")
            return None
        except Exception:  # noqa: BLE001 - astropy raises several types
            pass
        try:
            u.Unit(unit)
            return None
        except Exception as exc:  # noqa: BLE001
            text = " ".join(str(exc).split())
            m = re.match(r"(.*?\.)(\s*Did you mean [^?]*\?)?", text)
            return (m.group(1) + (m.group(2) or "")) if m else text


class _Where:
    """Builds error messages that name the file (and line, when known), table, column and key."""

    def __init__(self, source: str, lines: Mapping[tuple, int] | None = None) -> None:
        self.source = source
        self.lines = lines if lines is not None else {}

    def error(self, msg: str, *, table: str | None = None, column: str | None = None,
              key: str | None = None) -> CatalogError:
        line = (self.lines.get((table, column, key)) or self.lines.get((table, column, None))
                or self.lines.get((table, None, key)) or self.lines.get((table, None, None)))
        parts = [f"{self.source}:{line}" if line else self.source]
        if table is not None:
            parts.append(f"table {table!r}")
        if column is not None:
            parts.append(f"column {column!r}")
        if key is not None:
            parts.append(f"key {key!r}")
        parts.append(msg)
        return CatalogError(": ".join(parts))


# --------------------------------------------------------------------------------------------
# the model


@dataclass(frozen=True)
class Column:
    """One column: name, felis datatype and the metadata TAP_SCHEMA/VOTable need."""

    name: str
    datatype: str
    unit: str | None = None
    ucd: str | None = None
    description: str | None = None
    nullable: bool = True
    principal: bool = False
    indexed: bool = False
    sentinel: float | int | None = None
    arraysize: str | None = None

    def __post_init__(self) -> None:
        if self.datatype not in DATATYPES:
            raise CatalogError(
                f"column {self.name!r}: key 'datatype': unknown datatype {self.datatype!r}"
                f"{_suggest(str(self.datatype), DATATYPES)}; expected one of {', '.join(DATATYPES)}")
        s = self.sentinel
        if isinstance(s, int) and not isinstance(s, bool) and self.datatype in FLOAT_TYPES:
            object.__setattr__(self, "sentinel", float(s))
        elif isinstance(s, float) and s.is_integer() and self.datatype in INTEGER_TYPES:
            object.__setattr__(self, "sentinel", int(s))

    def arrow_type(self) -> pa.DataType:
        return _ARROW_TYPES[self.datatype]

    @property
    def is_numeric(self) -> bool:
        return self.datatype in NUMERIC_TYPES

    @property
    def is_integer(self) -> bool:
        return self.datatype in INTEGER_TYPES

    def arrow_field(self) -> pa.Field:
        meta = {}
        for key in ("unit", "ucd", "description"):
            value = getattr(self, key)
            if value is not None:
                meta[key.encode()] = str(value).encode()
        return pa.field(self.name, self.arrow_type(), nullable=self.nullable,
                        metadata=meta or None)


@dataclass(frozen=True)
class Table:
    """A table with its Qserv role. Column lookups are case-insensitive and honour aliases."""

    name: str
    role: str
    columns: tuple[Column, ...]
    description: str | None = None
    id_column: str | None = None
    ra_column: str | None = None
    dec_column: str | None = None
    director: str | None = None
    foreign_key: str | None = None
    match_directors: tuple[tuple[str, str], ...] = ()
    aliases: dict[str, str] = field(default_factory=dict, hash=False)
    flag_column: str | None = None  # match tables: the partitioner's flag column (see flag_name)

    def __post_init__(self) -> None:
        if not isinstance(self.columns, tuple):
            object.__setattr__(self, "columns", tuple(self.columns))
        if not isinstance(self.match_directors, tuple):
            object.__setattr__(self, "match_directors",
                               tuple(tuple(p) for p in self.match_directors))

    @functools.cached_property
    def _by_lower(self) -> dict[str, Column]:
        return {c.name.lower(): c for c in self.columns}

    @functools.cached_property
    def _aliases_lower(self) -> dict[str, str]:
        return {a.lower(): target for a, target in self.aliases.items()}

    def column(self, name: str) -> Column:
        """The column called ``name`` (any case, or an alias); CatalogError if there is none."""
        key = name.lower()
        col = self._by_lower.get(key)
        if col is not None:
            return col
        target = self._aliases_lower.get(key)
        if target is not None and target.lower() in self._by_lower:
            return self._by_lower[target.lower()]
        raise CatalogError(
            f"table {self.name!r}: no column {name!r}"
            f"{_suggest(name, [*self.column_names, *self.aliases])}")

    def has_column(self, name: str) -> bool:
        key = name.lower()
        return key in self._by_lower or (
            key in self._aliases_lower and self._aliases_lower[key].lower() in self._by_lower)

    def resolve(self, name: str) -> str:
        """The stored name of column ``name`` (case and aliases resolved)."""
        return self.column(name).name

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def flag_name(self) -> str | None:
        """A match table's flag column (``flag_column`` or Qserv's default); None otherwise."""
        if self.role != "match":
            return None
        return self.flag_column or DEFAULT_FLAG_COLUMN

    @property
    def is_partitioned(self) -> bool:
        """True for tables split into chunks (director, child, match); False for replicated."""
        return self.role != "replicated"

    def arrow_schema(self) -> pa.Schema:
        """Arrow schema, each field carrying unit/ucd/description metadata (bytes)."""
        return pa.schema([c.arrow_field() for c in self.columns])


@dataclass(frozen=True)
class Partitioning:
    """Qserv chunker parameters (angles in degrees)."""

    num_stripes: int = 85
    num_sub_stripes: int = 12
    overlap: float = 0.01667

    @property
    def sub_stripe_height(self) -> float:
        return 180.0 / (self.num_stripes * self.num_sub_stripes)


@dataclass(frozen=True)
class Catalog:
    """A catalogue: a database of tables sharing one partitioning."""

    name: str
    database: str
    description: str | None
    partitioning: Partitioning
    tables: dict[str, Table] = field(hash=False)
    source: str | None = None

    def table(self, name: str) -> Table:
        """The table called ``name`` (any case); CatalogError with suggestions otherwise."""
        tab = self.tables.get(name)
        if tab is not None:
            return tab
        lowered = {k.lower(): t for k, t in self.tables.items()}
        tab = lowered.get(name.lower())
        if tab is not None:
            return tab
        raise CatalogError(
            f"catalogue {self.name!r}: no table {name!r}{_suggest(name, self.tables)}"
            f"; tables: {', '.join(self.tables)}")

    def has_table(self, name: str) -> bool:
        return name.lower() in {k.lower() for k in self.tables}

    def directors(self) -> list[Table]:
        return [t for t in self.tables.values() if t.role == "director"]

    def children_of(self, director: str) -> list[Table]:
        """Child tables placed through ``director`` (match tables are not children)."""
        d = director.lower()
        return [t for t in self.tables.values()
                if t.role == "child" and t.director is not None and t.director.lower() == d]

    def replicated(self) -> list[Table]:
        return [t for t in self.tables.values() if t.role == "replicated"]

    def match_tables(self) -> list[Table]:
        return [t for t in self.tables.values() if t.role == "match"]


# --------------------------------------------------------------------------------------------
# validation of a built catalogue (also usable on catalogues made in code)


def validate_catalog(catalog: Catalog, *, lines: Mapping[tuple, int] | None = None) -> None:
    """Check a catalogue's internal consistency; raise CatalogError naming the fault."""
    w = _Where(catalog.source or f"catalogue {catalog.name!r}", lines)
    _validate_partitioning(catalog.partitioning, w)
    if not catalog.tables:
        raise w.error("a catalogue needs at least one table", key="tables")
    seen: dict[str, str] = {}
    for tname, tab in catalog.tables.items():
        if tab.name != tname:
            raise w.error(f"table is filed under {tname!r} but named {tab.name!r}", table=tname)
        low = tname.lower()
        if low in seen:
            raise w.error(f"duplicate table name (case-insensitive) with {seen[low]!r}",
                          table=tname)
        seen[low] = tname
    for tab in catalog.tables.values():
        _validate_table(catalog, tab, w)


def _validate_partitioning(p: Partitioning, w: _Where) -> None:
    for key in ("num_stripes", "num_sub_stripes"):
        value = getattr(p, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise w.error(f"must be an integer >= 1, got {value!r}", key=f"partitioning.{key}")
    ov = p.overlap
    if isinstance(ov, bool) or not isinstance(ov, (int, float)) or not math.isfinite(ov):
        raise w.error(f"must be a number of degrees, got {ov!r}", key="partitioning.overlap")
    if not 0 <= ov <= 10:
        raise w.error(f"must be between 0 and 10 degrees, got {ov!r}", key="partitioning.overlap")
    if ov > p.sub_stripe_height:
        raise w.error(
            f"overlap {ov!r} deg exceeds the sub-stripe height "
            f"180/({p.num_stripes}*{p.num_sub_stripes}) = {p.sub_stripe_height:.6g} deg",
            key="partitioning.overlap")


def _validate_column(col: Column, tname: str, w: _Where) -> None:
    name = col.name
    if not isinstance(name, str) or not _IDENT.match(name):
        raise w.error(f"column name {name!r} is not an identifier ([A-Za-z_][A-Za-z0-9_]*)",
                      table=tname, column=str(name), key="name")
    if col.datatype not in DATATYPES:  # only reachable if __post_init__ was bypassed
        raise w.error(f"unknown datatype {col.datatype!r}", table=tname, column=name,
                      key="datatype")
    for key in ("nullable", "principal", "indexed"):
        if not isinstance(getattr(col, key), bool):
            raise w.error(f"must be true or false, got {getattr(col, key)!r}", table=tname,
                          column=name, key=key)
    for key in ("unit", "ucd", "description"):
        value = getattr(col, key)
        if value is not None and not isinstance(value, str):
            raise w.error(f"must be a string, got {value!r}", table=tname, column=name, key=key)
    if col.unit is not None:
        problem = _unit_problem(col.unit)
        if problem is not None:
            raise w.error(f"unit {col.unit!r} does not parse with astropy: {problem}",
                          table=tname, column=name, key="unit")
    if col.sentinel is not None:
        s = col.sentinel
        if col.datatype not in NUMERIC_TYPES:
            raise w.error(f"a sentinel needs a numeric datatype, not {col.datatype!r}",
                          table=tname, column=name, key="sentinel")
        if isinstance(s, bool) or not isinstance(s, (int, float)):
            raise w.error(f"must be a number, got {s!r}", table=tname, column=name,
                          key="sentinel")
        if col.datatype in INTEGER_TYPES:
            if isinstance(s, float) and not s.is_integer():
                raise w.error(f"integer column needs an integer sentinel, got {s!r}",
                              table=tname, column=name, key="sentinel")
            lo, hi = _INT_RANGES[col.datatype]
            if not lo <= int(s) <= hi:
                raise w.error(f"sentinel {s!r} does not fit a {col.datatype}", table=tname,
                              column=name, key="sentinel")
        elif col.datatype == "float" and abs(s) > _FLOAT32_MAX:
            raise w.error(f"sentinel {s!r} does not fit a float", table=tname, column=name,
                          key="sentinel")
    if col.arraysize is not None:
        if col.datatype not in TEXT_TYPES:
            raise w.error(f"arraysize applies to char/string columns, not {col.datatype!r}",
                          table=tname, column=name, key="arraysize")
        if not isinstance(col.arraysize, str) or not _ARRAYSIZE.match(col.arraysize):
            raise w.error(f"must look like '12', '12*' or '*', got {col.arraysize!r}",
                          table=tname, column=name, key="arraysize")


def _check_column_ref(tab: Table, key: str, w: _Where, *, kinds: frozenset[str] | None,
                      what: str) -> Column:
    ref = getattr(tab, key)
    if not isinstance(ref, str):
        raise w.error(f"must be a column name, got {ref!r}", table=tab.name, key=key)
    by_lower = {c.name.lower(): c for c in tab.columns}
    col = by_lower.get(ref.lower())
    if col is None:
        raise w.error(f"column {ref!r} not found{_suggest(ref, tab.column_names)}",
                      table=tab.name, key=key)
    if col.name != ref:
        raise w.error(f"column {ref!r} is spelled {col.name!r} in the column list",
                      table=tab.name, key=key)
    if kinds is not None and col.datatype not in kinds:
        raise w.error(f"column {ref!r} must be {what}, not {col.datatype!r}", table=tab.name,
                      key=key)
    return col


def _validate_table(catalog: Catalog, tab: Table, w: _Where) -> None:
    tname = tab.name
    if not isinstance(tname, str) or not _IDENT.match(tname):
        raise w.error("table name is not an identifier ([A-Za-z_][A-Za-z0-9_]*)", table=str(tname))
    if tab.role not in ROLES:
        raise w.error(f"unknown role {tab.role!r}{_suggest(str(tab.role), ROLES)}; expected one "
                      f"of {', '.join(ROLES)}", table=tname, key="role")
    if not tab.columns:
        raise w.error("a table needs at least one column", table=tname, key="columns")
    seen: dict[str, str] = {}
    for col in tab.columns:
        _validate_column(col, tname, w)
        low = col.name.lower()
        if low in seen:
            raise w.error(f"duplicate column name {col.name!r} (case-insensitive: already have "
                          f"{seen[low]!r})", table=tname, column=col.name, key="name")
        seen[low] = col.name
    for key in _ROLE_REQUIRED[tab.role]:
        value = getattr(tab, key)
        if value is None or value == ():
            raise w.error(f"required for a {tab.role} table", table=tname, key=key)

    if tab.id_column is not None:
        _check_column_ref(tab, "id_column", w,
                          kinds=INTEGER_TYPES if tab.role == "director" else None,
                          what="an integer type (byte, short, int, long)")
    if (tab.ra_column is None) != (tab.dec_column is None):
        missing = "dec_column" if tab.dec_column is None else "ra_column"
        raise w.error("ra_column and dec_column go together", table=tname, key=missing)
    for key in ("ra_column", "dec_column"):
        if getattr(tab, key) is not None:
            _check_column_ref(tab, key, w, kinds=FLOAT_TYPES, what="float or double (degrees)")

    if tab.role == "child":
        _check_director_ref(catalog, tab, "director", tab.director, w)
        fk = _check_column_ref(tab, "foreign_key", w, kinds=None, what="")
        _check_fk_type(catalog, tab, "foreign_key", tab.director, fk, w)
    elif tab.role == "match":
        pairs = tab.match_directors
        if len(pairs) != 2:
            raise w.error(f"a match table relates exactly two directors, got {len(pairs)}",
                          table=tname, key="match_directors")
        by_lower = {c.name.lower(): c for c in tab.columns}
        used: set[str] = set()
        for pair in pairs:
            if len(pair) != 2 or not all(isinstance(x, str) for x in pair):
                raise w.error(f"each entry is [director_table, column], got {list(pair)!r}",
                              table=tname, key="match_directors")
            dname, colname = pair
            _check_director_ref(catalog, tab, "match_directors", dname, w)
            col = by_lower.get(colname.lower())
            if col is None or col.name != colname:
                raise w.error(f"column {colname!r} not found"
                              f"{_suggest(colname, tab.column_names)}", table=tname,
                              key="match_directors")
            if colname.lower() in used:
                raise w.error(f"column {colname!r} used for both directors", table=tname,
                              key="match_directors")
            used.add(colname.lower())
            _check_fk_type(catalog, tab, "match_directors", dname, col, w)
        flag = tab.flag_name
        if not isinstance(flag, str) or not _IDENT.match(flag):
            raise w.error(f"{flag!r} is not an identifier", table=tname, key="flag_column")
        if flag.lower() in by_lower or flag.lower() in ("chunkid", "subchunkid"):
            raise w.error(f"column {flag!r} is written by the partitioner (1: placed with the first "
                          "director's row, 2: with the second's, 3: both): leave it out of the "
                          "column list, or choose another flag_column", table=tname,
                          key="flag_column")
        first = pairs[0]
        if tab.director is not None and (tab.director, tab.foreign_key) != tuple(first):
            raise w.error("a match table's director/foreign_key must be its first "
                          "match_directors pair", table=tname, key="director")
    else:
        for key in ("director", "foreign_key"):
            if getattr(tab, key) is not None:
                raise w.error(f"not allowed for a {tab.role} table", table=tname, key=key)
        if tab.match_directors:
            raise w.error(f"not allowed for a {tab.role} table", table=tname,
                          key="match_directors")
        if tab.flag_column is not None:
            raise w.error(f"not allowed for a {tab.role} table", table=tname, key="flag_column")

    if not isinstance(tab.aliases, dict):
        raise w.error("must be a mapping alias -> column", table=tname, key="aliases")
    alias_seen: set[str] = set()
    for alias, target in tab.aliases.items():
        if not isinstance(alias, str) or not _IDENT.match(alias):
            raise w.error(f"alias {alias!r} is not an identifier", table=tname, key="aliases")
        if alias.lower() in seen:
            raise w.error(f"alias {alias!r} clashes with column {seen[alias.lower()]!r}",
                          table=tname, key="aliases")
        if alias.lower() in alias_seen:
            raise w.error(f"duplicate alias {alias!r}", table=tname, key="aliases")
        alias_seen.add(alias.lower())
        if not isinstance(target, str) or target not in tab.column_names:
            raise w.error(f"alias {alias!r} -> {target!r}: column not found"
                          f"{_suggest(str(target), tab.column_names)}", table=tname,
                          key="aliases")


def _check_director_ref(catalog: Catalog, tab: Table, key: str, dname: Any, w: _Where) -> None:
    if not isinstance(dname, str):
        raise w.error(f"must be a table name, got {dname!r}", table=tab.name, key=key)
    target = catalog.tables.get(dname)
    if target is None:
        raise w.error(f"director table {dname!r} not found{_suggest(dname, catalog.tables)}",
                      table=tab.name, key=key)
    if target.role != "director":
        raise w.error(f"table {dname!r} is a {target.role} table, not a director",
                      table=tab.name, key=key)


def _check_fk_type(catalog: Catalog, tab: Table, key: str, dname: str, fk: Column,
                   w: _Where) -> None:
    director = catalog.tables[dname]
    idcol = next((c for c in director.columns if c.name == director.id_column), None)
    if idcol is None:
        return  # reported when the director itself is validated
    if (fk.datatype in INTEGER_TYPES) != (idcol.datatype in INTEGER_TYPES) or (
            fk.datatype not in INTEGER_TYPES and fk.datatype != idcol.datatype):
        raise w.error(f"column {fk.name!r} ({fk.datatype}) cannot hold {dname}."
                      f"{idcol.name} ({idcol.datatype})", table=tab.name, key=key)


# --------------------------------------------------------------------------------------------
# YAML reading


class _Map(dict):
    """A YAML mapping that remembers its line and the line of each key (1-based)."""

    line: int = 0
    key_lines: dict


_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc, valid-type]
    pass


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Map:
    loader.flatten_mapping(node)
    result = _Map()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                "found an unhashable key", key_node.start_mark) from None
        if key in result:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found duplicate key {key!r}", key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = " ".join(p for p in (exc.context, exc.problem) if p)
        raise CatalogError(f"{where}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{source}: YAML syntax error: {exc}") from None


class _Builder:
    """Turns the parsed YAML of one file into a Catalog, checking structure as it goes."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.lines: dict[tuple, int] = {}
        self.w = _Where(source, self.lines)

    def note(self, m: Any, table: str | None, column: str | None) -> None:
        """Remember the line of mapping ``m`` and of each of its keys for later messages."""
        if isinstance(m, _Map):
            self.lines.setdefault((table, column, None), m.line)
            for k, ln in m.key_lines.items():
                if isinstance(k, str):
                    self.lines.setdefault((table, column, k), ln)

    def check_keys(self, m: Mapping, allowed: tuple[str, ...], required: tuple[str, ...], *,
                   table: str | None = None, column: str | None = None,
                   prefix: str = "") -> None:
        for k in m:
            if not isinstance(k, str) or k not in allowed:
                hint = _suggest(str(k), allowed)
                raise self.w.error(f"unknown key{hint}; allowed: {', '.join(allowed)}",
                                   table=table, column=column, key=f"{prefix}{k}")
        for k in required:
            if k not in m or m[k] is None:
                raise self.w.error("missing required key", table=table, column=column,
                                   key=f"{prefix}{k}")

    def string(self, m: Mapping, key: str, *, table: str | None = None,
               column: str | None = None, prefix: str = "") -> str | None:
        value = m.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.w.error(f"must be a string, got {type(value).__name__} {value!r}",
                               table=table, column=column, key=f"{prefix}{key}")
        return str(value)

    # -- catalogue ------------------------------------------------------------------------

    def build(self, doc: Any) -> Catalog:
        if not isinstance(doc, dict):
            raise self.w.error("the file must hold a YAML mapping (name, database, tables, ...)")
        self.note(doc, None, None)
        self.check_keys(doc, _CATALOG_KEYS, _CATALOG_REQUIRED)
        name = self.string(doc, "name")
        database = self.string(doc, "database")
        for key, value in (("name", name), ("database", database)):
            if not _IDENT.match(value or ""):
                raise self.w.error(f"{value!r} is not an identifier", key=key)
        self.string(doc, "sdm_schema")
        partitioning = self.partitioning(doc.get("partitioning"))
        band_sets = self.band_sets(doc.get("band_sets"))
        tables_doc = doc["tables"]
        if not isinstance(tables_doc, dict) or not tables_doc:
            raise self.w.error("must be a mapping of table name -> definition", key="tables")
        tables: dict[str, Table] = {}
        for tname, tdoc in tables_doc.items():
            if not isinstance(tname, str) or not _IDENT.match(tname):
                raise self.w.error("table name is not an identifier", table=str(tname))
            tables[tname] = self.table(tname, tdoc, band_sets)
        catalog = Catalog(name=name, database=database,
                          description=self.string(doc, "description"),
                          partitioning=partitioning, tables=tables, source=self.source)
        validate_catalog(catalog, lines=self.lines)
        return catalog

    def partitioning(self, p: Any) -> Partitioning:
        if p is None:
            return Partitioning()
        if not isinstance(p, dict):
            raise self.w.error("must be a mapping (num_stripes, num_sub_stripes, overlap)",
                               key="partitioning")
        if isinstance(p, _Map):  # lines for this method's and validate_catalog's messages
            for k, ln in p.key_lines.items():
                self.lines[(None, None, f"partitioning.{k}")] = ln
        self.check_keys(p, _PARTITIONING_KEYS, (), prefix="partitioning.")
        return Partitioning(**{k: p[k] for k in _PARTITIONING_KEYS if k in p})

    def band_sets(self, b: Any) -> dict[str, dict[str, dict[str, str]]]:
        if b is None:
            return {}
        if not isinstance(b, dict):
            raise self.w.error("must be a mapping of set name -> bands", key="band_sets")
        return {str(k): self.bands(v, key=f"band_sets.{k}", table=None, sets={})
                for k, v in b.items()}

    def bands(self, spec: Any, *, key: str, table: str | None,
              sets: Mapping[str, dict[str, dict[str, str]]]) -> dict[str, dict[str, str]]:
        """Normalise a band list/mapping (or the name of a band set) to {band: {var: value}}."""
        if isinstance(spec, str):
            if spec not in sets:
                raise self.w.error(f"unknown band set {spec!r}{_suggest(spec, sets)}",
                                   table=table, key=key)
            return sets[spec]
        if isinstance(spec, list):
            spec = {b: {} for b in spec}
        if not isinstance(spec, dict) or not spec:
            raise self.w.error("must be a band list, a mapping band -> variables, or a band set "
                               "name", table=table, key=key)
        out: dict[str, dict[str, str]] = {}
        for band, variables in spec.items():
            if isinstance(band, bool) or not isinstance(band, (str, int)) or not re.match(
                    r"^[A-Za-z0-9_]+$", str(band)):
                raise self.w.error(f"band {band!r} must be a word", table=table, key=key)
            variables = variables or {}
            if not isinstance(variables, dict) or not all(
                    isinstance(k, str) and isinstance(v, (str, int, float))
                    and not isinstance(v, bool) for k, v in variables.items()):
                raise self.w.error(f"variables of band {band!r} must map names to strings",
                                   table=table, key=key)
            band = str(band)
            out[band] = {"b": band, "B": band.upper(),
                         **{k: str(v) for k, v in variables.items()}}
        return out

    # -- tables -----------------------------------------------------------------------------

    def table(self, tname: str, t: Any, band_sets: Mapping) -> Table:
        if not isinstance(t, dict):
            raise self.w.error("a table definition must be a mapping (role, columns, ...)",
                               table=tname)
        self.note(t, tname, None)
        self.check_keys(t, _TABLE_KEYS, _TABLE_REQUIRED, table=tname)
        role = t["role"]
        if role not in ROLES:
            raise self.w.error(f"unknown role {role!r}{_suggest(str(role), ROLES)}; expected one "
                               f"of {', '.join(ROLES)}", table=tname, key="role")
        for key in _ROLE_REQUIRED[role]:
            if t.get(key) is None:
                raise self.w.error(f"missing required key for a {role} table", table=tname,
                                   key=key)
        for key in _ROLE_FORBIDDEN[role]:
            if t.get(key) is not None:
                hint = " (a match table names both directors in match_directors)" \
                    if role == "match" else ""
                raise self.w.error(f"not allowed for a {role} table{hint}", table=tname, key=key)
        strings = {k: self.string(t, k, table=tname)
                   for k in ("description", "id_column", "ra_column", "dec_column", "director",
                             "foreign_key", "sdm_table", "flag_column")}
        match_directors: tuple[tuple[str, str], ...] = ()
        if role == "match":
            md = t["match_directors"]
            if not isinstance(md, list) or not all(
                    isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p)
                    for p in md):
                raise self.w.error("must be a list of [director_table, column] pairs",
                                   table=tname, key="match_directors")
            match_directors = tuple((p[0], p[1]) for p in md)
            if len(match_directors) != 2:
                raise self.w.error(f"a match table relates exactly two directors, got "
                                   f"{len(match_directors)}", table=tname, key="match_directors")
            strings["director"], strings["foreign_key"] = match_directors[0]
        aliases = t.get("aliases") or {}
        if not isinstance(aliases, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in aliases.items()):
            raise self.w.error("must be a mapping alias -> column name", table=tname,
                               key="aliases")
        columns = self.columns(tname, t["columns"], band_sets)
        return Table(name=tname, role=role, columns=tuple(columns),
                     description=strings["description"], id_column=strings["id_column"],
                     ra_column=strings["ra_column"], dec_column=strings["dec_column"],
                     director=strings["director"], foreign_key=strings["foreign_key"],
                     match_directors=match_directors, aliases=dict(aliases),
                     flag_column=strings["flag_column"])

    def columns(self, tname: str, items: Any, band_sets: Mapping) -> list[Column]:
        if not isinstance(items, list) or not items:
            raise self.w.error("must be a non-empty list of columns", table=tname, key="columns")
        out: list[Column] = []
        for item in items:
            if isinstance(item, dict) and "bands" in item:
                out.extend(self.template(tname, item, band_sets))
            else:
                out.append(self.column(tname, item, {}))
        return out

    def template(self, tname: str, group: dict, band_sets: Mapping) -> list[Column]:
        self.note(group, tname, None)
        self.check_keys(group, _TEMPLATE_KEYS, ("bands", "columns"), table=tname)
        bands = self.bands(group["bands"], key="bands", table=tname, sets=band_sets)
        order = group.get("order", "by_band")
        if order not in ("by_band", "by_column"):
            raise self.w.error(f"must be by_band or by_column, got {order!r}", table=tname,
                               key="order")
        templates = group["columns"]
        if not isinstance(templates, list) or not templates:
            raise self.w.error("a template group needs a non-empty columns list", table=tname,
                               key="columns")
        if order == "by_band":
            pairs = [(v, c) for v in bands.values() for c in templates]
        else:
            pairs = [(v, c) for c in templates for v in bands.values()]
        return [self.column(tname, c, v) for v, c in pairs]

    def column(self, tname: str, c: Any, variables: Mapping[str, str]) -> Column:
        if not isinstance(c, dict):
            raise self.w.error(f"a column must be a mapping (name, datatype, ...), got {c!r}",
                               table=tname, key="columns")
        raw_name = c.get("name")
        label = raw_name if isinstance(raw_name, str) else None
        self.note(c, tname, label)
        self.check_keys(c, _COLUMN_KEYS, _COLUMN_REQUIRED, table=tname, column=label)
        if isinstance(raw_name, dict):
            raise self.w.error("must be a string; quote templates such as \"{b}Mag\"",
                               table=tname, column=None, key="name")
        values: dict[str, Any] = {}
        for key in ("name", "datatype", "unit", "ucd", "description", "sdm_column"):
            value = self.string(c, key, table=tname, column=label)
            if value is not None and variables:
                value = self.substitute(value, variables, tname, label, key)
            values[key] = value
        name = values["name"]
        self.note(c, tname, name)
        if not _IDENT.match(name):
            raise self.w.error(f"column name {name!r} is not an identifier "
                               "([A-Za-z_][A-Za-z0-9_]*)", table=tname, column=name, key="name")
        datatype = values["datatype"]
        if datatype not in DATATYPES:
            hint = _SQL_TYPE_HINTS.get(datatype.lower())
            hint = f" (use {hint!r})" if hint else _suggest(datatype, DATATYPES)
            raise self.w.error(f"unknown datatype {datatype!r}{hint}; expected one of "
                               f"{', '.join(DATATYPES)}", table=tname, column=name,
                               key="datatype")
        flags = {}
        for key, default in (("nullable", True), ("principal", False), ("indexed", False)):
            value = c.get(key, default)
            if not isinstance(value, bool):
                raise self.w.error(f"must be true or false, got {value!r}", table=tname,
                                   column=name, key=key)
            flags[key] = value
        arraysize = c.get("arraysize")
        if arraysize is not None and not isinstance(arraysize, bool) and isinstance(arraysize,
                                                                                      int):
            arraysize = str(arraysize)
        sentinel = c.get("sentinel")
        if isinstance(sentinel, str):
            # YAML 1.1 (PyYAML) reads -0.9999995e9 as a string: its floats need a signed
            # exponent (-0.9999995e+9). Accept the unsigned spelling too.
            for conv in (int, float):
                try:
                    sentinel = conv(sentinel)
                    break
                except ValueError:
                    pass
        return Column(name=name, datatype=datatype, unit=values["unit"] or None,
                      ucd=values["ucd"] or None, description=values["description"],
                      sentinel=sentinel, arraysize=arraysize, **flags)

    def substitute(self, text: str, variables: Mapping[str, str], tname: str,
                   column: str | None, key: str) -> str:
        def repl(m: re.Match) -> str:
            var = m.group(1)
            if var not in variables:
                raise self.w.error(f"unknown template variable {{{var}}}"
                                   f"{_suggest(var, variables)}; known: "
                                   f"{', '.join('{' + v + '}' for v in variables)}",
                                   table=tname, column=column, key=key)
            return variables[var]
        return _TEMPLATE_VAR.sub(repl, text)


# --------------------------------------------------------------------------------------------
# public entry points


def _catalog_dir():
    return importlib.resources.files("catalogs")


def available_catalogs() -> list[str]:
    """Names of the catalogue definitions shipped in the ``catalogs`` package."""
    return sorted(p.name[:-5] for p in _catalog_dir().iterdir()
                  if p.name.endswith(".yaml") and p.is_file())


@functools.lru_cache(maxsize=64)
def _load_text(text: str, source: str) -> Catalog:
    return _Builder(source).build(_parse_yaml(text, source))


def _looks_like_path(s: str) -> bool:
    return ("/" in s or os.sep in s or (os.altsep is not None and os.altsep in s)
            or s.endswith((".yaml", ".yml")))


def load_catalog(name_or_path: str | os.PathLike) -> Catalog:
    """Load and validate a catalogue.

    A bare name (``"lsst_dr"``) is one of :func:`available_catalogs`; anything else (a
    :class:`os.PathLike`, or a string with a path separator or a ``.yaml`` suffix) is a file.
    Results are cached on the file's content: treat the returned Catalog as read-only.
    """
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(str(name_or_path)):
        path = Path(name_or_path)
        source = str(name_or_path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CatalogError(f"{source}: catalogue file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CatalogError(f"{source}: cannot read catalogue file: {exc}") from None
        return _load_text(text, source)
    name = str(name_or_path)
    resource = _catalog_dir() / f"{name}.yaml"
    if not _IDENT.match(name) or not resource.is_file():
        shipped = available_catalogs()
        raise CatalogError(f"unknown catalogue {name!r}{_suggest(name, shipped)}; "
                           f"shipped catalogues: {', '.join(shipped)}")
    return _load_text(resource.read_text(encoding="utf-8"), str(resource))
