"""From a query to a plan: chunks to visit, the SQL each worker runs, and the merge SQL.

Planning is pure (no I/O): the rules in ``czar/planner`` each take and return a sqlglot tree and
are composed here in order — resolve the table, spatial restriction, director-id restriction,
statistics shortcut, star expansion, aggregate split — then the trees are written as DuckDB SQL.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from sqlglot import exp

from czar.dialects import parse, to_duckdb
from czar.metadata import CHUNK_COLUMNS, Metadata, TableInfo
from czar.planner.aggregate import split
from czar.planner.index import IdRestriction, id_restriction
from czar.planner.spatial import spatial_restriction
from qengine.errors import QueryError

__all__ = ["Plan", "plan_query", "PARTS"]

PARTS = "__parts"
_MARKER = "__qengine_table__"


@dataclass
class Plan:
    sql: str
    lang: str
    table: TableInfo | None
    chunks: list[int] | None              # chunks to visit; None: every chunk of the table
    worker_sql: str                       # DuckDB SQL with {{db.table}} placeholders
    merge_sql: str                        # DuckDB SQL over __parts
    worker_limit: int | None = None
    merge_needs_all: bool = True
    regions: list[str] = field(default_factory=list)
    id_restriction: IdRestriction | None = None
    index_table: TableInfo | None = None    # the director whose index resolves id_restriction
    count_from_stats: int | None = None
    count_name: str = "count_star()"      # DuckDB's name for an unaliased COUNT(*)
    column_meta: dict[str, dict] = field(default_factory=dict)

    def placeholder(self) -> str:
        return "{{" + f"{self.table.database}.{self.table.name}" + "}}" if self.table else ""


def _refuse_unsupported(tree: exp.Select) -> None:
    if tree.args.get("joins"):
        raise QueryError("joins are not supported yet: query one table at a time")
    if tree.args.get("with"):
        raise QueryError("WITH (common table expressions) is not supported yet")
    for node in tree.find_all(exp.Subquery, exp.Exists):
        raise QueryError("subqueries are not supported yet", token=node.sql()[:40])
    for node in tree.find_all(exp.In):
        if node.args.get("query"):
            raise QueryError("IN (SELECT ...) is not supported yet")


def _check_columns(tree: exp.Select, info: TableInfo, qualifiers: set[str]) -> None:
    names = {c.lower() for c in info.column_names()} | {c.lower() for c in CHUNK_COLUMNS}
    aliases = {e.alias.lower() for e in tree.expressions if isinstance(e, exp.Alias)}
    for col in tree.find_all(exp.Column):
        if isinstance(col.this, exp.Star):
            continue
        if col.table and col.table.lower() not in qualifiers:
            raise QueryError(f"unknown table or alias {col.table!r} in {col.sql()}", token=col.table)
        low = col.name.lower()
        if low in names or (not col.table and low in aliases):
            continue
        hint = difflib.get_close_matches(col.name, info.column_names(), n=3)
        raise QueryError(
            f"unknown column {col.name!r} in table {info.database}.{info.name}"
            + (f" (did you mean {', '.join(hint)}?)" if hint else ""), token=col.name)


def _is_plain_count(tree: exp.Select) -> bool:
    if len(tree.expressions) != 1 or tree.args.get("where") or tree.args.get("group") \
            or tree.args.get("having") or tree.args.get("distinct") or tree.args.get("offset"):
        return False
    e = tree.expressions[0]
    e = e.this if isinstance(e, exp.Alias) else e
    return isinstance(e, exp.Count) and isinstance(e.this, exp.Star)


def _expand_star(tree: exp.Select, info: TableInfo) -> None:
    """``*`` is the catalogue's columns, without the internal chunkId/subChunkId."""
    if not info.partitioned:
        return
    for star in list(tree.find_all(exp.Star)):
        parent = star.parent
        if isinstance(parent, exp.Count):
            continue
        except_ = [exp.column(c) for c in CHUNK_COLUMNS]
        if isinstance(parent, exp.Column):  # alias.*
            parent.set("this", exp.Star(except_=except_))
        elif isinstance(parent, exp.Select):
            star.set("except_", except_)


def plan_query(sql: str, metadata: Metadata, *, lang: str = "adql", database: str | None = None) -> Plan:
    tree = parse(sql, lang)
    original = tree.copy()
    if not isinstance(tree, exp.Select):
        raise QueryError("set operations (UNION/INTERSECT/EXCEPT) and WITH are not supported yet")
    _refuse_unsupported(tree)
    from_ = tree.args.get("from") or tree.args.get("from_")
    if from_ is None:
        raise QueryError("a query needs a FROM clause naming a catalogue table")
    t = from_.this
    if not isinstance(t, exp.Table):
        raise QueryError("only a table may appear in FROM (derived tables are not supported yet)")
    info = metadata.resolve(t.db or None, t.name, database)
    alias = t.alias or info.name
    qualifiers = {alias.lower(), info.name.lower(), t.name.lower()}
    _check_columns(tree, info, qualifiers)

    regions: list = []
    chunks: list[int] | None = None
    idr = None
    index_table = None
    if info.role == "director":
        sr = spatial_restriction(tree, info.manifest.ra_column, info.manifest.dec_column, qualifiers,
                                 alias=t.alias or None)
        tree = sr.select
        if sr.regions:
            chunker = info.chunker()
            sets = [set(r.chunk_ids(chunker).tolist()) for r in sr.regions]
            chunks = sorted(info.chunk_set().intersection(*sets))
            regions = [repr(r) for r in sr.regions]
        idr = id_restriction(tree, info.manifest.id_column, qualifiers)
        index_table = info
    elif info.role == "child":
        # a child lives in its director's chunk: its foreign key is looked up in the director index
        idr = id_restriction(tree, info.manifest.foreign_key, qualifiers)
        index_table = metadata.resolve(info.database, info.manifest.director)
    if info.role != "director" and any(f.name.lower().startswith("qserv_areaspec") for f in tree.find_all(exp.Anonymous)):
        raise QueryError(f"qserv_areaspec_* needs a director table with positions; "
                         f"{info.database}.{info.name} is a {info.role} table")
    count = info.rows if _is_plain_count(tree) else None
    count_name = tree.expressions[0].alias if count is not None and tree.expressions[0].alias else "count_star()"

    _expand_star(tree, info)
    marker = exp.Table(this=exp.to_identifier(_MARKER), alias=exp.TableAlias(this=exp.to_identifier(alias)))
    t_new = tree.args.get("from") or tree.args.get("from_")
    t_new.this.replace(marker)
    # Column qualifiers naming the database (db.table.col) become the alias.
    for col in tree.find_all(exp.Column):
        if col.args.get("db"):
            col.set("db", None)
        if col.table and col.table.lower() in qualifiers:
            col.set("table", exp.to_identifier(alias))

    sp = split(tree, PARTS)
    placeholder = "{{" + f"{info.database}.{info.name}" + "}}"
    worker_sql = to_duckdb(sp.worker).replace(_MARKER, placeholder).replace(f'"{placeholder}"', placeholder)
    merge_sql = to_duckdb(sp.merge)
    meta = {}
    for e in original.expressions:
        inner = e.this if isinstance(e, exp.Alias) else e
        if isinstance(inner, exp.Star) or (isinstance(inner, exp.Column) and isinstance(inner.this, exp.Star)):
            meta.update({c["name"]: c for c in info.columns})
        elif isinstance(inner, exp.Column):
            c = info.column(inner.name)
            if c is not None:
                meta[e.alias_or_name] = c
    return Plan(sql=sql, lang=lang, table=info, chunks=chunks, worker_sql=worker_sql, merge_sql=merge_sql,
                worker_limit=sp.worker_limit, merge_needs_all=sp.merge_needs_all, regions=regions,
                id_restriction=idr, index_table=index_table, count_from_stats=count, count_name=count_name, column_meta=meta)
