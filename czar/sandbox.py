"""The czar's query sandbox: an allow-list of the functions a user query may call.

:func:`check_query` walks a parsed query (:func:`czar.dialects.parse` calls it before
normalisation) and raises :class:`~qengine.errors.QueryError`, with the line and column of
the offending token, for

* any function that is not a known safe scalar, aggregate or window function
  (:data:`ALLOWED_CLASSES`, typed sqlglot nodes) or one of the ADQL geometry,
  ``qserv_areaspec_*`` and ``scisql_*`` functions (:data:`ALLOWED_NAMES`, which sqlglot
  leaves as ``exp.Anonymous``) -- wherever it is: select list, WHERE, subqueries, CTEs,
  ORDER BY, LATERAL, FROM. So DuckDB's table functions and everything that reaches files,
  the network, extensions, settings or other databases (``read_csv``, ``read_parquet``,
  ``glob``, ``getenv``, ``current_setting``, ``duckdb_*``, ``pragma_*``, ...) never reach
  a worker or the czar's merge step;
* a string literal or a file path/URL used as a table (``FROM 'file.csv'``,
  ``FROM "/data/x.parquet"``), which DuckDB would read through a replacement scan;
* session and user variables and bind parameters (``@@datadir``, ``@x``, ``?``).

It is an allow-list on purpose: a function sqlglot or DuckDB adds later is refused until
someone decides it is safe. Statements that are not queries (COPY, ATTACH, SET, PRAGMA,
...) are refused earlier, by the parser's statement checks.
"""
from __future__ import annotations

import re

from sqlglot import exp

from czar.dialects.adql import GEOMETRY_FUNCTIONS
from czar.dialects.qserv import AREASPEC_FUNCTIONS
from czar.dialects.translate import SCISQL_FUNCTIONS
from qengine.errors import QueryError

__all__ = ["ALLOWED_CLASSES", "ALLOWED_NAMES", "check_query"]

# Typed sqlglot function nodes a query may contain. Names are resolved with getattr so
# that a sqlglot upgrade that renames a class narrows the list instead of breaking import.
_ALLOWED_CLASS_NAMES = (
    # structure: boolean connectives, conditionals, casts
    "And", "Or", "Xor", "Case", "If", "Cast", "TryCast", "Coalesce", "Nullif", "Extract",
    "Exists",
    # mathematics
    "Abs", "Acos", "Acosh", "Asin", "Asinh", "Atan", "Atan2", "Atanh", "Cbrt", "Ceil", "Cos",
    "Cosh", "Cot", "Degrees", "Exp", "Floor", "Ln", "Log", "Pi", "Pow", "Radians", "Rand",
    "Round", "Sign", "Sin", "Sinh", "Sqrt", "Tan", "Tanh", "Trunc", "Greatest", "Least",
    "IsNan", "IsInf",
    # aggregates
    "Count", "CountIf", "Sum", "Avg", "Min", "Max", "Stddev", "StddevPop", "StddevSamp",
    "Variance", "VariancePop", "Median", "PercentileCont", "PercentileDisc", "Quantile",
    "ApproxQuantile", "Corr", "CovarPop", "CovarSamp", "AnyValue", "ArgMax", "ArgMin",
    "ApproxDistinct", "LogicalAnd", "LogicalOr", "BitwiseAndAgg", "BitwiseOrAgg",
    "BitwiseXorAgg", "GroupConcat", "Skewness", "Kurtosis", "First", "Last",
    # window functions
    "RowNumber", "Rank", "DenseRank", "PercentRank", "CumeDist", "Ntile", "Lag", "Lead",
    "FirstValue", "LastValue", "NthValue",
    # strings
    "Upper", "Lower", "Length", "Substring", "Trim", "Concat", "ConcatWs", "Replace", "Left",
    "Right", "Pad", "Repeat", "StrPosition", "Initcap", "Chr", "Hex", "Unhex", "MD5", "RegexpLike",
    "RegexpILike", "RegexpReplace", "RegexpExtract", "StartsWith", "Levenshtein",
    "NumberToStr", "Elt",
    # dates and times (catalogues carry MJDs mostly; these are harmless)
    "CurrentDate", "CurrentTimestamp", "CurrentTime", "Year", "Month", "Day", "DateAdd",
    "DateSub", "DateDiff", "DateTrunc", "StrToDate", "StrToTime", "TimeToStr", "UnixToTime",
    "TimeToUnix", "DayOfWeek", "DayOfMonth", "DayOfYear", "WeekOfYear", "Quarter",
)
ALLOWED_CLASSES: tuple[type, ...] = tuple(
    c for c in (getattr(exp, n, None) for n in _ALLOWED_CLASS_NAMES) if isinstance(c, type))

#: Lower-case names of the functions sqlglot leaves as ``exp.Anonymous`` that may be used.
ALLOWED_NAMES: frozenset[str] = frozenset(
    {n.lower() for n in GEOMETRY_FUNCTIONS} | set(AREASPEC_FUNCTIONS) | SCISQL_FUNCTIONS
    | {"in_unit", "now", "curdate", "isfinite", "signbit", "bit_count", "gamma", "lgamma", "log2",
       "even", "strcmp", "conv", "field"})

# Names that reach outside the query's tables: refused with a message saying so (the
# allow-list refuses them anyway; this only picks the clearer message).
_OUTSIDE = re.compile(
    r"^(read_|parquet_|sqlite_|postgres_|mysql_|iceberg_|delta_|duckdb_|pragma_|json_execute|"
    r"glob$|query$|query_table$|getenv$|current_setting$|getvariable$|load_file$|which_secret$|"
    r"sniff_csv$|current_(database|schema|schemas|catalog|user|role)$|database$|schema$|"
    r"version$|user$|session_user$|install|load$|export|import|checkpoint|"
    r"enable_|disable_|set_|nextval$|currval$|setseed$|sleep|benchmark$)", re.IGNORECASE)

# A table name that is a path or URL (DuckDB reads "x.csv", 's3://...' through replacement scans).
_FILE_LIKE = re.compile(r"[/\\:~]|\.(csv|tsv|txt|parquet|json|jsonl|ndjson|gz|zst|db|duckdb|"
                        r"sqlite|xlsx|arrow|ipc|feather|avro)$", re.IGNORECASE)

_HINT = ("only ADQL/SQL scalar, aggregate and window functions and the ADQL geometry, "
         "qserv_areaspec_* and scisql_* functions can be used")


def _position(node: exp.Expression) -> dict:
    """line/column of ``node``, else of its first positioned operand (an operator such as
    ``->>`` has no token of its own in the tree), else of its nearest positioned ancestor."""
    for candidate in node.walk():
        meta = getattr(candidate, "_meta", None)
        if meta and "line" in meta:
            return {"line": meta["line"], "column": meta["col"]}
    while node is not None:
        meta = getattr(node, "_meta", None)
        if meta and "line" in meta:
            return {"line": meta["line"], "column": meta["col"]}
        node = node.parent
    return {}


def _written(node: exp.Expression, sql: str | None) -> str | None:
    """The text of the node's first token as the user wrote it, when known."""
    meta = getattr(node, "_meta", None)
    if sql and meta and "start" in meta and "end" in meta:
        text = sql[meta["start"]:meta["end"] + 1]
        if text and re.fullmatch(r"[\w$`\"]+", text):
            return text.strip('`"')
    return None


def function_name(node: exp.Func, sql: str | None = None) -> str:
    """The name of a function call as written (else sqlglot's name for it)."""
    if isinstance(node, exp.Anonymous):
        return str(node.name)
    return _written(node, sql) or node.sql_names()[0]


def _allowed(node: exp.Func) -> bool:
    if isinstance(node, exp.Anonymous):
        return str(node.name).lower() in ALLOWED_NAMES
    return type(node) in ALLOWED_CLASSES


def _refuse_function(node: exp.Func, sql: str | None) -> QueryError:
    name = function_name(node, sql)
    if name.lower().startswith("scisql_"):
        return QueryError(f"unknown sciSQL function {name}; available: "
                          + ", ".join(sorted(SCISQL_FUNCTIONS)), token=name, **_position(node))
    if isinstance(node.parent, (exp.Table, exp.Lateral)) or isinstance(node, exp.Unnest):
        why = "table functions are not allowed: query the catalogue's tables"
    elif _OUTSIDE.match(name) or _OUTSIDE.match(node.key):
        why = ("it reaches outside the catalogue (files, network, settings, extensions or "
               "other databases)")
    else:
        why = _HINT
    return QueryError(f"function {name} is not allowed: {why}", token=name, **_position(node))


def _string_table(node: exp.Table, sql: str | None) -> str | None:
    """The name of a table written as a string literal or a path/URL, else None."""
    ident = node.this
    if not isinstance(ident, exp.Identifier):
        return None
    meta = getattr(ident, "_meta", None)
    if sql and meta and "start" in meta and sql[meta["start"]:meta["start"] + 1] == "'":
        return ident.name
    if _FILE_LIKE.search(ident.name):
        return ident.name
    return None


def check_query(tree: exp.Expression, sql: str | None = None, *, nodes=None) -> None:
    """Raise QueryError if ``tree`` calls a function outside the allow-list, reads a file
    or URL as a table, or uses session variables or parameters. ``sql`` (the query text)
    lets messages name functions exactly as written and spot ``FROM 'literal'``.
    ``nodes``: ``list(tree.walk())`` when the caller has it already (saves a walk)."""
    for node in tree.walk() if nodes is None else nodes:
        if isinstance(node, exp.Func):
            if not _allowed(node):
                raise _refuse_function(node, sql)
        elif isinstance(node, exp.Table):
            name = _string_table(node, sql)
            if name is not None:
                raise QueryError(f"files and URLs cannot be queried ({name!r}): query the "
                                 "catalogue's tables", token=name, **_position(node.this))
        elif isinstance(node, (exp.SessionParameter, exp.Parameter, exp.Placeholder)):
            text = node.sql(dialect="mysql")
            raise QueryError(f"variables and parameters are not allowed ({text})", token=text,
                             **_position(node))
