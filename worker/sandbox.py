"""The worker's own check of the SQL it is asked to run, independent of the czar's.

A worker trusts no caller, not even one with the shared secret: :func:`check_worker_sql`
reads the SQL exactly as sent (``{{db.T}}`` placeholders not yet expanded, see
:func:`worker.inventory.bind_sql`) with DuckDB's own parser (``json_serialize_sql``, so
what is checked is what DuckDB would run) and refuses

* anything but one SELECT (COPY, ATTACH, SET, PRAGMA, INSTALL, LOAD, CALL, ...);
* table functions other than the pure generators the czar itself writes (``range``,
  ``generate_series``, ``unnest``): ``read_parquet``, ``read_csv``, ``glob``, ``query``,
  ``duckdb_settings``, ``pragma_*``, ... -- the placeholders are the only way to read files;
* tables that are neither a placeholder nor a CTE of the query: file paths and URLs
  (``FROM 'x.csv'``, ``FROM "/data/..."``) that DuckDB would read by a replacement scan,
  the worker's own catalogues, ``SHOW``/``DESCRIBE``/``SUMMARIZE`` subqueries;
* placeholders anywhere but in a FROM clause (inside a string or a comment they would
  splice the worker's file paths into the text);
* scalar functions that reveal settings, the environment or the query text, or change
  state (``getenv``, ``current_setting``, ``current_query``, ``nextval``, ``setseed``,
  ...), and schema-qualified function names.

The DuckDB lanes' own limits (``enable_external_access = false``, ``allowed_directories``
= data root and temp, ``lock_configuration``) stay in force underneath: this check keeps a
caller from reading files of the data root the placeholders do not name, and from reading
settings. Refusals raise the worker's ``QueryError("PERMISSION_DENIED", message)``; SQL
that does not parse raises ``QueryError("INVALID_ARGUMENT", message)``.
"""
from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from typing import Any

import duckdb

from worker.inventory import PLACEHOLDER

__all__ = ["ALLOWED_TABLE_FUNCTIONS", "check_worker_sql"]

#: Table functions a worker query may call: pure row generators, no I/O.
ALLOWED_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})

# Table references the czar's SQL uses; anything else (SHOW_REF: SHOW/DESCRIBE/SUMMARIZE,
# COLUMN_DATA, DELIM_GET, ...) is refused.
_TABLE_REFS = frozenset({"BASE_TABLE", "JOIN", "SUBQUERY", "TABLE_FUNCTION", "EXPRESSION_LIST",
                         "EMPTY", "EMPTY_FROM", "PIVOT"})

# Scalar/aggregate names refused: they read settings, the environment, the catalog, the
# query text (which holds the data root's paths after expansion), or change session state.
_DENIED_FUNCTIONS = re.compile(
    r"^(getenv|current_setting|getvariable|current_query|which_secret|version|user|"
    r"session_user|current_user|current_role|current_database|current_catalog|"
    r"current_schema|current_schemas|nextval|currval|setseed|txid_current|"
    r"has_\w+_privilege|pg_\w+|col_description|obj_description|shobj_description|"
    r"(read|parquet|sqlite|postgres|mysql|iceberg|delta|duckdb|pragma|json_execute|"
    r"icu|export|import|enable|disable)_\w*|glob|query|query_table|sniff_csv|"
    r"checkpoint|force_checkpoint|sql_auto_complete)$", re.IGNORECASE)

_PH = "__qe_placeholder_"
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")

_local = threading.local()
_base: duckdb.DuckDBPyConnection | None = None
_base_lock = threading.Lock()


def _parser() -> duckdb.DuckDBPyConnection:
    """A per-thread cursor of a private in-memory DuckDB that only parses (no data, no files)."""
    global _base
    cur = getattr(_local, "cursor", None)
    if cur is None:
        with _base_lock:
            if _base is None:
                _base = duckdb.connect(config={"autoinstall_known_extensions": False,
                                               "autoload_known_extensions": False,
                                               "enable_external_access": False})
            cur = _local.cursor = _base.cursor()
    return cur


def _error(code: str, message: str) -> Exception:
    from worker.executor import QueryError  # here: the executor imports this module
    return QueryError(code, message)


def _denied(message: str) -> Exception:
    return _error("PERMISSION_DENIED", message)


def _nodes(tree: Any) -> Iterator[dict]:
    """Every JSON object in the serialized tree, depth first."""
    stack = [tree]
    while stack:
        x = stack.pop()
        if isinstance(x, dict):
            yield x
            stack.extend(x.values())
        elif isinstance(x, list):
            stack.extend(x)


def _cte_names(nodes: list[dict]) -> set[str]:
    names = set()
    for node in nodes:
        cte = node.get("cte_map")
        if isinstance(cte, dict):
            for entry in cte.get("map") or []:
                if isinstance(entry, dict) and isinstance(entry.get("key"), str):
                    names.add(entry["key"].lower())
    return names


def _qualified(node: dict, name_key: str) -> str:
    parts = [node.get(k) or "" for k in ("catalog_name", "schema_name", "catalog", "schema")]
    return ".".join([p for p in parts if p] + [str(node.get(name_key, ""))])


def _serialize(sql: str) -> dict:
    try:
        text = _parser().execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0]
    except duckdb.Error as exc:  # pragma: no cover - json_serialize_sql reports errors in JSON
        raise _error("INVALID_ARGUMENT", str(exc)) from None
    tree = json.loads(text)
    if tree.get("error"):
        message = str(tree.get("error_message") or "cannot parse the query")
        if "Only SELECT statements" in message:
            raise _denied("only SELECT is allowed on a worker")
        raise _error("INVALID_ARGUMENT", message)
    return tree


def check_worker_sql(sql: str) -> None:
    """Refuse ``sql`` (as the czar sends it, placeholders unexpanded) unless it is one SELECT
    reading only placeholders, CTEs and pure generators, with no function that reaches
    outside the query (see the module doc)."""
    if not isinstance(sql, str) or not sql.strip():
        raise _error("INVALID_ARGUMENT", "empty query")
    if "\x00" in sql:
        raise _error("INVALID_ARGUMENT", "the query contains a NUL character")
    count = 0

    def mark(_match: re.Match) -> str:
        nonlocal count
        count += 1
        return f'"{_PH}{count}"'

    tree = _serialize(PLACEHOLDER.sub(mark, sql))
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise _error("INVALID_ARGUMENT",
                     f"expected exactly one SELECT statement, got {len(statements)}")
    nodes = list(_nodes(statements[0]))
    ctes = _cte_names(nodes)
    tables_read = 0
    for node in nodes:
        kind = node.get("type")
        if "class" not in node and "sample" in node and "modifiers" not in node:  # a table ref
            if kind not in _TABLE_REFS:
                raise _denied(f"{kind} is not allowed in a worker query: read the placeholders")
            if kind == "BASE_TABLE":
                name = str(node.get("table_name", ""))
                qualified = any(node.get(k) for k in ("catalog_name", "schema_name"))
                if name.startswith(_PH) and not qualified:
                    tables_read += 1
                elif qualified or name.lower() not in ctes:
                    what = _qualified(node, "table_name")
                    message = (f"table {what!r} is not allowed: a worker query reads only "
                               "{{db.table}} placeholders and its CTEs")
                    if qualified or not _PLAIN_NAME.fullmatch(name):  # a path, URL, catalog
                        raise _denied(message)
                    raise _error("INVALID_ARGUMENT", message)  # just an unknown name
            elif kind == "TABLE_FUNCTION":
                fn = node.get("function") or {}
                name = str(fn.get("function_name", ""))
                if name.lower() not in ALLOWED_TABLE_FUNCTIONS or fn.get("schema") or fn.get("catalog"):
                    raise _denied(f"table function {_qualified(fn, 'function_name')} is not allowed "
                                  "in a worker query")
        elif "function_name" in node and kind != "TABLE_FUNCTION":
            name = str(node.get("function_name", ""))
            if node.get("schema") or node.get("catalog"):
                raise _denied(f"qualified function names are not allowed ({_qualified(node, 'function_name')})")
            if _DENIED_FUNCTIONS.match(name):
                raise _denied(f"function {name} is not allowed in a worker query")
    if tables_read != count:
        raise _denied("{{db.table}} placeholders may only stand for tables in a FROM clause")
