"""Query languages of the czar: ADQL 2.1 and Qserv's MySQL dialect, parsed with sqlglot.

API
---
``parse(sql, lang="adql") -> sqlglot.exp.Expression``
    ``lang`` is ``"adql"`` (also ``"adql-2.0"``, ``"adql-2.1"``) or ``"qserv"`` (alias
    ``"mysql"``), case-insensitive. Returns one query: an ``exp.Select`` (a ``WITH``
    clause is its ``with`` arg), or an ``exp.Union``/``exp.Except``/``exp.Intersect``.
    Raises :class:`~qengine.errors.QuerySyntaxError` (1-based ``line``/``column`` of the
    offending token's first character, ``token`` its text) when the text does not
    parse, and :class:`~qengine.errors.QueryError` for anything that is not a single
    query: "only SELECT queries are allowed" (INSERT, UPDATE, DELETE, CREATE, DROP,
    SET, ATTACH, COPY, PRAGMA, ... and data-modifying parts inside a query, SELECT ...
    INTO), "only one statement is allowed", table functions in FROM (``read_csv(...)``:
    only catalogue tables can be queried), an empty query, an unknown language; and
    (czar/sandbox.py) any function outside the allow-list, a file or URL as a table,
    session variables and parameters. Hostile input is refused before it can crash or
    stall the parser: NUL and lone surrogate characters, more than :data:`MAX_PARENS`
    nested parentheses, trees deeper than :data:`MAX_DEPTH`, ``*`` with an alias or as
    an argument (other than ``COUNT(*)``).
``to_duckdb(expr) -> str``
    DuckDB SQL for a tree produced by :func:`parse` (after the planner has rewritten
    it); see :mod:`czar.dialects.translate` for what is translated and what is refused.

The normalised tree (what the planner relies on)
-----------------------------------------------
* Geometry (ADQL) calls are ``exp.Anonymous`` nodes with UPPER-CASE names and the
  coordinate-system argument removed:
  ``POINT(ra, dec)``, ``CIRCLE(ra, dec, r)``, ``BOX(ra, dec, width, height)``,
  ``POLYGON(ra1, dec1, ra2, dec2, ra3, dec3, ...)`` (POINT-valued centres and vertices,
  allowed by ADQL 2.1, are flattened to coordinates), ``CONTAINS(a, b)``,
  ``INTERSECTS(a, b)``, ``DISTANCE(POINT(...), POINT(...))`` (the four-number form of
  ADQL 2.1 is rewritten to this one), ``AREA(g)``, ``COORD1(p)``, ``COORD2(p)``,
  ``COORDSYS(g)``, ``CENTROID(g)``, ``REGION(s)``, and ``IN_UNIT(x, unit)``.
  Accepted coordinate systems: ``'ICRS'``, ``'J2000'``, ``''``, any case, optionally
  followed by an STC-S reference position (``'ICRS GEOCENTER'``); any other (e.g.
  ``'GALACTIC'``) raises QueryError naming it. Wrong argument counts raise
  QuerySyntaxError.
* Qserv/sciSQL functions are ``exp.Anonymous`` with lower-case names:
  ``qserv_areaspec_box/circle/ellipse/poly`` (arity checked) and ``scisql_*``.
  ``1 = qserv_areaspec_box(...)`` stays an ``exp.EQ``.
* ``TOP n`` (ADQL) is the Select's ``limit`` arg, an ``exp.Limit`` exactly as for
  ``LIMIT n``; ``OFFSET`` is the ``offset`` arg; MySQL ``LIMIT a, b`` becomes
  ``limit`` b and ``offset`` a.
* Identifiers keep their spelling; unquoted ones are ``Identifier(quoted=False)``
  (ADQL: case-insensitive), ``"Quoted"`` ADQL and ```backquoted``` MySQL names have
  ``quoted=True``. ``schema.table`` is ``exp.Table(db=schema, this=table)``.
* Functions: ADQL ``LOG(x)`` is ``exp.Ln``, ``LOG10(x)`` ``exp.Log(10, x)``,
  ``TRUNCATE(x, n)`` ``exp.Trunc``, ``CEILING`` ``exp.Ceil``, ``MOD`` ``exp.Mod``,
  ``POWER`` ``exp.Pow``, ``RAND`` ``exp.Rand``, ``||`` ``exp.DPipe``, ``ILIKE``
  ``exp.ILike``. Standard deviations: ADQL ``STDDEV``/``VARIANCE`` (not standard ADQL;
  PostgreSQL meaning) are the *sample* ones (``exp.Stddev``/``exp.Variance``); MySQL
  ``STD``/``STDDEV``/``STDDEV_POP`` are ``exp.StddevPop`` and ``VARIANCE``/``VAR_POP``
  ``exp.VariancePop`` (population, as in MySQL); ``STDDEV_SAMP`` is ``exp.StddevSamp``
  and ``VAR_SAMP`` ``exp.Variance``.
* Hexadecimal literals ``0x1F`` (ADQL 2.1; MySQL in a numeric context) are integer
  ``exp.Literal`` numbers.
* ORDER BY terms carry explicit ``nulls_first``: ADQL sorts NULLs as PostgreSQL (last
  ascending, first descending), Qserv as MySQL (first ascending, last descending).
* Qserv: ``x DIV y`` is ``exp.IntDiv(x, NULLIF(y, 0))``, ``x MOD y`` / ``x % y``
  ``exp.Mod(x, NULLIF(y, 0))`` and ``x / y`` ``exp.Div(safe=True)``: MySQL gives NULL
  on division by zero.
* The root's ``meta["qe_lang"]`` is ``"adql"`` or ``"qserv"``.
* Positions: nodes built from tokens have ``meta["line"]`` and ``meta["col"]``, the
  1-based line and column where the token starts (``meta["start"]``/``["end"]`` are
  0-based character offsets, as in sqlglot).
"""
from __future__ import annotations

import re

from sqlglot import exp
from sqlglot.errors import ParseError, TokenError
from sqlglot.tokens import TokenType

from czar import sandbox as _sandbox  # a module, not its names: it imports this package
from qengine.errors import QueryError, QuerySyntaxError

from .adql import ADQL, normalize_geometry
from .adql import _pos as _meta_pos
from .qserv import Qserv, normalize_qserv
from .translate import to_duckdb

__all__ = ["ADQL", "LANGUAGES", "Qserv", "dialect_for", "parse", "to_duckdb"]

#: Accepted ``lang`` values (lower case) -> dialect class.
LANGUAGES: dict[str, type] = {
    "adql": ADQL, "adql-2.0": ADQL, "adql-2.1": ADQL, "adql2.0": ADQL, "adql2.1": ADQL,
    "qserv": Qserv, "mysql": Qserv,
}

_REFUSED = "only SELECT queries are allowed"

# Statement kinds refused anywhere in the tree (data-modifying CTEs, ...).
_REFUSED_NODES = tuple(
    cls for cls in (getattr(exp, name, None) for name in (
        "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "AlterColumn",
        "TruncateTable", "Command", "Set", "Pragma", "Copy", "Attach", "Detach", "Use",
        "Transaction", "Commit", "Rollback", "LoadData", "Grant", "Revoke", "Analyze",
        "Describe", "Show", "Export", "Install", "Cache", "Uncache", "Refresh", "Summarize",
        "Kill", "Execute", "Declare"))
    if isinstance(cls, type))

# Words that never name a column or an alias when unquoted: sqlglot takes
# "FROM t GROUP" as "FROM t AS GROUP"; such a query is refused as a syntax error.
_CLAUSE_WORDS = frozenset({
    "SELECT", "FROM", "WHERE", "GROUP", "ORDER", "BY", "HAVING", "LIMIT", "OFFSET", "TOP",
    "UNION", "EXCEPT", "INTERSECT", "JOIN", "INNER", "OUTER", "LEFT", "RIGHT", "FULL",
    "CROSS", "NATURAL", "ON", "USING", "AND", "OR", "NOT", "AS", "DISTINCT", "ALL", "WITH",
    "BETWEEN", "LIKE", "ILIKE", "IN", "IS", "NULL", "CASE", "WHEN", "THEN", "ELSE", "END",
    "ASC", "DESC", "EXISTS", "INTO", "VALUES", "SET", "UPDATE", "DELETE", "INSERT",
})
_CLAUSE_TOKENS = {
    TokenType.FROM, TokenType.WHERE, TokenType.GROUP_BY, TokenType.ORDER_BY, TokenType.HAVING,
    TokenType.LIMIT, TokenType.OFFSET, TokenType.UNION, TokenType.EXCEPT, TokenType.INTERSECT,
    TokenType.R_PAREN, TokenType.JOIN, TokenType.ON,
}


# Statement keywords refused wherever they appear (a data-modifying CTE, a second
# statement): they are reserved words in ADQL and MySQL, so never plain names.
_REFUSED_TOKENS = {tt for tt in (getattr(TokenType, n, None) for n in (
    "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "MERGE", "PRAGMA", "GRANT",
    "REVOKE", "ATTACH", "DETACH", "INSTALL")) if tt is not None}


def dialect_for(lang: str) -> type:
    """The sqlglot dialect class for a ``lang`` name (see :data:`LANGUAGES`)."""
    try:
        return LANGUAGES[str(lang).strip().lower()]
    except KeyError:
        raise QueryError(f"unknown query language {lang!r}: use ADQL (adql, adql-2.0, "
                         "adql-2.1) or qserv") from None


def _line_col(sql: str, offset: int) -> tuple[int, int]:
    """1-based (line, column) of a 0-based character offset."""
    offset = max(0, min(offset, len(sql)))
    line = sql.count("\n", 0, offset) + 1
    return line, offset - (sql.rfind("\n", 0, offset) + 1) + 1


def _fix_positions(tree: exp.Expression, sql: str) -> None:
    """sqlglot's meta["col"] is where a token ends; make it where it starts."""
    for node in tree.walk():
        meta = getattr(node, "_meta", None)  # don't create a meta dict per node
        if meta and "start" in meta:
            meta["line"], meta["col"] = _line_col(sql, meta["start"])


_MISSING = re.compile(r"Required keyword: '(\w+)' missing for <class '[\w.]*?(\w+)'>")


def _describe(message: str) -> str:
    m = _MISSING.match(message or "")
    if m:
        return f"incomplete {m.group(2).upper()} ({m.group(1)} missing)"
    if message.startswith("Invalid expression / Unexpected token"):
        return "unexpected token"
    if message.startswith("Expecting "):
        return "expected " + repr(message[len("Expecting "):].strip())
    if message.startswith("Expected table name but got"):
        return "expected a table name"
    return message or "syntax error"


def _syntax_error(sql: str, err: ParseError) -> QuerySyntaxError:
    info = err.errors[0] if err.errors else {}
    tok = getattr(err, "qe_token", None)
    desc = _describe(str(info.get("description") or err))
    if getattr(err, "qe_at_end", False) or tok is None or not tok:
        end = len(sql.rstrip().rstrip(";").rstrip())
        line, col = _line_col(sql, end)
        return QuerySyntaxError(f"unexpected end of query: {desc}", line=line, column=col,
                                token=None)
    line, col = _line_col(sql, tok.start)
    return QuerySyntaxError(desc, line=line, column=col, token=sql[tok.start:tok.end + 1])


def _unterminated(sql: str, err: TokenError) -> QuerySyntaxError:
    """Locate the quote of an unterminated string/identifier, else the error context."""
    i, n, quote_at = 0, len(sql), None
    while i < n:
        c = sql[i]
        if sql.startswith("--", i) or c == "#":
            j = sql.find("\n", i)
            i = n if j < 0 else j + 1
            continue
        if sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            if j < 0:
                line, col = _line_col(sql, i)
                return QuerySyntaxError("unterminated comment", line=line, column=col, token="/*")
            i = j + 2
            continue
        if c in "'\"`":
            j = i + 1
            while j < n:
                if sql[j] == "\\" and c != '"' and j + 1 < n:
                    j += 2
                    continue
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:  # doubled quote
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                quote_at = i
                break
            i = j + 1
            continue
        i += 1
    if quote_at is not None:
        line, col = _line_col(sql, quote_at)
        what = "string" if sql[quote_at] == "'" else "quoted name or string"
        return QuerySyntaxError(f"unterminated {what}", line=line, column=col,
                                token=sql[quote_at:quote_at + 20])
    line, col = _line_col(sql, getattr(err, "start", None) or 0)
    return QuerySyntaxError(f"cannot read the query: {err}", line=line, column=col)


def _token_checks(sql: str, toks: list, adql: bool) -> None:
    """Refuse statements that are not queries, and a few sloppy forms sqlglot accepts."""
    if not toks:
        raise QuerySyntaxError("empty query", line=1, column=1)
    first = toks[0]
    if first.token_type not in (TokenType.SELECT, TokenType.WITH, TokenType.L_PAREN):
        line, col = _line_col(sql, first.start)
        raise QueryError(_REFUSED, line=line, column=col, token=first.text)
    depth = 0
    for i, tok in enumerate(toks):
        nxt = toks[i + 1] if i + 1 < len(toks) else None
        if tok.token_type == TokenType.L_PAREN:
            depth += 1
            if depth > MAX_PARENS:  # sqlglot's parser recurses ~10 frames per level
                line, col = _line_col(sql, tok.start)
                raise QuerySyntaxError(f"the query is nested too deeply (more than {MAX_PARENS} "
                                       "levels of parentheses)", line=line, column=col, token="(")
        elif tok.token_type == TokenType.R_PAREN:
            depth -= 1
        if tok.token_type in _REFUSED_TOKENS and not (
                tok.token_type == TokenType.INSERT and nxt is not None
                and nxt.token_type == TokenType.L_PAREN and i > 0):  # MySQL INSERT(str, ...)
            line, col = _line_col(sql, tok.start)
            raise QueryError(_REFUSED, line=line, column=col, token=tok.text)
        if tok.token_type == TokenType.COMMA and (nxt is None or nxt.token_type in _CLAUSE_TOKENS):
            at = nxt or tok
            line, col = _line_col(sql, at.start if nxt else tok.start)
            raise QuerySyntaxError("unexpected token after ','" if nxt else
                                   "unexpected end of query after ','",
                                   line=line, column=col, token=at.text)
        if adql and nxt is not None and tok.token_type in (TokenType.GT, TokenType.LT) \
                and nxt.token_type == tok.token_type:
            # sqlglot reads "> >" and ">>" as a shift; ADQL has no shift operators.
            line, col = _line_col(sql, nxt.start)
            raise QuerySyntaxError("unexpected token", line=line, column=col, token=nxt.text)
        if tok.token_type == TokenType.SELECT:
            j = i + 1
            while j < len(toks) and toks[j].token_type in (TokenType.DISTINCT, TokenType.ALL):
                j += 1
            if j < len(toks) and toks[j].token_type == TokenType.TOP:
                if j + 1 < len(toks) and toks[j + 1].token_type != TokenType.NUMBER:
                    line, col = _line_col(sql, toks[j + 1].start)
                    raise QuerySyntaxError("TOP needs a number of rows", line=line, column=col,
                                           token=toks[j + 1].text)
                j += 2
            if j >= len(toks) or toks[j].token_type in _CLAUSE_TOKENS or \
                    toks[j].token_type == TokenType.SEMICOLON:
                at = toks[j] if j < len(toks) else None
                line, col = _line_col(sql, at.start if at else toks[-1].end + 1)
                raise QuerySyntaxError("empty select list", line=line, column=col,
                                       token=at.text if at else None)


def _tree_checks(nodes, sql: str) -> None:
    """``nodes``: the tree's nodes in ``walk()`` order (a list: the sandbox checks them too)."""
    for node in nodes:
        if isinstance(node, _REFUSED_NODES):
            raise QueryError(_REFUSED, token=node.key.upper(), **_meta_pos(node))
        if isinstance(node, exp.Table) and isinstance(node.this, exp.Func):
            name = _sandbox.function_name(node.this, sql)
            raise QueryError(f"table functions are not allowed in FROM ({name}): query the "
                             "catalogue's tables", token=name, **_meta_pos(node))
        if isinstance(node, exp.Select) and node.args.get("into") is not None:
            raise QueryError("SELECT ... INTO is not allowed: " + _REFUSED)
        if isinstance(node, exp.Star) and isinstance(node.parent, exp.Func) \
                and not isinstance(node.parent, exp.Count):
            # DuckDB would expand concat(*) to every column: only COUNT(*) means something
            name = node.parent.name if isinstance(node.parent, exp.Anonymous) else \
                node.parent.sql_name()
            raise QuerySyntaxError(f"'*' is only allowed in COUNT(*), not in {name}(*)",
                                   token="*", **_meta_pos(node.parent))
        if isinstance(node, exp.Alias) and (isinstance(node.this, exp.Star) or (
                isinstance(node.this, exp.Column) and isinstance(node.this.this, exp.Star))):
            # "SELECT * x FROM t" (sqlglot reads an alias): not SQL, and it would name every column x
            ident = node.args.get("alias")
            raise QuerySyntaxError("'*' cannot have an alias", token=ident.name if ident else None,
                                   **_meta_pos(ident if ident is not None else node))
        if isinstance(node, (exp.TableAlias, exp.Alias)):
            ident = node.args.get("alias") if isinstance(node, exp.Alias) else node.this
            if (isinstance(ident, exp.Identifier) and not ident.quoted
                    and ident.name.upper() in _CLAUSE_WORDS):
                raise QuerySyntaxError(f"unexpected keyword {ident.name.upper()}",
                                       token=ident.name, **_meta_pos(ident))
        if isinstance(node, exp.In) and not node.expressions and node.args.get("query") is None \
                and node.args.get("unnest") is None and node.args.get("field") is None:
            raise QuerySyntaxError("empty IN list", **_meta_pos(node.this))


#: Most nested parentheses accepted (checked on the tokens, before sqlglot's recursive parser).
MAX_PARENS = 32

#: Deepest query tree accepted: the planner, the translation and sqlglot's SQL generator
#: recurse once (or a few times) per level, and Python's stack is ~1000 frames.
MAX_DEPTH = 150

# NUL ends a C string in DuckDB and lone surrogates cannot be sent as UTF-8: refuse both here.
_BAD_CHARACTER = re.compile("[\x00\ud800-\udfff]")


def _check_characters(sql: str) -> None:
    bad = _BAD_CHARACTER.search(sql)
    if bad is not None:
        line, col = _line_col(sql, bad.start())
        raise QuerySyntaxError(f"invalid character U+{ord(bad.group()):04X} in the query",
                               line=line, column=col)


def _check_depth(tree: exp.Expression, sql: str, fix_positions: bool = False) -> None:
    """Refuse trees deeper than MAX_DEPTH (iteratively: a deep tree must not crash the check).
    ``fix_positions``: also :func:`_fix_positions`, in the same pass over the tree (each
    node's own position is fixed before its depth is checked)."""
    stack = [(tree, 1)]
    single_line = "\n" not in sql
    while stack:
        node, depth = stack.pop()
        if fix_positions:
            meta = getattr(node, "_meta", None)  # don't create a meta dict per node
            if meta and "start" in meta:
                if single_line:  # _line_col without scanning the text
                    meta["line"], meta["col"] = 1, max(0, min(meta["start"], len(sql))) + 1
                else:
                    meta["line"], meta["col"] = _line_col(sql, meta["start"])
        if depth > MAX_DEPTH:
            meta = getattr(node, "_meta", None) or {}
            where = {"line": meta["line"], "column": meta["col"]} if "line" in meta else \
                {"line": 1, "column": 1}
            raise QuerySyntaxError(f"the query is nested too deeply (more than {MAX_DEPTH} levels "
                                   "of expressions): use fewer levels of parentheses and "
                                   "subqueries, and write long OR chains as IN lists", **where)
        stack.extend((child, depth + 1) for child in node.iter_expressions())


def _unwrap(tree: exp.Expression) -> exp.Expression:
    """"(SELECT ...)" -> the query; "(SELECT ...) ORDER BY ... LIMIT ..." -> a SELECT *
    over it carrying the modifiers, so that the root is a Select or a set operation."""
    while isinstance(tree, exp.Subquery):
        mods = {k: v for k, v in tree.args.items() if k != "this" and v is not None}
        inner = tree.this.pop()
        if not mods:
            tree = inner
            continue
        outer = exp.Select(expressions=[exp.Star()]).from_(
            exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier("_q"))))
        for key, value in mods.items():
            if key != "alias":
                outer.set(key, value)
        return outer
    return tree


def _qserv_work(nodes: list[exp.Expression], mysql: bool) -> bool:
    """Whether :func:`normalize_qserv` would change or check anything among ``nodes``
    (qserv_*/scisql_* calls, hexadecimal literals, MySQL's DIV/MOD): most queries have none,
    and then its walk over the tree is skipped."""
    kinds = (exp.HexString, exp.IntDiv, exp.Mod) if mysql else (exp.HexString,)
    return any(isinstance(n, kinds) or (isinstance(n, exp.Anonymous)
                                        and n.name.lower().startswith(("qserv_", "scisql_")))
               for n in nodes)


def parse(sql: str, lang: str = "adql") -> exp.Expression:
    """Parse one ADQL or Qserv-MySQL query into the normalised sqlglot tree (see above)."""
    dialect_cls = dialect_for(lang)
    if not isinstance(sql, str):
        raise QueryError(f"the query must be a string, got {type(sql).__name__}")
    _check_characters(sql)
    dialect = dialect_cls()
    try:
        toks = dialect.tokenize(sql)
    except TokenError as err:
        raise _unterminated(sql, err) from None
    if all(t.token_type == TokenType.SEMICOLON for t in toks):
        raise QuerySyntaxError("empty query", line=1, column=1)
    _token_checks(sql, toks, adql=dialect_cls is ADQL)
    try:
        statements = dialect.parser().parse(toks, sql)
    except ParseError as err:
        raise _syntax_error(sql, err) from None
    except RecursionError:  # sqlglot's parser recurses once per nesting level
        raise QuerySyntaxError("the query is nested too deeply: use fewer levels of parentheses "
                               "and subqueries", line=1, column=1) from None
    # a comment after the last ';' comes back as a bare Semicolon statement: nothing to run
    statements = [s for s in statements if s is not None and not isinstance(s, exp.Semicolon)]
    if not statements:
        raise QuerySyntaxError("empty query", line=1, column=1)
    if len(statements) > 1:
        second = statements[1]
        for s in statements:
            _fix_positions(s, sql)
        semi = next(i for i, t in enumerate(toks) if t.token_type == TokenType.SEMICOLON)
        after = next(t for t in toks[semi:] if t.token_type != TokenType.SEMICOLON)
        line, col = _line_col(sql, after.start)
        if not isinstance(second, exp.Query):
            raise QueryError(_REFUSED + " (and only one statement)", line=line, column=col,
                             token=after.text)
        raise QueryError("only one statement is allowed: remove everything after the first ';'",
                         line=line, column=col, token=after.text)
    tree = statements[0]
    _check_depth(tree, sql, fix_positions=True)  # one pass for both: each walk costs
    tree = _unwrap(tree)
    if not isinstance(tree, exp.Query):
        raise QueryError(_REFUSED, token=tree.key.upper())
    nodes = list(tree.walk())  # one walk for both checks
    _tree_checks(nodes, sql)
    _sandbox.check_query(tree, sql, nodes=nodes)  # the function allow-list (czar/sandbox.py)
    if dialect_cls is ADQL:
        normalize_geometry(tree)  # creates no node normalize_qserv looks at: the list still tells
    if _qserv_work(nodes, mysql=dialect_cls is Qserv):
        normalize_qserv(tree, mysql=dialect_cls is Qserv)
    tree.meta["qe_lang"] = "adql" if dialect_cls is ADQL else "qserv"
    return tree
