"""From a query to a plan: chunks to visit, the SQL each worker runs, and the merge SQL.

Planning is pure (no I/O): the rules in ``czar/planner`` each take and return a sqlglot tree and
are composed here in order — resolve the table, match-table joins (czar/planner/match.py) or
near-neighbour self-join detection, spatial restriction, director-id restriction, statistics
shortcut, star expansion, aggregate split — then the trees are written as DuckDB SQL (a
near-neighbour join's two sides as zone/bin cell subqueries, a match join's far director as its
chunk's rows and overlap).
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from sqlglot import exp

from czar.dialects import parse, to_duckdb
from czar.metadata import CHUNK_COLUMNS, Metadata, TableInfo
from czar.planner.aggregate import split
from czar.planner import match, neighbour
from czar.planner.index import IdRestriction, id_restriction
from czar.planner.spatial import spatial_restriction
from qengine.errors import QueryError

__all__ = ["Plan", "plan_query", "PARTS"]

PARTS = "__parts"


@dataclass
class Plan:
    sql: str
    lang: str
    table: TableInfo | None
    chunks: list[int] | None              # chunks to visit; None: every chunk of the table
    worker_sql: str                       # DuckDB SQL with {{db.table}} placeholders
    # the merge query over __parts: DuckDB SQL, or its tree until merge_sql is first read (a
    # plain row query's merge is usually skipped: see merge_rename)
    merge: "str | exp.Select" = field(repr=False)
    worker_limit: int | None = None
    merge_needs_all: bool = True
    regions: list[str] = field(default_factory=list)
    id_restriction: IdRestriction | None = None
    index_table: TableInfo | None = None    # the director whose index resolves id_restriction
    count_from_stats: int | None = None
    count_name: str = "count_star()"      # DuckDB's name for an unaliased COUNT(*)
    column_meta: dict[str, dict] = field(default_factory=dict)
    tables: list[TableInfo] = field(default_factory=list)   # partitioned tables read (co-located)
    table_placeholders: dict[str, TableInfo] = field(default_factory=dict)  # "{{db.T|cols}}" -> T
    merge_rename: dict[str, str] | None = None  # the merge only renames (and slices): see SplitPlan
    merge_limit: int | None = None
    merge_offset: int = 0
    # Directors also read from their overlap files (a match join's far director, a near-neighbour
    # join's o2): a worker must hold those files for the chunks it is given, too.
    overlap_tables: list[TableInfo] = field(default_factory=list)

    @property
    def merge_sql(self) -> str:
        """DuckDB SQL over __parts (translated on first use)."""
        if not isinstance(self.merge, str):
            self.merge = to_duckdb(self.merge, copy=False, normalized=True)  # the plan's own tree
        return self.merge

    def placeholder(self) -> str:
        return "{{" + f"{self.table.database}.{self.table.name}" + "}}" if self.table else ""


def _refuse_unsupported(tree: exp.Select, nodes: list[exp.Expression] | None = None) -> None:
    """``nodes``: ``list(tree.walk())``, when the caller has it (one walk for several rules)."""
    if tree.args.get("with"):
        raise QueryError("WITH (common table expressions) is not supported yet")
    in_query = False
    for node in tree.walk() if nodes is None else nodes:
        if isinstance(node, (exp.Subquery, exp.Exists)):
            raise QueryError("subqueries are not supported yet", token=node.sql()[:40])
        in_query = in_query or (isinstance(node, exp.In) and bool(node.args.get("query")))
    if in_query:  # after every subquery: the message for those comes first
        raise QueryError("IN (SELECT ...) is not supported yet")


@dataclass
class _Ref:
    """One table occurrence in FROM/JOIN."""

    node: exp.Table
    info: TableInfo
    alias: str
    qualifiers: set[str]
    _columns: dict[str, dict] | None = field(default=None, repr=False)

    def column(self, name: str) -> dict | None:
        """``info.column(name)`` from a dict built once per query (the rules look columns up
        dozens of times per query; TableInfo.column scans the column list)."""
        if self._columns is None:
            cols: dict[str, dict] = {}
            for c in self.info.columns:
                cols.setdefault(c["name"].lower(), c)  # the first of a name, as TableInfo.column
            self._columns = cols
        return self._columns.get(name.lower())

    @property
    def key(self) -> str | None:
        """The column holding the director id: the id of a director, the foreign key of a child."""
        m = self.info.manifest
        return m.id_column if m.role == "director" else m.foreign_key if m.role == "child" else None

    @property
    def family(self) -> str | None:
        m = self.info.manifest
        return (f"{m.database}.{m.table if m.role == 'director' else m.director}".lower()
                if m.role in ("director", "child") else None)


def _table_refs(tree: exp.Select, metadata: Metadata, database: str | None) -> list[_Ref]:
    from_ = tree.args.get("from") or tree.args.get("from_")
    if from_ is None:
        raise QueryError("a query needs a FROM clause naming a catalogue table")
    nodes = [from_.this] + [j.this for j in tree.args.get("joins") or []]
    refs: list[_Ref] = []
    for t in nodes:
        if not isinstance(t, exp.Table):
            raise QueryError("only tables may appear in FROM/JOIN (derived tables are not supported yet)")
        info = metadata.resolve(t.db or None, t.name, database)
        alias = t.alias or info.name
        if any(r.alias.lower() == alias.lower() for r in refs):
            if any(r.info is info for r in refs) and info.role == "director":
                raise QueryError(f"{info.database}.{info.name} appears twice: give each occurrence its own alias "
                                 "(e.g. FROM Object AS o1, Object AS o2 for a near-neighbour join)")
            raise QueryError(f"table alias {alias!r} is used twice: give each table its own alias")
        refs.append(_Ref(t, info, alias, {alias.lower()} | ({info.name.lower(), t.name.lower()} if not t.alias else set())))
    return refs


def _ref_of(col: exp.Column, refs: list[_Ref]) -> _Ref | None:
    """The table a column belongs to (None: unknown or ambiguous)."""
    return _ref_named(col.table, col.name, refs)


def _ref_named(table: str, name: str, refs: list[_Ref]) -> _Ref | None:
    """:func:`_ref_of` a column ``table.name`` (``table`` "" when unqualified)."""
    if table:
        return next((r for r in refs if table.lower() in r.qualifiers), None)
    owners = [r for r in refs if r.column(name) is not None or name in CHUNK_COLUMNS]
    return owners[0] if len(owners) == 1 else None


def _check_co_location(tree: exp.Select, refs: list[_Ref]) -> None:
    """Partitioned tables may be joined only where rows meet in one chunk: on the director key."""
    parts = [r for r in refs if r.info.partitioned]
    if len(parts) < 2:
        return
    families = {r.family for r in parts}
    if len(families) > 1:
        raise QueryError("joined partitioned tables must share one director (e.g. Object with its Source and "
                         f"ForcedSource); got {', '.join(sorted(f for f in families if f))}")
    parent = {id(r): id(r) for r in parts}

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    def union(a: _Ref, b: _Ref) -> None:
        parent[find(id(a))] = find(id(b))

    for eq in tree.find_all(exp.EQ):
        if isinstance(eq.left, exp.Column) and isinstance(eq.right, exp.Column):
            a, b = _ref_of(eq.left, refs), _ref_of(eq.right, refs)
            if a and b and a is not b and a in parts and b in parts and a.key and b.key \
                    and eq.left.name.lower() == a.key.lower() and eq.right.name.lower() == b.key.lower():
                union(a, b)
    joins = tree.args.get("joins") or []
    for i, j in enumerate(joins):
        using = [u.name.lower() for u in j.args.get("using") or []]
        if using:
            right = next((r for r in parts if r.node is j.this), None)
            for left in [r for r in parts if r is not right and refs.index(r) <= i]:
                if right and left.key and right.key and left.key.lower() in using and right.key.lower() in using:
                    union(left, right)
    roots = {find(id(r)) for r in parts}
    if len(roots) > 1:
        keys = ", ".join(f"{r.alias}.{r.key}" for r in parts)
        raise QueryError("partitioned tables can only be joined on the director key so that rows meet in one "
                         f"chunk: add an equality between {keys} (or, joining a director with itself, a distance "
                         "predicate: a near-neighbour join)")


def _check_columns(tree: exp.Select, refs: list[_Ref], nodes: list[exp.Expression] | None = None) -> None:
    aliases = {e.alias.lower() for e in tree.expressions if isinstance(e, exp.Alias)}
    using = {u.name.lower() for j in tree.args.get("joins") or [] for u in j.args.get("using") or []}
    for col in tree.find_all(exp.Column) if nodes is None else _of_type(nodes, exp.Column):
        if isinstance(col.this, exp.Star):
            continue
        if col.table:
            ref = next((r for r in refs if col.table.lower() in r.qualifiers), None)
            if ref is None:
                raise QueryError(f"unknown table or alias {col.table!r} in {col.sql()}", token=col.table)
            cands = [ref]
        else:
            if col.name.lower() in aliases or col.name.lower() in using:
                continue
            cands = refs
        owners = [r for r in cands if r.column(col.name) is not None or col.name in CHUNK_COLUMNS]
        if len(owners) > 1 and not col.table:
            raise QueryError(f"column {col.name!r} is ambiguous: qualify it as "
                             + " or ".join(f"{r.alias}.{col.name}" for r in owners), token=col.name)
        if owners:
            continue
        names = [n for r in cands for n in r.info.column_names()]
        hint = difflib.get_close_matches(col.name, names, n=3)
        where = ", ".join(f"{r.info.database}.{r.info.name}" for r in cands)
        raise QueryError(f"unknown column {col.name!r} in table {where}"
                         + (f" (did you mean {', '.join(hint)}?)" if hint else ""), token=col.name)


def _of_type(nodes: list[exp.Expression], cls: type) -> list:
    """``tree.find_all(cls)`` over ``list(tree.walk())``, in the same order."""
    return [n for n in nodes if isinstance(n, cls)]


def _columns_read(tree: exp.Select, refs: list[_Ref],
                  nodes: list[exp.Expression] | None = None) -> dict[int, set[str] | None]:
    """The catalogue columns the query reads from each table occurrence (None: all of them,
    as for ``*``), so that workers read only those. ``nodes``: ``list(tree.walk())``."""
    nodes = list(tree.walk()) if nodes is None else nodes
    out: dict[int, set[str] | None] = {id(r): set() for r in refs}
    for star in _of_type(nodes, exp.Star):
        parent = star.parent
        if isinstance(parent, exp.Count):
            continue
        ref = next((r for r in refs if parent.table.lower() in r.qualifiers), None) \
            if isinstance(parent, exp.Column) and parent.table else None
        for r in ([ref] if ref is not None else refs):
            out[id(r)] = None
    for col in _of_type(nodes, exp.Column):
        if isinstance(col.this, exp.Star):
            continue
        ref = _ref_of(col, refs)
        if ref is not None and out[id(ref)] is not None:
            c = ref.column(col.name)
            if c is not None:
                out[id(ref)].add(c["name"])
    for j in tree.args.get("joins") or []:
        for u in j.args.get("using") or []:
            for r in refs:
                c = r.column(u.name)
                if c is not None and out[id(r)] is not None:
                    out[id(r)].add(c["name"])
    return out


@dataclass(frozen=True)
class _Item:
    """One select-list item as written, what its column metadata depends on (read before the
    rules rewrite the tree, so that the tree need not be copied)."""

    name: str                 # alias_or_name
    star: bool                # * or alias.*
    table: str | None         # the qualifier of a column or of alias.* (None: a bare *)
    column: str | None        # the column's name (a bare or qualified column), else None


def _written_items(tree: exp.Select) -> list[_Item]:
    out = []
    for e in tree.expressions:
        inner = e.this if isinstance(e, exp.Alias) else e
        if isinstance(inner, exp.Star):
            out.append(_Item(e.alias_or_name, True, None, None))
        elif isinstance(inner, exp.Column):
            star = isinstance(inner.this, exp.Star)
            out.append(_Item(e.alias_or_name, star, inner.table, None if star else inner.name))
        else:
            out.append(_Item(e.alias_or_name, False, "", None))
    return out


def _column_meta(items: list[_Item], refs: list[_Ref]) -> dict[str, dict]:
    """Catalogue metadata (unit, UCD, ...) of the output columns that are catalogue columns."""
    meta = {}
    for it in items:
        if it.star:
            for r in reversed(refs):
                if it.table is None or it.table.lower() in r.qualifiers:
                    meta.update({c["name"]: c for c in r.info.columns})
        elif it.column is not None:
            ref = _ref_named(it.table or "", it.column, refs)
            c = ref.column(it.column) if ref is not None else None
            if c is not None:
                meta[it.name] = c
    return meta


def _is_plain_count(tree: exp.Select) -> bool:
    if len(tree.expressions) != 1 or tree.args.get("where") or tree.args.get("group") \
            or tree.args.get("having") or tree.args.get("distinct") or tree.args.get("offset"):
        return False
    lim = tree.args.get("limit")
    if lim is not None and not (isinstance(lim.expression, exp.Literal) and lim.expression.is_int
                                and int(lim.expression.this) >= 1):
        return False
    e = tree.expressions[0]
    e = e.this if isinstance(e, exp.Alias) else e
    return isinstance(e, exp.Count) and isinstance(e.this, exp.Star)


def _expand_star(tree: exp.Select, info: TableInfo, hidden: tuple[str, ...] = ()) -> None:
    """``*`` is the catalogue's columns, without the internal chunkId/subChunkId (and ``hidden``)."""
    if not info.partitioned:
        return
    for star in list(tree.find_all(exp.Star)):
        parent = star.parent
        if isinstance(parent, exp.Count):
            continue
        except_ = [exp.column(c) for c in (*CHUNK_COLUMNS, *hidden)]
        if isinstance(parent, exp.Column):  # alias.*
            parent.set("this", exp.Star(except_=except_))
        elif isinstance(parent, exp.Select):
            star.set("except_", except_)


def _expand_match_star(tree: exp.Select, refs: list[_Ref], m: _Ref, flag: str) -> None:
    """``*`` through a match table: without chunkId/subChunkId, nor the match table's flag
    column (``alias.*`` of a table leaves out only the columns that table has)."""
    for star in list(tree.find_all(exp.Star)):
        parent = star.parent
        if isinstance(parent, exp.Count):
            continue
        if isinstance(parent, exp.Column):  # alias.*
            ref = next((r for r in refs if (parent.table or "").lower() in r.qualifiers), None)
            if ref is None or ref.info.role == "replicated":
                continue
            names = (*CHUNK_COLUMNS, flag) if ref is m else CHUNK_COLUMNS
            parent.set("this", exp.Star(except_=[exp.column(c) for c in names]))
        elif isinstance(parent, exp.Select):
            star.set("except_", [exp.column(c) for c in (*CHUNK_COLUMNS, flag)])


def _neighbour_join(tree: exp.Select, refs: list[_Ref]) -> neighbour.NeighbourJoin | None:
    """A near-neighbour self-join: two occurrences of one director joined by a distance predicate
    (czar/planner/neighbour.py); refs[near] is then the first of them in FROM."""
    dirs = [r for r in refs if r.info.role == "director"]
    if len(dirs) < 2:
        return None
    m = dirs[0].info.manifest
    if any((r.info.database.lower(), r.info.name.lower()) != (m.database.lower(), m.table.lower()) for r in dirs):
        return None
    nj = neighbour.find(tree, [neighbour.Side(r.alias, frozenset(r.qualifiers)) for r in refs],
                        m.ra_column, m.dec_column)
    if nj is None:
        return None
    if len(refs) > 2:
        raise QueryError("a near-neighbour join may join only two occurrences of a director table "
                         "(joins with other tables are not supported yet)")
    neighbour.check_radius(nj, dirs[0].info.chunker().overlap, f"{m.database}.{m.table}")
    return nj


class _ChunkedMatch(TableInfo):
    """A match table seen as the partitioned table it is (TableInfo.partitioned counts directors
    and children only), so that the engine fans a query on it out chunk by chunk."""

    @property
    def partitioned(self) -> bool:
        return True


def _as_partitioned(info: TableInfo) -> TableInfo:
    if info.partitioned:
        return info
    view = object.__new__(_ChunkedMatch)
    view.__dict__.update(info.__dict__)  # shares the chunk arrays: no copy per query
    return view


def _match_join(tree: exp.Select, refs: list[_Ref]) -> match.MatchJoin | None:
    """A query through a match table (czar/planner/match.py), or None."""
    if not any(r.info.role == "match" for r in refs):
        return None
    occ = [match.Occurrence(r.alias, frozenset(r.qualifiers), r.info.name, r.info.role, r.info.manifest.id_column)
           for r in refs]

    def owner(col: exp.Column) -> int | None:
        ref = _ref_of(col, refs)
        return None if ref is None else refs.index(ref)

    return match.find(tree, occ, owner, lambda i: match.columns_of(refs[i].info.name, refs[i].info.columns))


@dataclass
class _MatchPlan:
    tree: exp.Select
    anchor: _Ref                       # the primary director, or the match table alone
    chunks: list[int] | None
    regions: list
    idr: IdRestriction | None
    index_table: TableInfo | None
    overlap: list[_Ref]                # directors read with their overlap


def _plan_match(tree: exp.Select, refs: list[_Ref], mj: match.MatchJoin, metadata: Metadata) -> _MatchPlan:
    """Chunks, restrictions and the primary director of a query through a match table.

    The primary director (read from its chunk's rows) is the first one restricted to regions,
    else the first restricted by id, else the first in FROM; directors joined on the other key
    are read with their overlap. qserv_areaspec_* applies to the first director in FROM."""
    m = refs[mj.match]
    regions: dict[int, list] = {}
    for d in mj.directors:
        dm = refs[d].info.manifest
        sr = spatial_restriction(tree, dm.ra_column, dm.dec_column, refs[d].qualifiers,
                                 alias=refs[d].node.alias or None)
        tree, regions[d] = sr.select, sr.regions
    ids = {d: id_restriction(tree, refs[d].key, refs[d].qualifiers) for d in mj.directors}
    ids = {d: i or id_restriction(tree, mj.columns.key(mj.sides[d]), m.qualifiers) for d, i in ids.items()}
    if not mj.sides:
        if any(f.name.lower().startswith("qserv_areaspec") for f in tree.find_all(exp.Anonymous)):
            raise QueryError(f"qserv_areaspec_* needs a director table with positions; {m.info.database}."
                             f"{m.info.name} is a match table: join it with {mj.columns.dir1} or {mj.columns.dir2}")
        # a first-director id finds the chunk holding each of its matches (a second-director id
        # does not: the copies stored with the second side are the ones the filter drops)
        idr = id_restriction(tree, mj.columns.key1, m.qualifiers)
        index = metadata.resolve(m.info.database, mj.columns.dir1) if idr is not None else None
        return _MatchPlan(tree, m, None, [], idr, index, [])
    primary = next((d for d in mj.directors if regions[d]), None)
    primary = primary if primary is not None else next((d for d in mj.directors if ids[d] is not None),
                                                       mj.directors[0])
    p = refs[primary]
    chunk_sets = [p.info.chunk_set(), m.info.chunk_set()]
    chunker = p.info.chunker()
    chunk_sets += [set(r.chunk_ids(chunker).tolist()) for r in regions[primary]]
    chunks = sorted(frozenset.intersection(*map(frozenset, chunk_sets)))
    idr = ids[primary]
    return _MatchPlan(tree, p, chunks, [repr(r) for r in regions[primary]], idr,
                      p.info if idr is not None else None,
                      [refs[d] for d in match.needs_overlap(mj, primary)])


def _local_group_keys(tree: exp.Select, refs: list[_Ref]) -> frozenset[str] | None:
    """Columns that keep a GROUP BY's groups within one chunk, as ``alias.column`` and (when
    unambiguous) bare ``column``, lower-cased: the director id of a partitioned table or a
    child's foreign key (never NULL: the partitioner refuses such rows). Rows of co-located
    tables meet in the chunk of that key's director row, so grouping by it lets every worker
    compute whole groups. None with outer joins (a NULL-extended side's NULL group spans chunks)."""
    if any(j.side or j.kind.upper() in ("FULL", "OUTER") for j in tree.args.get("joins") or []):
        return None
    keys = set()
    for r in refs:
        if r.info.partitioned and r.key:
            keys.add(f"{r.alias}.{r.key}".lower())
            if sum(1 for x in refs if x.column(r.key) is not None) == 1:
                keys.add(r.key.lower())
    return frozenset(keys) or None


def _cap_limit(tree: exp.Select, maxrec: int) -> None:
    """TAP's MAXREC: at most ``maxrec`` rows of the answer, plus one to tell overflow apart."""
    cap = maxrec + 1
    lim = tree.args.get("limit")
    if lim is not None and isinstance(lim.expression, exp.Literal) and lim.expression.is_int:
        if int(lim.expression.this) <= cap:
            return
        lim.set("expression", exp.Literal.number(cap))
    elif lim is None:
        tree.set("limit", exp.Limit(expression=exp.Literal.number(cap)))


def plan_query(sql: str, metadata: Metadata, *, lang: str = "adql", database: str | None = None,
               maxrec: int | None = None, tree: exp.Expression | None = None) -> Plan:
    """Plan ``sql``; ``maxrec`` caps the rows to ``maxrec + 1`` (TAP MAXREC with overflow).

    ``tree``: ``sql`` already parsed (and rewritten, e.g. by :mod:`czar.compose`); ``sql``
    then only serves to name unaliased output columns as written. The plan takes ``tree``
    over: it is rewritten in place (copying it would cost as much as planning a cone)."""
    tree = parse(sql, lang) if tree is None else tree
    if not isinstance(tree, exp.Select):
        raise QueryError("set operations (UNION/INTERSECT/EXCEPT) and WITH are not supported yet")
    written = _written_items(tree)  # the select list as written, for metadata
    if maxrec is not None:
        _cap_limit(tree, maxrec)
    nodes = list(tree.walk())  # one walk for the checks (they do not change the tree)
    _refuse_unsupported(tree, nodes)
    refs = _table_refs(tree, metadata, database)
    _check_columns(tree, refs, nodes)
    mj = _match_join(tree, refs)
    nn = _neighbour_join(tree, refs) if mj is None else None
    if nn is None and mj is None:
        _check_co_location(tree, refs)
    parts = [r for r in refs if r.info.partitioned]
    director = refs[nn.near] if nn else next((r for r in parts if r.info.role == "director"), None)
    mp = _plan_match(tree, refs, mj, metadata) if mj is not None else None
    if mp is not None:
        tree, director = mp.tree, None
        parts = [mp.anchor] + [refs[mj.match]] * (mp.anchor is not refs[mj.match])
    anchor = mp.anchor if mp else director or (parts[0] if parts else refs[0])
    info = _as_partitioned(anchor.info) if mp else anchor.info

    regions: list = []
    chunks: list[int] | None = None
    idr = None
    index_table = None
    if mp is not None:
        chunks, regions, idr, index_table = mp.chunks, mp.regions, mp.idr, mp.index_table
    elif director is not None:
        d = director.info.manifest
        sr = spatial_restriction(tree, d.ra_column, d.dec_column, director.qualifiers,
                                 alias=director.node.alias or None, copy=False, nodes=nodes)
        tree = sr.select
        if nn is not None:  # o2 restricted: the pairs' o1 rows lie within the radius of its regions
            far = refs[nn.far]
            sr.regions += neighbour.far_regions(spatial_restriction(tree, d.ra_column, d.dec_column, far.qualifiers,
                                                                    alias=far.alias).regions, nn.radius)
        if sr.regions:
            chunker = director.info.chunker()
            sets = [set(r.chunk_ids(chunker).tolist()) for r in sr.regions]
            chunks = sorted(director.info.chunk_set().intersection(*sets))
            regions = [repr(r) for r in sr.regions]
    elif any(f.name.lower().startswith("qserv_areaspec") for f in tree.find_all(exp.Anonymous)):
        raise QueryError(f"qserv_areaspec_* needs a director table with positions; "
                         f"{info.database}.{info.name} is a {info.role} table")
    for r in ([] if mp else [director] if nn else parts):  # the director key restricted anywhere narrows every co-located table
        idr = id_restriction(tree, r.key, r.qualifiers)
        if idr is not None:
            index_table = r.info if r.info.role == "director" else metadata.resolve(
                r.info.database, r.info.manifest.director)
            break
    if mj is not None:
        tree.where(match.conditions(mj, [match.Occurrence(r.alias, frozenset(r.qualifiers), r.info.name,
                                                          r.info.role) for r in refs]), append=True, copy=False)
    # a match table's statistics count its rows' copies, not its rows
    count = info.rows if len(refs) == 1 and mj is None and _is_plain_count(tree) else None
    count_name = tree.expressions[0].alias if count is not None and tree.expressions[0].alias else "count_star()"

    # the rules return new trees: find this tree's table nodes again
    from_ = tree.args.get("from") or tree.args.get("from_")
    for r, node in zip(refs, [from_.this] + [j.this for j in tree.args.get("joins") or []]):
        r.node = node
    if mj is not None:  # the flag column is the partitioner's: not part of the table's rows
        _expand_match_star(tree, refs, refs[mj.match], mj.columns.flag)
    elif any(r.info.partitioned for r in refs) and any(isinstance(n, exp.Star) for n in nodes):
        # (the rules since the walk above add no star: without one there, nothing to expand)
        _expand_star(tree, info if info.partitioned else parts[0].info, (neighbour.CELL,) if nn else ())
    nodes = list(tree.walk())  # the rewritten tree: one walk for the columns read and qualified
    read = _columns_read(tree, refs, nodes)
    placeholders, table_placeholders = {}, {}
    for i, r in enumerate(refs):
        marker = f"__qengine_table_{i}__"
        cols = read.get(id(r))
        hint = "|" + ",".join(sorted(cols)) if cols and (r.info.partitioned or r.info.role == "match") and \
            len(cols) < len(r.info.columns) else ""
        placeholders[marker] = "{{" + f"{r.info.database}.{r.info.name}{hint}" + "}}"
        table_placeholders[placeholders[marker]] = r.info
        r.node.replace(exp.Table(this=exp.to_identifier(marker), alias=exp.TableAlias(this=exp.to_identifier(r.alias)),
                                 joins=r.node.args.get("joins")))
    if nn is not None:  # o1: the chunks' rows, o2: rows and overlap, meeting in (chunkId, cell)
        near, far = refs[nn.near], refs[nn.far]
        m = near.info.manifest
        far_ph = placeholders[f"__qengine_table_{nn.far}__"]
        overlap_ph = far_ph.replace(f".{far.info.name}", f".{far.info.name}__overlap", 1)
        table_placeholders[overlap_ph] = far.info
        placeholders[f"__qengine_table_{nn.near}__"], placeholders[f"__qengine_table_{nn.far}__"] = neighbour.sources(
            placeholders[f"__qengine_table_{nn.near}__"], far_ph, overlap_ph, m.ra_column, m.dec_column, nn.radius)
        tree.where(neighbour.join_condition(near.alias, far.alias), append=True, copy=False)
    for far in (mp.overlap if mp else []):  # the other key's director: its chunk's rows and their overlap
        i = refs.index(far)
        data_ph = placeholders[f"__qengine_table_{i}__"]
        overlap_ph = data_ph.replace(f".{far.info.name}", f".{far.info.name}__overlap", 1)
        table_placeholders[overlap_ph] = far.info
        placeholders[f"__qengine_table_{i}__"] = match.sides_sql(data_ph, overlap_ph)
    # Column qualifiers naming the database or the table (db.table.col) become the alias.
    # (no column was added since the walk above, but for a near-neighbour join's condition)
    for col in tree.find_all(exp.Column) if nn is not None else _of_type(nodes, exp.Column):
        if col.args.get("db"):
            col.set("db", None)
        if col.table:
            ref = next((r for r in refs if col.table.lower() in r.qualifiers), None)
            if ref is not None:
                col.set("table", exp.to_identifier(ref.alias))

    sp = split(tree, PARTS, source=sql, local_keys=_local_group_keys(tree, refs) if not (nn or mp) else None,
               copy=False)  # the tree is this plan's own: split may take its clauses over
    # split's trees are its own (translated in place), made of the parsed (normal) tree's nodes
    worker_sql = to_duckdb(sp.worker, copy=False, normalized=True)
    for marker, ph in placeholders.items():
        worker_sql = worker_sql.replace(f'"{marker}"', ph).replace(marker, ph)
    # A merge that only renames (sp.rename) is done without DuckDB, so its SQL is written only
    # if asked for (explain); any other merge is translated now, so that errors come at planning.
    merge = sp.merge if sp.rename is not None else to_duckdb(sp.merge, copy=False, normalized=True)
    meta = _column_meta(written, refs)
    return Plan(sql=sql, lang=lang, table=info, chunks=chunks, worker_sql=worker_sql, merge=merge,
                worker_limit=sp.worker_limit, merge_needs_all=sp.merge_needs_all, regions=regions,
                id_restriction=idr, index_table=index_table, count_from_stats=count, count_name=count_name,
                column_meta=meta, tables=[r.info for r in parts], merge_rename=sp.rename,
                merge_limit=sp.limit, merge_offset=sp.offset,
                table_placeholders=table_placeholders,
                overlap_tables=[r.info for r in mp.overlap] if mp else [refs[nn.far].info] if nn else [])
