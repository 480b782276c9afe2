"""Queries answered in several steps: set operations, WITH, derived tables and subqueries.

The per-worker planner (:mod:`czar.plan`) runs one SELECT over catalogue tables. Anything
else is decomposed here, innermost first (a two-step plan in Qserv's words):

* a derived table (``FROM (SELECT ...) AS t``) or a common table expression is answered
  first, and the outer query reads its rows as an uploaded table (shipped to the workers
  when the outer query also reads catalogue tables: a replicated join);
* ``x IN (SELECT ...)`` becomes ``x IN (<its values>)`` (so a list of object ids still
  narrows the query to their chunks through the director index), a scalar subquery its
  value, an uncorrelated ``EXISTS`` TRUE or FALSE;
* ``UNION``/``INTERSECT``/``EXCEPT`` combine their answered sides in the czar's DuckDB.

Subqueries that use the outer query's columns (correlated) are refused with a clear message.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import pyarrow as pa
from sqlglot import exp

from czar.metadata import UPLOAD_DB
from qengine.errors import QueryError

__all__ = ["needs_steps", "Steps", "MAX_IN_VALUES"]

MAX_IN_VALUES = 100_000   # rows an IN (SELECT ...) may return to become a literal list
SUB_PREFIX = "__qe_step"

# (tree, uploads) -> answer of one plain SELECT through the cluster
RunSelect = Callable[[exp.Select, dict[str, pa.Table]], pa.Table]
# (DuckDB SQL, tables by name) -> answer computed in the czar
RunLocal = Callable[[str, dict[str, pa.Table]], pa.Table]
# tree -> DuckDB SQL
Translate = Callable[[exp.Expression], str]


def needs_steps(tree: exp.Expression) -> bool:
    """Whether ``tree`` is more than one plain SELECT over tables."""
    if not isinstance(tree, exp.Select) or tree.args.get("with_"):
        return True
    return any(isinstance(n, (exp.Subquery, exp.Exists)) or (isinstance(n, exp.In) and n.args.get("query") is not None)
               for n in tree.walk())  # one walk: every query goes through here


@dataclass
class Steps:
    """Answers one composite query; ``uploads`` are the user's own uploaded tables."""

    run_select: RunSelect
    run_local: RunLocal
    translate: Translate
    uploads: dict[str, pa.Table] = field(default_factory=dict)
    _names: itertools.count = field(default_factory=itertools.count)

    def answer(self, tree: exp.Expression, ctes: dict[str, str] | None = None) -> pa.Table:
        ctes = dict(ctes or {})
        tree = tree.copy()
        with_ = tree.args.get("with_")
        if with_ is not None:
            if with_.args.get("recursive"):
                raise QueryError("WITH RECURSIVE is not supported")
            for cte in with_.expressions:
                ctes[cte.alias_or_name.lower()] = self._keep(self.answer(cte.this, ctes))
            tree.set("with_", None)
        if isinstance(tree, exp.SetOperation):
            return self._set_operation(tree, ctes)
        if isinstance(tree, exp.Subquery):
            return self.answer(tree.this, ctes)
        if not isinstance(tree, exp.Select):
            raise QueryError(f"{type(tree).__name__.upper()} is not supported here: only SELECT queries")
        return self._select(tree, ctes)

    # ------------------------------------------------------------------ pieces
    def _keep(self, table: pa.Table) -> str:
        name = f"{SUB_PREFIX}{next(self._names)}"
        self.uploads[name] = table
        return name

    def _sub_answer(self, node: exp.Expression, ctes: dict[str, str]) -> pa.Table:
        try:
            return self.answer(node, ctes)
        except QueryError as err:
            msg = str(err)
            if msg.startswith(("unknown table or alias", "unknown column")):
                raise QueryError(f"{msg} (a subquery may not use the outer query's columns: correlated "
                                 "subqueries are not supported; use a JOIN)", token=err.token) from None
            raise

    def _select(self, tree: exp.Select, ctes: dict[str, str]) -> pa.Table:
        # FROM/JOIN: CTE names and derived tables become uploaded tables
        from_ = tree.args.get("from") or tree.args.get("from_")
        sources = ([from_.this] if from_ is not None else []) + [j.this for j in tree.args.get("joins") or []]
        for src in sources:
            if isinstance(src, exp.Table) and not src.db and src.name.lower() in ctes:
                src.replace(_upload_table(ctes[src.name.lower()], src.alias or src.name))
            elif isinstance(src, exp.Subquery):
                if not src.alias:
                    raise QueryError("a derived table needs an alias: FROM (SELECT ...) AS name")
                name = self._keep(self._sub_answer(src.this, ctes))
                src.replace(_upload_table(name, src.alias))
            elif not isinstance(src, exp.Table):
                raise QueryError(f"{src.sql()[:60]} is not supported in FROM")
        # subqueries in expressions (each answers its own nested ones)
        for node in _outer_subqueries(tree):
            if isinstance(node, exp.In):
                node.replace(self._in_list(node, ctes))
            elif isinstance(node, exp.Exists):
                rows = self._sub_answer(node.this, ctes).num_rows
                node.replace(exp.true() if rows else exp.false())
            else:
                node.replace(self._scalar(node, ctes))
        own = list(tree.find_all(exp.Table))
        used = {t.name for t in own if (t.db or "").upper() == UPLOAD_DB}
        if own and all((t.db or "").upper() == UPLOAD_DB and t.name.startswith(SUB_PREFIX) for t in own):
            return self._local_select(tree)
        return self.run_select(tree, {n: t for n, t in self.uploads.items() if n in used})

    def _in_list(self, node: exp.In, ctes: dict[str, str]) -> exp.Expression:
        query = node.args["query"]
        t = self._sub_answer(query.this if isinstance(query, exp.Subquery) else query, ctes)
        if t.num_columns != 1:
            raise QueryError(f"the subquery of IN must return one column, not {t.num_columns}")
        if t.num_rows > MAX_IN_VALUES:
            raise QueryError(f"the subquery of IN returned {t.num_rows:,} rows; at most {MAX_IN_VALUES:,} "
                             "are supported: write the query as a JOIN")
        values = sorted(set(t.column(0).to_pylist()), key=lambda v: (v is None, repr(type(v)), v if v is not None else 0))
        if not values:
            return exp.false()
        return exp.In(this=node.this, expressions=[_literal(v) for v in values])

    def _scalar(self, node: exp.Subquery, ctes: dict[str, str]) -> exp.Expression:
        t = self._sub_answer(node.this, ctes)
        if t.num_columns != 1:
            raise QueryError(f"a scalar subquery must return one column, not {t.num_columns}")
        if t.num_rows > 1:
            raise QueryError(f"a scalar subquery returned {t.num_rows:,} rows; it must return at most one")
        return _literal(t.column(0)[0].as_py() if t.num_rows else None)

    def _set_operation(self, tree: exp.SetOperation, ctes: dict[str, str]) -> pa.Table:
        left = self.answer(tree.left, ctes)
        right = self.answer(tree.right, ctes)
        if left.num_columns != right.num_columns:
            raise QueryError(f"the two sides of {type(tree).__name__.upper()} have {left.num_columns} and "
                             f"{right.num_columns} columns")
        combined = tree.copy()
        combined.set("this", exp.select("*").from_("__qe_left"))
        combined.set("expression", exp.select("*").from_("__qe_right"))
        out = self.run_local(self.translate(combined), {"__qe_left": left, "__qe_right": right})
        return _carry_metadata(out, [left, right])

    def _local_select(self, tree: exp.Select) -> pa.Table:
        tables = {}
        for t in list(tree.find_all(exp.Table)):
            tables[t.name] = self.uploads[t.name]
            t.set("db", None)
        out = self.run_local(self.translate(tree), tables)
        return _carry_metadata(out, list(tables.values()))


def _is_subquery(node: exp.Expression) -> bool:
    return isinstance(node, (exp.Exists, exp.Subquery)) or \
        (isinstance(node, exp.In) and node.args.get("query") is not None)


def _outer_subqueries(tree: exp.Expression) -> list[exp.Expression]:
    """Subquery nodes of ``tree`` not nested in another subquery, deepest last."""
    out: list[exp.Expression] = []

    def visit(node: exp.Expression) -> None:
        for child in node.iter_expressions():
            if _is_subquery(child):
                if isinstance(child, exp.In):
                    visit(child.this)
                out.append(child)
            else:
                visit(child)

    visit(tree)
    return out


def _upload_table(name: str, alias: str) -> exp.Table:
    return exp.Table(this=exp.to_identifier(name), db=exp.to_identifier(UPLOAD_DB),
                     alias=exp.TableAlias(this=exp.to_identifier(alias)))


def _literal(v) -> exp.Expression:
    if v is None:
        return exp.null()
    if isinstance(v, bool):
        return exp.true() if v else exp.false()
    if isinstance(v, (int, float)):
        if isinstance(v, float):  # typed: an untyped 0.1 would be a DECIMAL, and NaN has no literal
            return exp.cast(exp.Literal.string(repr(v)) if v != v or v in (float("inf"), float("-inf"))
                            else exp.Literal.number(repr(v)), "DOUBLE")
        return exp.Literal.number(str(v))
    return exp.Literal.string(str(v))


def _carry_metadata(out: pa.Table, inputs: list[pa.Table]) -> pa.Table:
    """Keep unit/UCD/description of columns passed through unchanged (by name)."""
    known = {}
    for t in inputs:
        for f in t.schema:
            if f.metadata and f.name not in known:
                known[f.name] = f.metadata
    if not known:
        return out
    fields = [f.with_metadata(known[f.name]) if f.name in known and not f.metadata else f for f in out.schema]
    return out.cast(pa.schema(fields, metadata=out.schema.metadata))
