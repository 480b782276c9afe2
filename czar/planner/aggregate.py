"""Split one SELECT into a per-worker query and a merge query.

DESIGN.md, "Query processing" steps 3 and 5: the czar sends one sub-query to every worker
(each holds a disjoint part of the rows), concatenates the workers' Arrow results into one
table (``__parts``) and runs a merge query over it in DuckDB. :func:`split` writes both, as a
pure function over the sqlglot tree (no database, no catalogue), in the style of sqlglot's
optimizer rules::

    plan = split(sqlglot.parse_one(sql, read="duckdb"))
    plan.worker   # same FROM/JOIN/WHERE as the input; run on every worker
    plan.merge    # runs over "__parts", the union of all worker results

What it does
------------
* Plain queries: every output column is aliased by position in the worker (``_qe_c0``,
  ``_qe_c1``, ...) and aliased back in the merge to the name a single DuckDB would give it
  (see *Column names*). ``SELECT *`` is kept as it is in the worker; the merge is then
  ``SELECT * EXCLUDE (<hidden>) RENAME (_qe_c1 AS <name>, ...)``.
* ORDER BY + LIMIT/OFFSET: each worker keeps the ORDER BY with ``LIMIT limit + offset``
  (per-worker top-k, ``worker_limit``); the merge re-applies ORDER BY, LIMIT and OFFSET. ORDER
  BY terms that are ordinals, aliases or select-list expressions use the select list; any
  other term becomes a hidden worker column (``_qe_o0``...) that the merge sorts on and drops.
  LIMIT without ORDER BY: ``merge_needs_all`` is False, so the merge may stop as soon as
  limit + offset rows arrived.
* DISTINCT: DISTINCT in the worker and again in the merge.
* Aggregates are replaced by mergeable partials (``_qe_a0``...) computed per worker:
  COUNT -> ``CAST(COALESCE(SUM(p), 0) AS BIGINT)`` (0 on an empty input, BIGINT as DuckDB);
  SUM/MIN/MAX/BOOL_AND/BOOL_OR/BIT_AND/BIT_OR/BIT_XOR/ANY_VALUE/PRODUCT/FSUM -> the same
  function of the partials; AVG -> ``SUM(sum) / SUM(count)``; STDDEV/VARIANCE (samp and pop,
  ``STDDEV``/``VARIANCE`` meaning the sample forms, as in DuckDB) -> per worker ``n``, ``mean``
  and ``M2 = VAR_POP(x) * COUNT(x)``, merged exactly with Chan, Golub and LeVeque's parallel
  formula ``M2 = sum(M2_i) + sum(n_i * (mean_i - mean)^2)`` where the group's mean comes from a
  window over ``__parts`` (no sum-of-squares cancellation); ``agg(DISTINCT x)`` -> the worker
  also groups by x (so it returns the distinct x of each group) and the merge computes
  ``agg(DISTINCT x)``. FILTER (WHERE ...) clauses are kept on the partials. Expressions over
  aggregates and group keys (``SUM(a)/COUNT(*)``, ``ROUND(AVG(x), 2)``) are rebuilt in the
  merge. GROUP BY (expressions, aliases, ordinals, ALL) is re-aggregated in the merge; HAVING,
  ORDER BY, LIMIT/OFFSET and DISTINCT of an aggregate query run in the merge only.
* Refused with :class:`~qengine.errors.QueryError`: set operations and WITH (the caller's
  business), window functions and QUALIFY, GROUPING SETS/ROLLUP/CUBE, DISTINCT ON, aggregates
  that cannot be merged exactly (MEDIAN, QUANTILE*, MODE, STRING_AGG, LIST/ARRAY_AGG, FIRST,
  APPROX_COUNT_DISTINCT, CORR, ...), aggregates with an ORDER BY of their own, subqueries in the
  select list of an aggregate query.
* Subqueries (in FROM, IN, EXISTS, scalar) are never looked into: they run inside every worker
  as written. An aggregate over a derived table is split as usual.

Column names
------------
The merge output is named like a single DuckDB run of the original query: the alias when
there is one; a bare column's name; otherwise DuckDB's rendering of the parsed expression
(``count_star()``, ``(a + 1)``, ``sum((x * x))``, ``(NOT (a IN (1, 2)))``, ``CASE  WHEN ...``),
produced by :func:`duckdb_column_name`. Known differences (tested in tests/test_aggregate.py):

* a bare column takes the spelling written in the query; DuckDB takes the catalogue's, so
  ``SELECT RA FROM t`` is named ``RA`` here and ``ra`` by DuckDB (normalise identifiers
  against the schema first, e.g. with sqlglot's ``qualify``, to get the catalogue's spelling);
* function aliases that sqlglot normalises (``var_samp`` -> ``variance``, ``ceiling`` ->
  ``ceil``, ``pow`` -> ``power``, ``len`` -> ``length``) keep their written name only when the
  SQL text is passed as ``source=``; ``x ** 2`` is named ``(x ^ 2)``; ``x IS NOT NULL`` and
  ``NOT x IS NULL`` (one sqlglot tree) are both named ``(x IS NOT NULL)``;
* types in CAST are sqlglot's spelling (``CAST(x AS DOUBLE)`` where DuckDB echoes the written
  ``double``; ``x::text`` is named ``CAST(x AS VARCHAR)``), without ``source`` ``log(10, x)`` is
  named ``log10(x)``, and rarer constructs (intervals, struct/list literals, subscripts, subqueries)
  fall back to sqlglot's DuckDB SQL;
* ``SELECT *`` over a join whose tables share column names: DuckDB names the columns of
  ``__parts`` ``id``, ``id_1``..., where a single DuckDB returns ``id`` twice.

Name resolution without a schema
--------------------------------
DuckDB binds a bare name in GROUP BY or inside an ORDER BY expression to a table column
first and to a select-list alias second (a bare ORDER BY name: alias first). Without the
schema, a name is taken for a table column when the query uses it as a column elsewhere (select
list, WHERE, JOIN ... ON); otherwise an alias of that name wins.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp

from qengine.errors import QueryError

__all__ = ["SplitPlan", "duckdb_column_name", "split"]

DIALECT = "duckdb"


@dataclass
class SplitPlan:
    """The two halves of a query: ``worker`` runs on every worker over its rows, ``merge``
    over the union of their results (the table named by ``parts_table``)."""

    worker: exp.Select
    merge: exp.Select
    worker_limit: int | None
    """Rows each worker needs to return at most (None = all); the dispatcher may stop early."""
    merge_needs_all: bool
    """False when the merge may stop as soon as LIMIT (+ OFFSET) rows arrived."""
    rename: dict[str, str] | None = None
    """When the merge only renames the parts' columns (then keeps rows ``offset`` to
    ``offset + limit``): part column -> output name, in output order; {} keeps every column.
    None: run ``merge``. Lets the dispatcher skip a DuckDB query for plain row queries."""
    limit: int | None = None
    offset: int = 0


# --------------------------------------------------------------------------- constants


def _words(text: str) -> list[str]:
    return text.split()


# DuckDB's aggregate function names (duckdb_functions(), DuckDB 2.0); sqlglot parses those it
# does not know as exp.Anonymous, which must still be recognised as aggregates.
_DUCKDB_AGGREGATES = frozenset(_words("""
any_value approx_count_distinct approx_quantile approx_top_k arbitrary arg_max arg_max_null
arg_max_nulls_last arg_min arg_min_null arg_min_nulls_last argmax argmin array_agg avg bit_and
bit_or bit_xor bitstring_agg bool_and bool_or combine_aggr corr count count_if count_star
countif covar_pop covar_samp decimal_average entropy favg first fsum group_concat histogram
histogram_exact kahan_sum kurtosis kurtosis_pop last list listagg lttb mad max max_by mean
median min min_by mode product quantile quantile_cont quantile_disc regr_avgx regr_avgy
regr_count regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy reservoir_quantile sem
skewness stddev stddev_pop stddev_samp string_agg sum sum_no_overflow sumkahan var_pop var_samp
variance variant_group_object
"""))

# DuckDB's keywords (duckdb_keywords(), every category): DuckDB quotes these when it renders an
# identifier or a function name into a column name.
_DUCKDB_KEYWORDS = frozenset(_words("""
abort absolute access action add admin after aggregate all also alter always analyse analyze and
anti any approx array as asc asof assertion assignment asymmetric at attach attribute
authorization backward before begin between bigint binary bit boolean both by cache call called
cascade cascaded case cast catalog centuries century chain char character characteristics check
checkpoint class close cluster coalesce collate collation column columns columns comment
comments commit committed compression concurrently configuration conflict connect connection
constraint constraints content continue conversion copy cost create cross csv cube current
cursor cycle data database day days deallocate dec decade decades decimal declare default
defaults deferrable deferred definer delete delimiter delimiters depends desc describe destroy
detach dictionary disable discard disconnect distance distinct do document domain double drop
each else enable encoding encrypted end enum error escape event exact except exclude excluding
exclusive execute exists explain export export_state extension extensions external extract false
family fetch filter first float following for force foreign forward freeze from full function
functions generated generated glob global grant granted group grouping grouping_id groups
handler having header hold hour hours identity if ignore ilike immediate immutable implicit
import in include including increment index indexes inherit inherits initially inline inner
inout input insensitive insert install instead int integer intersect interval into invoker is
isnull isolation join json key label lambda language large last lateral leading leakproof left
level like limit listen load local location lock locked logged macro map map mapping match
matched materialized maxvalue merge method microsecond microseconds millennia millennium
millisecond milliseconds minute minutes minvalue mode month months move name names national
natural nchar nearest new next no none not nothing notify notnull nowait null nullif nulls
numeric object of off offset oids old on only operator option options or order ordinality others
out outer over overlaps overlay overriding owned owner parallel parser partial partition
partitioned passing password percent persistent pivot pivot_longer pivot_wider placing plans
policy position positional pragma preceding precision prepare prepared preserve primary prior
privileges procedural procedure program publication qualify quarter quarters quote range read
real reassign recheck recursive ref references referencing refresh register reindex relative
release rename repeatable replace replica reset resource resources respect restart restrict
returning returns revoke right role rollback rollup row rows rule sample savepoint schema
schemas scope scroll search second seconds secret secure security select semi sequence sequences
serializable server session set setof sets share show similar similarity simple skip smallint
snapshot some sorted source sql stable standalone start statement statistics stdin stdout
storage stored strict strip struct struct subscription substring summarize symmetric sysid
system table tables tablesample tablespace target temp template temporary text then ties time
timestamp to trailing transaction transform treat trigger trim true truncate trusted try_cast
try_cast tuple tuple type types unbounded uncommitted unencrypted union unique unknown unlisten
unlogged unpack unpivot until update use user using vacuum valid validate validator value values
varchar variable variadic varying verbose version view views virtual volatile week weeks when
where whitespace window with within without work wrapper write xml xmlattributes xmlconcat
xmlelement xmlexists xmlforest xmlnamespaces xmlparse xmlpi xmlroot xmlserialize xmltable year
years yes zone
"""))

_SIMPLE_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

_SUGGEST_LOCAL = ("compute it inside a derived table whose groups never span chunks (e.g. grouped "
                  "by the director id), or fetch the rows and compute it client-side")
_REFUSED = {
    "median": "it needs all values of a group in one place",
    "quantile": "it needs all values of a group in one place",
    "quantile_cont": "it needs all values of a group in one place",
    "quantile_disc": "it needs all values of a group in one place",
    "percentile_cont": "it needs all values of a group in one place",
    "percentile_disc": "it needs all values of a group in one place",
    "approx_quantile": "its sketches are not merged",
    "reservoir_quantile": "it needs all values of a group in one place",
    "mad": "it needs all values of a group in one place",
    "mode": "it needs all values of a group in one place",
    "string_agg": "its result depends on the order of rows, which is not defined across chunks",
    "group_concat": "its result depends on the order of rows, which is not defined across chunks",
    "listagg": "its result depends on the order of rows, which is not defined across chunks",
    "list": "its result depends on the order of rows, which is not defined across chunks",
    "array_agg": "its result depends on the order of rows, which is not defined across chunks",
    "first": "its result depends on the order of rows, which is not defined across chunks "
             "(use MIN, MAX or ANY_VALUE)",
    "last": "its result depends on the order of rows, which is not defined across chunks "
            "(use MIN, MAX or ANY_VALUE)",
    "approx_count_distinct": "its sketches are not merged (use COUNT(DISTINCT ...))",
}

# --------------------------------------------------------------------------- small helpers


def _err(message: str, node: exp.Expr | None = None) -> QueryError:
    line = col = None
    if node is not None:
        for n in node.walk():
            if n.meta.get("line") is not None:
                line, col = n.meta["line"], n.meta.get("col")
                break
    return QueryError(message, line=line, column=col)


@functools.cache
def _template(sql: str) -> exp.Expr:
    return sqlglot.parse_one(sql, read=DIALECT)


def _x(sql: str, **columns: str) -> exp.Expr:
    """One of this module's own SQL templates, parsed once; the columns named by the keywords
    are replaced by (quoted) references to the given worker columns."""
    tree = _template(sql).copy()
    for col in list(tree.find_all(exp.Column)):
        if col.name in columns:
            col.replace(_col(columns[col.name]))
    return tree


def _col(name: str) -> exp.Column:
    """``exp.column(exp.to_identifier(name, quoted=True))``, without its copy of the identifier."""
    return exp.Column(this=exp.to_identifier(name, quoted=True))


def _unparen(e: exp.Expr) -> exp.Expr:
    while isinstance(e, exp.Paren):
        e = e.this
    return e


def _is_star(e: exp.Expr) -> bool:
    return isinstance(e, exp.Star) or (isinstance(e, exp.Column) and isinstance(e.this, exp.Star))


def _int_literal(e: exp.Expr) -> int | None:
    e = _unparen(e)
    if isinstance(e, exp.Literal) and not e.is_string and re.fullmatch(r"\d+", e.this):
        return int(e.this)
    return None


def _outer_nodes(node: exp.Expr):
    """``node`` and its descendants in the same query scope (subqueries not entered)."""
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        for child in n.iter_expressions(reverse=True):
            if not isinstance(child, exp.Query):
                stack.append(child)


def _rewrite(node: exp.Expr, fn) -> exp.Expr:
    """Top-down rewrite in the outer scope: ``fn(node)`` returns a replacement or None to
    descend into the node's children. Works in place on ``node`` (pass a copy)."""
    new = fn(node)
    if new is not None:
        return new
    for child in list(node.iter_expressions()):
        if isinstance(child, exp.Query):
            continue
        repl = _rewrite(child, fn)
        if repl is not child:
            child.replace(repl)
    return node


def _fname(node: exp.Expr) -> str:
    """Function name in lower case, for messages and dispatch."""
    if isinstance(node, exp.Anonymous):
        return (node.this.name if isinstance(node.this, exp.Identifier) else str(node.this)).lower()
    head = node.sql(DIALECT).split("(", 1)[0].strip()
    return head.lower() if _SIMPLE_IDENT.match(head) else node.sql_name().lower()


def _is_aggfunc(node: exp.Expr) -> bool:
    if isinstance(node, exp.AggFunc):
        return True
    return isinstance(node, exp.Anonymous) and _fname(node) in _DUCKDB_AGGREGATES


_WRAPPERS = (exp.Filter, exp.IgnoreNulls, exp.RespectNulls, exp.WithinGroup)


def _is_agg_unit(node: exp.Expr) -> bool:
    """An aggregate call, possibly wrapped in FILTER / IGNORE NULLS / WITHIN GROUP."""
    while isinstance(node, _WRAPPERS):
        node = node.this
    return _is_aggfunc(node)


def _has_agg(node: exp.Expr) -> bool:
    return any(_is_agg_unit(n) for n in _outer_nodes(node) if not isinstance(n, exp.Window))


def _window_in(node: exp.Expr) -> exp.Expr | None:
    for n in _outer_nodes(node):
        if isinstance(n, exp.Window):
            return n
    return None


def _canon(e: exp.Expr) -> exp.Expr:
    """Copy without parentheses, identifiers lower-cased (DuckDB identifiers are
    case-insensitive), for structural comparison."""
    c = _unparen(e).copy()
    for p in list(c.find_all(exp.Paren)):
        p.replace(p.this)
    for ident in c.find_all(exp.Identifier):
        ident.set("this", ident.name.lower())
        ident.set("quoted", False)
    for n in c.walk():
        n.meta.clear()
    return c


def _same(a: exp.Expr, b: exp.Expr) -> bool:
    a, b = _unparen(a), _unparen(b)
    if isinstance(a, exp.Column) and isinstance(b, exp.Column):
        if isinstance(a.this, exp.Star) or isinstance(b.this, exp.Star):
            return False
        if a.name.lower() != b.name.lower():
            return False
        ta, tb = a.table.lower(), b.table.lower()
        return not ta or not tb or ta == tb
    return _canon(a) == _canon(b)


def _bare_name(e: exp.Expr) -> str | None:
    e = _unparen(e)
    if isinstance(e, exp.Column) and not e.table and isinstance(e.this, exp.Identifier):
        return e.name.lower()
    return None


def _limit_values(select: exp.Select) -> tuple[int | None, int]:
    limit = offset = None
    lim = select.args.get("limit")
    if lim is not None:
        opts = lim.args.get("limit_options")
        if opts is not None and (opts.args.get("percent") or opts.args.get("with_ties")):
            raise _err("LIMIT ... PERCENT / WITH TIES cannot be split across chunks; "
                       "use a plain LIMIT n", lim)
        limit = _int_literal(lim.expression) if lim.expression is not None else None
        if limit is None:
            raise _err("LIMIT must be a non-negative integer constant", lim)
        if lim.args.get("offset") is not None:
            offset = _int_literal(lim.args["offset"])
            if offset is None:
                raise _err("OFFSET must be a non-negative integer constant", lim)
    off = select.args.get("offset")
    if off is not None:
        offset = _int_literal(off.expression)
        if offset is None:
            raise _err("OFFSET must be a non-negative integer constant", off)
    return limit, offset or 0


def _clone_without(select: exp.Select, drop: tuple[str, ...], copy: bool = True) -> exp.Select:
    """A copy of ``select`` without the clauses in ``drop`` (not copied at all); ``copy=False``
    moves the other clauses' trees into the new Select instead (``select`` is given away)."""
    new = exp.Select()
    for key, value in select.args.items():
        if key in drop or value is None:
            continue
        if copy:
            if isinstance(value, list):
                value = [v.copy() if isinstance(v, exp.Expr) else v for v in value]
            elif isinstance(value, exp.Expr):
                value = value.copy()
        new.set(key, value)
    return new


def _alias(e: exp.Expr, name: str) -> exp.Expr:
    """``exp.alias_(e, name, quoted=True)`` without its copy of ``e`` (the caller's own tree)."""
    ident = exp.to_identifier(name, quoted=True)
    if "alias" in e.arg_types and type(e).__name__ != "Window":
        e.set("alias", ident)
        return e
    return exp.Alias(this=e, alias=ident)


@functools.cache
def _table_template(name: str) -> exp.Table:
    return exp.to_table(name)


def _table(name: str) -> exp.Table:
    """``exp.to_table(name)``: a plain name built directly, others parsed once per name (parsing
    costs more than a copy)."""
    if _PLAIN_NAME.match(name):
        return exp.Table(this=exp.to_identifier(name))
    return _table_template(name).copy()


_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _set_limits(select: exp.Select, limit: int | None, offset: int) -> None:
    select.set("limit", None)
    select.set("offset", None)
    if limit is not None:
        select.set("limit", exp.Limit(expression=exp.Literal.number(limit)))
    if offset:
        select.set("offset", exp.Offset(expression=exp.Literal.number(offset)))


# --------------------------------------------------------------------------- column names


def _quote_ident(name: str) -> str:
    if _SIMPLE_IDENT.match(name) and name.lower() not in _DUCKDB_KEYWORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


_BINARY_OPS: dict[type, str] = {
    exp.Add: "+", exp.Sub: "-", exp.Mul: "*", exp.Div: "/", exp.IntDiv: "//", exp.Mod: "%",
    exp.DPipe: "||", exp.BitwiseAnd: "&", exp.BitwiseOr: "|", exp.BitwiseLeftShift: "<<",
    exp.BitwiseRightShift: ">>", exp.EQ: "=", exp.NEQ: "!=", exp.GT: ">", exp.GTE: ">=",
    exp.LT: "<", exp.LTE: "<=", exp.NullSafeEQ: "IS NOT DISTINCT FROM",
    exp.NullSafeNEQ: "IS DISTINCT FROM", exp.Glob: "~~~",
}
_TYPE_NAMES = {"INT": "INTEGER", "INT4": "INTEGER", "INT8": "BIGINT", "INT2": "SMALLINT",
               "REAL": "FLOAT", "FLOAT4": "FLOAT", "BOOL": "BOOLEAN", "NUMERIC": "DECIMAL",
               "STRING": "VARCHAR", "CHAR": "VARCHAR", "BPCHAR": "VARCHAR", "TEXT": "VARCHAR"}


class _Namer:
    """Renders a parsed expression the way DuckDB's ParsedExpression::ToString does."""

    def __init__(self, source: str | None) -> None:
        self.source = source

    def func_name(self, node: exp.Expr) -> str:
        start, end = node.meta.get("start"), node.meta.get("end")
        if self.source is not None and start is not None and end is not None:
            text = self.source[start:end + 1]
            if _SIMPLE_IDENT.match(text):
                return text.lower()
        if isinstance(node, exp.Anonymous) and isinstance(node.this, exp.Identifier) \
                and node.this.quoted:
            return node.this.name
        return _fname(node)

    def args(self, node: exp.Expr) -> list[exp.Expr]:
        out: list[exp.Expr] = []
        for key in node.arg_types:
            v = node.args.get(key)
            if isinstance(v, list):
                out.extend(a for a in v if isinstance(a, exp.Expr))
            elif isinstance(v, exp.Expr):
                out.append(v)
        return out

    def conj(self, node: exp.Expr, cls: type) -> list[str]:
        node = _unparen(node)
        if isinstance(node, cls):
            return self.conj(node.this, cls) + self.conj(node.expression, cls)
        return [self.r(node)]

    def r(self, e: exp.Expr) -> str:  # one case per node type, like DuckDB
        e = _unparen(e)
        r = self.r
        if isinstance(e, exp.Column):
            if isinstance(e.this, exp.Star):
                return e.sql(DIALECT)
            parts = [p for p in (e.args.get("catalog"), e.args.get("db"), e.args.get("table"),
                                 e.this) if p is not None]
            return ".".join(_quote_ident(p.name) for p in parts)
        if isinstance(e, exp.Literal):
            return "'" + e.this.replace("'", "''") + "'" if e.is_string else e.this
        if isinstance(e, exp.Boolean):
            return "true" if e.this else "false"
        if isinstance(e, exp.Null):
            return "NULL"
        if isinstance(e, exp.Neg):
            inner = _unparen(e.this)
            if isinstance(inner, exp.Literal) and not inner.is_string:
                return "-" + inner.this
            return f"(-({r(inner)}))"
        if isinstance(e, exp.BitwiseNot):
            return f"(~({r(e.this)}))"
        if isinstance(e, exp.Not):
            inner = _unparen(e.this)
            if isinstance(inner, exp.Is) and isinstance(inner.expression, exp.Null):
                return f"({r(inner.this)} IS NOT NULL)"
            return f"(NOT {r(inner)})"
        if isinstance(e, (exp.And, exp.Or)):
            word = " AND " if isinstance(e, exp.And) else " OR "
            return "(" + word.join(self.conj(e, type(e))) + ")"
        if isinstance(e, exp.Pow):
            if e.meta.get("start") is not None:  # written as a function call
                return f"{self.func_name(e)}({r(e.this)}, {r(e.expression)})"
            return f"({r(e.this)} ^ {r(e.expression)})"
        if isinstance(e, (exp.Like, exp.ILike)) and not e.args.get("escape"):
            op = "~~" if isinstance(e, exp.Like) else "~~*"
            if e.args.get("negate"):
                op = "!" + op
            return f"({r(e.this)} {op} {r(e.expression)})"
        if type(e) in _BINARY_OPS:
            return f"({r(e.this)} {_BINARY_OPS[type(e)]} {r(e.expression)})"
        if isinstance(e, exp.Is) and isinstance(e.expression, exp.Null):
            return f"({r(e.this)} IS NULL)"
        if isinstance(e, exp.Between) and not e.args.get("symmetric"):
            return f"({r(e.this)} BETWEEN {r(e.args['low'])} AND {r(e.args['high'])})"
        if isinstance(e, exp.In) and e.expressions and not e.args.get("query"):
            return f"({r(e.this)} IN ({', '.join(r(a) for a in e.expressions)}))"
        if isinstance(e, exp.Case):
            operand = e.this
            out = "CASE "
            for when in e.args.get("ifs") or []:
                cond = when.this
                cond_s = r(exp.EQ(this=operand, expression=cond)) if operand is not None \
                    else r(cond)
                out += f" WHEN ({cond_s}) THEN ({r(when.args['true'])})"
            default = e.args.get("default")
            return out + f" ELSE {r(default) if default is not None else 'NULL'} END"
        if isinstance(e, (exp.Cast, exp.TryCast)) and e.args.get("to") is not None:
            word = "TRY_CAST" if isinstance(e, exp.TryCast) or e.args.get("safe") else "CAST"
            to = e.args["to"].sql(DIALECT)
            base, _, rest = to.partition("(")
            to = _TYPE_NAMES.get(base.upper(), base) + (("(" + rest.replace(",", ", ")
                                                         .replace(",  ", ", ")) if rest else "")
            return f"{word}({r(e.this)} AS {to})"
        if isinstance(e, exp.Distinct):
            return "DISTINCT " + ", ".join(r(a) for a in e.expressions)
        if isinstance(e, exp.Filter):
            return f"{r(e.this)} FILTER (WHERE {r(e.expression.this)})"
        if isinstance(e, exp.IgnoreNulls):
            return r(e.this)
        if isinstance(e, exp.Count) and isinstance(e.this, exp.Star):
            return "count_star()"
        if isinstance(e, exp.Coalesce):
            return f"COALESCE({', '.join(r(a) for a in self.args(e))})"
        if isinstance(e, exp.Log) and e.expression is not None:
            # sqlglot reads log10(x), log2(x) and log(b, x) alike as Log(b, x)
            name, base = self.func_name(e), _unparen(e.this)
            if name == "log" and self.source is None and isinstance(base, exp.Literal) \
                    and base.this in ("10", "2"):
                name = "log" + base.this
            if name in ("log10", "log2"):
                return f"{name}({r(e.expression)})"
        if isinstance(e, exp.Anonymous):
            name = self.func_name(e)
            return f"{_quote_ident(name)}({', '.join(r(a) for a in e.expressions)})"
        if isinstance(e, exp.Func) and not isinstance(e, exp.Window):
            name = self.func_name(e)
            return f"{_quote_ident(name)}({', '.join(r(a) for a in self.args(e))})"
        return e.sql(DIALECT)

    def name(self, proj: exp.Expr) -> str:
        if isinstance(proj, exp.Alias):
            return proj.alias
        inner = _unparen(proj)
        if isinstance(inner, exp.Column) and isinstance(inner.this, exp.Identifier):
            return inner.name
        return self.r(inner)


def duckdb_column_name(projection: exp.Expr, source: str | None = None) -> str:
    """The column name a single DuckDB gives to this select-list item (see module doc)."""
    return _Namer(source).name(projection)


# --------------------------------------------------------------------------- the rule


def split(select: exp.Select, parts_table: str = "__parts", *,
          source: str | None = None, local_keys: frozenset[str] | None = None,
          copy: bool = True) -> SplitPlan:
    """Split ``select`` into a per-worker query and a merge query over ``parts_table``.

    ``source``, when given, is the SQL text ``select`` was parsed from; it only serves to name
    output columns after function names as written (DuckDB does; sqlglot normalises some).
    ``local_keys``: columns (``alias.column`` / bare ``column``, lower-cased) whose groups never
    span workers; a GROUP BY on one of them is computed whole on the workers (HAVING and any
    aggregate included) and merged like a plain query.
    ``copy=False``: the returned trees may take over parts of ``select`` (its FROM, WHERE,
    select-list expressions) instead of copies; for callers that give ``select`` away.
    Raises :class:`QueryError` for what cannot be computed exactly across chunks.
    """
    if not isinstance(select, exp.Select):
        kind = type(select).__name__.upper()
        raise _err(f"only a single SELECT can be split across workers, not {kind}: set "
                   "operations are planned by the caller (split each branch)", select)
    if select.args.get("with_") is not None:
        raise _err("WITH is planned by the caller: inline the common table expressions "
                   "before splitting", select)
    if select.args.get("into") is not None:
        raise _err("SELECT ... INTO is not supported", select)
    if select.args.get("qualify") is not None:
        raise _err("window functions (QUALIFY) cannot be computed across chunks: they need all "
                   "rows of a partition in one place; apply them to the query result "
                   "client-side", select.args["qualify"])
    if select.args.get("windows"):
        raise _err("window functions (WINDOW clause) cannot be computed across chunks: they "
                   "need all rows of a partition in one place", select)
    distinct = select.args.get("distinct")
    if distinct is not None and distinct.args.get("on") is not None:
        raise _err("DISTINCT ON cannot be split across chunks yet; use GROUP BY with MIN/MAX "
                   "or ANY_VALUE", distinct)
    if not select.expressions:
        raise _err("empty select list", select)

    for part in [*select.expressions, select.args.get("having"), select.args.get("order")]:
        if part is None:
            continue
        win = _window_in(part)
        if win is not None:
            fn = _fname(win.this) if isinstance(win.this, exp.Func) else "window"
            raise _err(f"window function {fn.upper()}() OVER (...) cannot be computed across "
                       "chunks: it needs all rows of its partition in one place; compute it "
                       "client-side over the result, or inside a derived table whose partitions "
                       "never span chunks", win)

    limit, offset = _limit_values(select)
    namer = _Namer(source)
    group = select.args.get("group")
    is_agg = (group is not None or select.args.get("having") is not None
              or any(_has_agg(p) for p in select.expressions))
    if is_agg and local_keys and _groups_are_local(select, local_keys):
        return _plain(_local_groups(select), parts_table, namer, limit, offset, copy=False)
    if is_agg:
        return _Aggregate(select, parts_table, namer, limit, offset).plan()
    return _plain(select, parts_table, namer, limit, offset, copy=copy)


def _groups_are_local(select: exp.Select, local_keys: frozenset[str]) -> bool:
    """Whether a plain GROUP BY lists a key column whose groups lie within one worker."""
    group = select.args.get("group")
    if group is None or any(group.args.get(k) for k in group.args if k != "expressions"):
        return False  # ROLLUP/CUBE/GROUPING SETS/ALL: totals span workers
    if any(_is_star(p) for p in select.expressions):
        return False
    aliases = _alias_map(select)
    known = _known_columns(select)
    for g in group.expressions:
        g = _unparen(g)
        n = _int_literal(g)
        if n is not None and 1 <= n <= len(select.expressions):  # GROUP BY 1: the first output
            g = _unparen(select.expressions[n - 1].unalias())
        if isinstance(g, exp.Column) and g.name.lower() in aliases and g.name.lower() not in known \
                and not g.table:  # GROUP BY an output alias: the expression it names
            g = _unparen(select.expressions[aliases[g.name.lower()]].unalias())
        if isinstance(g, exp.Column) and isinstance(g.this, exp.Identifier):
            name = f"{g.table}.{g.name}".lower() if g.table else g.name.lower()
            if name in local_keys:
                return True
    return False


def _local_groups(select: exp.Select) -> exp.Select:
    """``select`` with output aliases in GROUP BY and HAVING replaced by what they name (the
    worker query renames its outputs, so the aliases are gone there)."""
    out = select.copy()
    known = _known_columns(out)
    group = out.args["group"]
    group.set("expressions", [g if _int_literal(_unparen(g)) is not None else
                              _substitute_aliases(g, out, known) for g in group.expressions])
    if out.args.get("having") is not None:
        having = out.args["having"]
        having.set("this", _substitute_aliases(having.this, out, known))
    return out


def _known_columns(select: exp.Select) -> set[str]:
    """Lower-cased names the query uses as table columns (select list, WHERE, JOIN ON)."""
    parts = [p.unalias() for p in select.expressions]
    if select.args.get("where") is not None:
        parts.append(select.args["where"])
    for j in select.args.get("joins") or []:
        if j.args.get("on") is not None:
            parts.append(j.args["on"])
    names = set()
    for p in parts:
        for n in _outer_nodes(p):
            if isinstance(n, exp.Column) and isinstance(n.this, exp.Identifier):
                names.add(n.name.lower())
    return names


def _alias_map(select: exp.Select) -> dict[str, int]:
    out: dict[str, int] = {}
    for i, p in enumerate(select.expressions):
        if isinstance(p, exp.Alias):
            out.setdefault(p.alias.lower(), i)
    return out


def _substitute_aliases(e: exp.Expr, select: exp.Select, known: set[str]) -> exp.Expr:
    """Inside an expression DuckDB binds a bare name to a table column first, then to a
    select-list alias: replace the latter by the aliased expression."""
    aliases = _alias_map(select)

    def fn(n: exp.Expr):
        name = _bare_name(n) if isinstance(n, exp.Column) else None
        if name is not None and name in aliases and name not in known:
            return select.expressions[aliases[name]].unalias().copy()
        return None

    return _rewrite(e.copy(), fn)


def _order_terms(select: exp.Select) -> list[exp.Ordered]:
    order = select.args.get("order")
    return list(order.expressions) if order is not None else []


def _expand_order_all(terms: list[exp.Ordered], n: int) -> list[exp.Ordered]:
    out = []
    for t in terms:
        if isinstance(t.this, exp.Var) and t.this.name.upper() == "ALL":
            for i in range(n):
                o = t.copy()
                o.set("this", exp.Literal.number(i + 1))
                out.append(o)
        else:
            out.append(t)
    return out


# --------------------------------------------------------------------------- plain queries


def _depends_on_output(expr: exp.Expr, projections: list[exp.Expr]) -> bool:
    """Whether ``expr`` is a function of the select list's columns (deterministic, no
    aggregate or subquery, every column it reads selected or under a plain ``*``)."""
    if any(isinstance(p, exp.Star) and not p.args.get("except_") for p in projections):
        return True
    if any(isinstance(n, (exp.Query, exp.Rand, exp.Window)) or _is_agg_unit(n)
           for n in expr.walk()):
        return False
    return all(any(_same(c, p.unalias()) for p in projections)
               for c in _outer_nodes(expr) if isinstance(c, exp.Column))


def _plain(select: exp.Select, parts_table: str, namer: _Namer, limit: int | None,
           offset: int, copy: bool = True) -> SplitPlan:
    """``copy=False``: the worker query takes ``select``'s own clauses and expressions (the
    caller gives ``select`` away; copying them is most of the work here)."""
    projections = list(select.expressions)
    star_mode = any(_is_star(p) for p in projections)
    distinct = select.args.get("distinct") is not None
    known: set[str] | None = None  # computed when an ORDER BY term needs it (rarely)
    aliases = _alias_map(select)

    worker_items: list[exp.Expr] = []
    merge_items: list[exp.Expr] = []
    for i, p in enumerate(projections):
        if _is_star(p):
            worker_items.append(p.copy() if copy else p)
            continue
        name = namer.name(p)  # before the worker query takes the expression over
        e = p.unalias()
        # an expression with an alias arg of its own (a subquery) gets the alias set on it:
        # copy it even when given away, so that the select list read below stays as written
        worker_items.append(_alias(e.copy() if copy or "alias" in e.arg_types else e, f"_qe_c{i}"))
        merge_items.append(_alias(_col(f"_qe_c{i}"), name))

    terms = _order_terms(select)
    if not star_mode:
        terms = _expand_order_all(terms, len(projections))
    worker_order: list[exp.Ordered] = []
    merge_order: list[exp.Ordered] = []
    hidden: list[str] = []
    hidden_exprs: list[exp.Expr] = []
    for t in terms:
        key = _unparen(t.this)
        target: exp.Expr | None = None
        if _int_literal(key) is not None or (isinstance(key, exp.Var)
                                             and key.name.upper() == "ALL"):
            target = key.copy()  # ordinals (and ORDER BY ALL with a star) mean the same in both
        elif not star_mode:
            name = _bare_name(key)
            idx = aliases.get(name) if name is not None else None
            if idx is None:
                idx = next((i for i, p in enumerate(projections) if _same(key, p.unalias())),
                           None)
            if idx is not None:
                target = exp.Literal.number(idx + 1)
        if target is not None:
            w, m = target, target.copy()
        else:
            name = _bare_name(key)
            if name is not None and name in aliases:
                expr = projections[aliases[name]].unalias().copy()
            else:
                known = _known_columns(select) if known is None else known
                expr = _substitute_aliases(key, select, known)
            h = f"_qe_o{len(hidden)}"
            hidden.append(h)
            hidden_exprs.append(expr)
            worker_items.append(_alias(expr, h))
            w, m = _col(h), _col(h)
        wo, mo = t.copy(), t.copy()
        wo.set("this", w)
        mo.set("this", m)
        worker_order.append(wo)
        merge_order.append(mo)

    if distinct and not all(_depends_on_output(e, projections) for e in hidden_exprs):
        # DISTINCT over (output, hidden key) is DISTINCT over the output only when the key is
        # a function of the output columns
        raise _err("ORDER BY of a SELECT DISTINCT must use expressions of the select list "
                   "(add the ORDER BY expression to the SELECT list)", select.args["order"])

    # worker: same FROM/JOIN/WHERE; ORDER BY only when it serves a per-worker top-k
    worker = _clone_without(select, ("expressions", "order", "limit", "offset"), copy=copy)
    worker.set("expressions", worker_items)
    worker_limit = None
    if limit is not None:
        worker_limit = limit + offset
        if worker_order:
            worker.set("order", exp.Order(expressions=worker_order))
    _set_limits(worker, worker_limit, 0)

    # merge
    source_from: exp.Expr = _table(parts_table)
    merge_distinct = distinct
    if distinct and hidden:
        inner = exp.select("*").from_(_table(parts_table)).distinct()
        source_from = inner.subquery("_qe_d")
        merge_distinct = False
    if star_mode:
        # the star's columns keep their names; the other items are renamed in place
        star = exp.Star(except_=[_col(h) for h in hidden] or None,
                        rename=merge_items or None)
        merge = exp.Select(expressions=[star]).from_(source_from, copy=False)
    else:
        merge = exp.Select(expressions=merge_items).from_(source_from, copy=False)
    if merge_distinct:
        merge = merge.distinct(copy=False)
    if merge_order:
        merge.set("order", exp.Order(expressions=merge_order))
    _set_limits(merge, limit, offset)

    needs_all = not (limit is not None and not terms and not distinct)
    rename = None
    if not terms and not distinct and not hidden:
        if not star_mode:
            rename = {f"_qe_c{i}": namer_out for i, namer_out in
                      enumerate(m.alias for m in merge_items)}
        elif not merge_items and len(projections) == 1:
            rename = {}
    return SplitPlan(worker=worker, merge=merge, worker_limit=worker_limit,
                     merge_needs_all=needs_all, rename=rename, limit=limit, offset=offset)


# --------------------------------------------------------------------------- aggregates

_SAME_FUNCTION = (exp.Sum, exp.Min, exp.Max, exp.LogicalAnd, exp.LogicalOr, exp.AnyValue)
_VAR_KINDS = {
    exp.Stddev: ("samp", True), exp.StddevSamp: ("samp", True), exp.StddevPop: ("pop", True),
    exp.Variance: ("samp", False), exp.VariancePop: ("pop", False),
}
_ANON_SAME = {"fsum": "FSUM", "sumkahan": "FSUM", "kahan_sum": "FSUM", "product": "PRODUCT",
              "arbitrary": "ANY_VALUE", "bit_and": "BIT_AND", "bit_or": "BIT_OR",
              "bit_xor": "BIT_XOR", "sum_no_overflow": "SUM"}
_ANON_VAR = {"stddev": ("samp", True), "stddev_samp": ("samp", True),
             "stddev_pop": ("pop", True), "variance": ("samp", False),
             "var_samp": ("samp", False), "var_pop": ("pop", False)}


class _Aggregate:
    def __init__(self, select: exp.Select, parts_table: str, namer: _Namer,
                 limit: int | None, offset: int) -> None:
        self.select = select
        self.parts_table = parts_table
        self.namer = namer
        self.limit, self.offset = limit, offset
        self.projections = list(select.expressions)
        self.known = _known_columns(select)
        self.aliases = _alias_map(select)
        self.worker_items: list[exp.Expr] = []
        self.partials: dict[str, str] = {}          # worker expression SQL -> alias
        self.keys: list[exp.Expr] = []              # user group keys (worker expressions)
        self.dkeys: dict[str, tuple[str, exp.Expr]] = {}  # DISTINCT arguments -> (alias, expr)
        self.means: dict[tuple[str, str], str] = {}  # (n, mean) partials -> window mean alias
        self.proj_merge: dict[int, exp.Expr] = {}

    # ---- worker columns
    def partial(self, e: exp.Expr) -> exp.Column:
        sql = e.sql(DIALECT)
        if sql not in self.partials:
            alias = f"_qe_a{len(self.partials)}"
            self.partials[sql] = alias
            self.worker_items.append(exp.alias_(e, alias, quoted=True))
        return _col(self.partials[sql])

    def distinct_key(self, e: exp.Expr) -> exp.Column:
        for j, k in enumerate(self.keys):
            if _same(e, k):
                return _col(f"_qe_g{j}")
        sql = _canon(e).sql(DIALECT)
        if sql not in self.dkeys:
            self.dkeys[sql] = (f"_qe_d{len(self.dkeys)}", e)
        return _col(self.dkeys[sql][0])

    def window_mean(self, n: exp.Column, mean: exp.Column) -> exp.Column:
        key = (n.name, mean.name)
        if key not in self.means:
            self.means[key] = f"_qe_m{len(self.means)}"
        return _col(self.means[key])

    # ---- group keys
    def resolve_group(self) -> None:
        group = self.select.args.get("group")
        if group is None:
            return
        for key in ("rollup", "cube", "grouping_sets"):
            if group.args.get(key):
                raise _err("GROUPING SETS/ROLLUP/CUBE cannot be split across chunks yet; run "
                           "one GROUP BY per grouping set", group)
        for g in group.expressions:
            if isinstance(g, (exp.Rollup, exp.Cube, exp.GroupingSets)):
                raise _err(f"{g.key.upper().replace('GROUPINGSETS', 'GROUPING SETS')} cannot "
                           "be split across chunks yet; run one GROUP BY per grouping set", g)
        if group.args.get("all"):
            for p in self.projections:
                if _is_star(p):
                    continue
                if not _has_agg(p):
                    self.add_key(p.unalias())
        for g in group.expressions:
            k = _int_literal(g)
            if k is not None:
                if not 1 <= k <= len(self.projections):
                    raise _err(f"GROUP BY position {k} is not in the select list", g)
                g = self.projections[k - 1].unalias()
                if _has_agg(g):
                    raise _err(f"GROUP BY position {k} refers to an aggregate", g)
            else:
                name = _bare_name(g)
                if name is not None and name in self.aliases and name not in self.known:
                    g = self.projections[self.aliases[name]].unalias()
            self.add_key(g)

    def add_key(self, g: exp.Expr) -> None:
        if _has_agg(g):
            raise _err("aggregate functions are not allowed in GROUP BY", g)
        if not any(_same(g, k) for k in self.keys):
            self.keys.append(g.copy())

    # ---- expressions -> merge
    def to_merge(self, e: exp.Expr, *, aliases: bool) -> exp.Expr:
        key_types = {type(_unparen(k)) for k in self.keys}

        def fn(n: exp.Expr):
            if type(_unparen(n)) in key_types:
                for j, k in enumerate(self.keys):
                    if _same(n, k):
                        return _col(f"_qe_g{j}")
            if _is_agg_unit(n):
                return self.decompose(n)
            if isinstance(n, exp.Query):
                raise _err("subqueries cannot be used in the select list, HAVING or ORDER BY of "
                           "an aggregate query split across chunks", n)
            if isinstance(n, exp.Column):
                name = _bare_name(n)
                if aliases and name is not None and name in self.aliases:
                    idx = self.aliases[name]
                    if idx in self.proj_merge:
                        return self.proj_merge[idx].copy()
                if isinstance(n.this, exp.Star):
                    raise _err("SELECT * cannot be combined with GROUP BY or aggregates; list "
                               "the columns", n)
                raise _err(f"column {n.sql(DIALECT)} must appear in the GROUP BY clause or be "
                           "used in an aggregate function", n)
            if isinstance(n, exp.Star):
                raise _err("SELECT * cannot be combined with GROUP BY or aggregates; list the "
                           "columns", n)
            return None

        if isinstance(_unparen(e), exp.Query):
            return fn(_unparen(e))
        return _rewrite(e.copy(), fn)

    def decompose(self, unit: exp.Expr) -> exp.Expr:
        node, cond, wrappers = unit, None, []
        while isinstance(node, _WRAPPERS):
            if isinstance(node, exp.WithinGroup):
                raise self.refuse(node.this, node)
            if isinstance(node, exp.Filter):
                cond = node.expression.this
            else:
                wrappers.append(type(node))
            node = node.this
        core = node
        for arg in core.iter_expressions():
            if any(_is_agg_unit(n) or isinstance(n, exp.Window) for n in _outer_nodes(arg)):
                raise _err("aggregate function calls cannot be nested", core)
            if any(isinstance(n, exp.Order) for n in _outer_nodes(arg)):
                raise _err(f"{_fname(core).upper()}() with ORDER BY cannot be computed across "
                           f"chunks: its result depends on the order of rows; {_SUGGEST_LOCAL}",
                           core)
        name = _fname(core)

        def filtered(agg: exp.Expr) -> exp.Expr:
            for w in reversed(wrappers):
                agg = w(this=agg)
            if cond is not None:
                return exp.Filter(this=agg, expression=exp.Where(this=cond.copy()))
            return agg

        def arg_of() -> exp.Expr:
            args = [a for a in (core.expressions if isinstance(core, exp.Anonymous)
                                else [core.this]) if a is not None]
            if len(args) != 1:
                raise _err(f"{name.upper()}() takes one argument here", core)
            return args[0]

        dist = core.this if isinstance(core.this, exp.Distinct) else None
        if dist is not None:
            if isinstance(core, (exp.Min, exp.Max)):
                core = core.copy()
                core.set("this", dist.expressions[0].copy())
                dist = None
            elif not isinstance(core, (exp.Count, exp.Sum, exp.Avg, *_VAR_KINDS)):
                raise self.refuse(core, unit)
        if dist is not None:
            if len(dist.expressions) != 1:
                raise _err(f"{name.upper()}(DISTINCT ...) takes one argument", core)
            arg = dist.expressions[0].copy()
            if cond is not None:
                arg = exp.Case(ifs=[exp.If(this=cond.copy(), true=arg)])
            merged = core.copy()
            merged.set("this", exp.Distinct(expressions=[self.distinct_key(arg)]))
            return merged

        # COUNT(*), COUNT(x), COUNT_IF(c)
        if isinstance(core, (exp.Count, exp.CountIf)) or name in ("count_star", "countif"):
            p = self.partial(filtered(core.copy()))
            typ = "BIGINT" if isinstance(core, exp.Count) or name == "count_star" else "HUGEINT"
            return _x(f"CAST(COALESCE(SUM(p), 0) AS {typ})", p=p.name)
        if isinstance(core, _SAME_FUNCTION) or name in _ANON_SAME or isinstance(
                core, (exp.BitwiseAndAgg, exp.BitwiseOrAgg, exp.BitwiseXorAgg)):
            p = self.partial(filtered(core.copy()))
            if isinstance(core, exp.Anonymous):
                return exp.Anonymous(this=_ANON_SAME[name], expressions=[p])
            merged = core.copy()
            for k in list(merged.args):
                if isinstance(merged.args[k], (exp.Expr, list)):
                    merged.set(k, None)
            merged.set("this", p)
            return merged
        if isinstance(core, exp.Avg) or name in ("mean", "favg"):
            x = arg_of()
            s = self.partial(filtered(exp.Sum(this=x.copy())))
            c = self.partial(filtered(exp.Count(this=x.copy())))
            return _x("CAST(SUM(s) AS DOUBLE) / NULLIF(SUM(c), 0)", s=s.name, c=c.name)
        kind = _VAR_KINDS.get(type(core)) or (_ANON_VAR.get(name) if isinstance(
            core, exp.Anonymous) else None)
        if kind is not None:
            x = arg_of()
            n = self.partial(filtered(exp.Count(this=x.copy())))
            mean = self.partial(filtered(exp.Avg(this=x.copy())))
            m2 = self.partial(exp.Mul(this=filtered(exp.VariancePop(this=x.copy())),
                                      expression=filtered(exp.Count(this=x.copy()))))
            gm = self.window_mean(n, mean)
            # Chan et al.: M2 = sum(M2_i) + sum(n_i * (mean_i - mean)^2), mean = gm (window)
            m2_total = "(SUM(q) + SUM(n * (m - g) * (m - g)))"
            if kind[0] == "pop":
                var = f"CASE WHEN SUM(n) > 0 THEN {m2_total} / SUM(n) END"
            else:
                var = f"CASE WHEN SUM(n) > 1 THEN {m2_total} / (SUM(n) - 1) END"
            return _x(f"SQRT({var})" if kind[1] else var,
                      n=n.name, m=mean.name, q=m2.name, g=gm.name)
        raise self.refuse(core, unit)

    def refuse(self, core: exp.Expr, where: exp.Expr) -> QueryError:
        name = _fname(core)
        reason = _REFUSED.get(name, "it has no exact merge of per-chunk partial results")
        return _err(f"aggregate {name.upper()}() cannot be computed across chunks: {reason}; "
                    f"{_SUGGEST_LOCAL}", where)

    # ---- the plan
    def plan(self) -> SplitPlan:
        sel = self.select
        for p in self.projections:
            if _is_star(p):
                raise _err("SELECT * cannot be combined with GROUP BY or aggregates; list the "
                           "columns", p)
        self.resolve_group()
        key_items = [exp.alias_(k.copy(), f"_qe_g{j}", quoted=True)
                     for j, k in enumerate(self.keys)]

        merge_items = []
        for i, p in enumerate(self.projections):
            m = self.to_merge(p.unalias(), aliases=False)
            self.proj_merge[i] = m
            merge_items.append(exp.alias_(m, self.namer.name(p), quoted=True))

        having = sel.args.get("having")
        merge_having = self.to_merge(having.this, aliases=True) if having is not None else None

        merge_order = []
        for t in _expand_order_all(_order_terms(sel), len(self.projections)):
            key = _unparen(t.this)
            target: exp.Expr | None = None
            k = _int_literal(key)
            if k is not None:
                target = exp.Literal.number(k)
            else:
                name = _bare_name(key)
                if name is not None and name in self.aliases:
                    target = exp.Literal.number(self.aliases[name] + 1)
                else:
                    idx = next((i for i, p in enumerate(self.projections)
                                if _same(key, p.unalias())), None)
                    target = exp.Literal.number(idx + 1) if idx is not None else \
                        self.to_merge(key, aliases=True)
            o = t.copy()
            o.set("this", target)
            merge_order.append(o)

        # worker: keys, distinct keys, partials; no HAVING/ORDER/LIMIT/DISTINCT
        dkey_items = [exp.alias_(e.copy(), alias, quoted=True) for alias, e in self.dkeys.values()]
        worker = _clone_without(sel, ("expressions", "group", "having", "order", "distinct",
                                      "qualify", "limit", "offset"))
        worker.set("expressions", key_items + dkey_items + self.worker_items)
        for arg in ("having", "order", "distinct", "qualify"):
            worker.set(arg, None)
        _set_limits(worker, None, 0)
        # constant keys by their alias: GROUP BY 2 would be read as a position
        group_exprs = [_col(alias) if isinstance(_unparen(e), (exp.Literal, exp.Neg))
                       else e.copy() for alias, e in
                       [(f"_qe_g{j}", k) for j, k in enumerate(self.keys)]
                       + list(self.dkeys.values())]
        worker.set("group", exp.Group(expressions=group_exprs) if group_exprs else None)
        if not worker.expressions:  # e.g. SELECT 1 FROM t GROUP BY ALL with nothing to group
            worker.set("expressions", [exp.alias_(exp.Literal.number(1), "_qe_one", quoted=True)])

        # merge
        source_from: exp.Expr = exp.to_table(self.parts_table)
        if self.means:
            part = ", ".join(f'"_qe_g{j}"' for j in range(len(self.keys)))
            over = f"OVER (PARTITION BY {part})" if part else "OVER ()"
            cols = ", ".join(
                f'SUM("{n}" * "{m}") {over} / NULLIF(SUM("{n}") {over}, 0) AS "{alias}"'
                for (n, m), alias in self.means.items())
            table = exp.to_table(self.parts_table).sql(DIALECT)
            source_from = _x(f"SELECT *, {cols} FROM {table}").subquery("_qe_w")
        merge = exp.select(*merge_items).from_(source_from)
        if self.keys:
            merge.set("group", exp.Group(expressions=[_col(f"_qe_g{j}")
                                                      for j in range(len(self.keys))]))
        if merge_having is not None:
            merge.set("having", exp.Having(this=merge_having))
        if sel.args.get("distinct") is not None:
            merge = merge.distinct()
        if merge_order:
            merge.set("order", exp.Order(expressions=merge_order))
        _set_limits(merge, self.limit, self.offset)
        return SplitPlan(worker=worker, merge=merge, worker_limit=None, merge_needs_all=True)
