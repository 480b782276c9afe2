"""Recognise the crossmatch form of a query: an uploaded table joined with a partitioned director
table by a distance predicate on their positions.

Forms (ADQL or Qserv SQL; the predicate in ON, or in WHERE for an inner join)::

    SELECT ... FROM TAP_UPLOAD.mine AS m [LEFT] JOIN db.Object AS o
      ON 1 = CONTAINS(POINT('ICRS', o.ra, o.dec), CIRCLE('ICRS', m.ra, m.dec, r))   -- or the
         [AND ...]                    -- point from m and the circle on o, DISTANCE(...) < r,
    [WHERE ...] [GROUP BY ...] [ORDER BY ...]   -- scisql_angSep(...) < r, scisql_s2PtInCircle(...) = 1

with ``r`` a constant in degrees and ``o``'s position the table's own (partitioning) columns.
LEFT JOIN (the upload on the preserved side) keeps external rows without a match. Anything else
gives None, and the czar plans the query as usual.

What comes out: the :class:`MatchJob` for the workers (the match predicate and the conditions
on the catalogue alone, rewritten onto the worker's internal aliases) and the user's query
rewritten to run in the czar over the external rows (``__xm_ext``) and the matched catalogue
rows (``__xm_pairs``), joined on the external row's index.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from czar.crossmatch.job import SEP, XID, MatchJob
from czar.dialects import to_duckdb
from czar.metadata import UPLOAD_DB, Metadata, TableInfo
from czar.planner.distance import conjuncts as _conjuncts
from czar.planner.distance import distance_form as _distance_form
from czar.planner.spatial import constant
from qengine.errors import QueryError

__all__ = ["EXT", "EXT_DEC", "EXT_RA", "PAIRS", "PID", "Detected", "detect"]

EXT = "__xm_ext"        # the external rows, in the czar's final query
PAIRS = "__xm_pairs"    # the matched catalogue rows, in the czar's final query
PID = "__xm_pid"        # the external row index a pair belongs to (XID on the pairs side)
EXT_RA = "__xm_ra"      # the external positions as shipped to the workers
EXT_DEC = "__xm_dec"


@dataclass
class Detected:
    job: MatchJob
    upload: str                 # the key of the uploads dict
    ext_ra: str                 # the upload's position columns (exact names)
    ext_dec: str
    outer: bool                 # LEFT JOIN: external rows without a match kept
    local: exp.Select           # the user's query over EXT and PAIRS
    ext_quals: set[str] = field(default_factory=set)   # names qualifying the upload's columns
    cat_quals: set[str] = field(default_factory=set)   # and the catalogue's


@dataclass
class _Side:
    node: exp.Table
    qualifiers: set[str]
    names: dict[str, str]       # lower-case column name -> exact name



def _owner(col: exp.Column, sides: list[_Side]) -> _Side | None:
    if col.table:
        return next((s for s in sides if col.table.lower() in s.qualifiers), None)
    owners = [s for s in sides if col.name.lower() in s.names]
    return owners[0] if len(owners) == 1 else None


def _side(node: exp.Table, names: list[str], fallback: str) -> _Side:
    alias = node.alias or node.name or fallback
    quals = {alias.lower()} | ({node.name.lower()} if not node.alias else set())
    return _Side(node, quals, {n.lower(): n for n in names})


def _only(node: exp.Expression, side: _Side, sides: list[_Side]) -> bool:
    """Whether every column of ``node`` belongs to ``side`` and it is a plain row expression."""
    if node.find(exp.AggFunc, exp.Window, exp.Subquery, exp.Select, exp.Star):
        return False
    cols = list(node.find_all(exp.Column))
    return bool(cols) and all(_owner(c, sides) is side and c.name.lower() in side.names for c in cols)


def _retarget(node: exp.Expression, mapping: dict[int, tuple[str, str]]) -> exp.Expression:
    """A copy of ``node`` with its columns renamed: id(column) -> (alias, exact name)."""
    copy = node.copy()
    for orig, new in zip(node.find_all(exp.Column), copy.find_all(exp.Column)):
        alias, name = mapping[id(orig)]
        new.set("this", exp.to_identifier(name, quoted=True))
        new.set("table", exp.to_identifier(alias, quoted=True))
    return copy


def table_pair(tree: exp.Expression) -> tuple[exp.Table, exp.Table, exp.Join] | None:
    """``FROM a JOIN b`` (or ``FROM a, b``): the two tables and the join, None for any other
    shape (one table, three, a subquery, USING). Both crossmatch forms start from this one."""
    if not isinstance(tree, exp.Select):
        return None
    from_ = tree.args.get("from") or tree.args.get("from_")
    joins = tree.args.get("joins") or []
    if from_ is None or len(joins) != 1 or not isinstance(from_.this, exp.Table) \
            or not isinstance(joins[0].this, exp.Table) or joins[0].args.get("using"):
        return None
    return from_.this, joins[0].this, joins[0]


def detect(tree: exp.Expression, metadata: Metadata, database: str | None,
           uploads: dict[str, object] | None) -> Detected | None:
    """The crossmatch in ``tree``, or None when the query is not one. Raises QueryError for a
    crossmatch that cannot run (bad radius, unknown upload column)."""
    if not uploads:
        return None
    pair = table_pair(tree)
    if pair is None:
        return None
    a, b, join = pair
    is_up = [t.db.lower() == UPLOAD_DB.lower() if t.db else False for t in (a, b)]
    if is_up.count(True) != 1:
        return None
    up_node, cat_node = (a, b) if is_up[0] else (b, a)
    up_key = next((k for k in uploads if k.lower() == up_node.name.lower()), None)
    if up_key is None:
        return None
    try:
        info: TableInfo = metadata.resolve(cat_node.db or None, cat_node.name, database)
    except QueryError:
        return None
    m = info.manifest
    if m.role != "director" or not m.ra_column or not m.dec_column or not m.chunker:
        return None
    side, kind = (join.side or "").upper(), (join.kind or "").upper()
    if kind not in ("", "INNER", "OUTER"):
        return None
    if side == "":
        outer = False
    elif (side == "LEFT" and up_node is a) or (side == "RIGHT" and up_node is b):
        outer = True
    else:
        return None
    upload_schema = uploads[up_key].schema
    ext = _side(up_node, list(upload_schema.names), up_key)
    cat = _side(cat_node, info.column_names(), info.name)
    sides = [ext, cat]
    if ext.qualifiers & cat.qualifiers:
        return None

    on = _conjuncts(join.args.get("on"))
    where = _conjuncts(tree.args["where"].this) if tree.args.get("where") else []
    candidates = on + ([] if outer else where)
    found: list[tuple[exp.Expression, list[exp.Column], float]] = []
    for cond in candidates:
        form = _distance_form(cond)
        if form is None:
            continue
        args, bound = form
        if not all(isinstance(x, exp.Column) for x in args):
            continue
        owners = [_owner(x, sides) for x in args]
        if owners == [cat, cat, ext, ext]:
            c_ra, c_dec, e_ra, e_dec = args
        elif owners == [ext, ext, cat, cat]:
            e_ra, e_dec, c_ra, c_dec = args
        else:
            continue
        if c_ra.name.lower() != m.ra_column.lower() or c_dec.name.lower() != m.dec_column.lower():
            return None  # not the partitioning position: chunks do not localise it
        r = constant(bound)
        if r is None:
            return None
        for col in (e_ra, e_dec):
            if col.name.lower() not in ext.names:
                raise QueryError(f"uploaded table {up_key} has no column {col.name!r} (columns: "
                                 f"{', '.join(upload_schema.names)})", token=col.name)
        found.append((cond, [c_ra, c_dec, e_ra, e_dec], r))
    if not found:
        return None
    e_ra_name = ext.names[found[0][1][2].name.lower()]
    e_dec_name = ext.names[found[0][1][3].name.lower()]
    if any(ext.names[f[1][2].name.lower()] != e_ra_name or ext.names[f[1][3].name.lower()] != e_dec_name
           for f in found):
        return None
    radius = min(f[2] for f in found)

    job = MatchJob(table=info, radius=radius, ext_ra=EXT_RA, ext_dec=EXT_DEC)
    # the match predicate(s) on the worker's aliases and the shipped position columns
    preds = []
    for cond, (c_ra, c_dec, e_ra, e_dec), _ in found:
        mapping = {id(c): (job.cat_alias, cat.names[c.name.lower()]) for c in cond.find_all(exp.Column)
                   if _owner(c, sides) is cat}
        mapping.update({id(c): (job.ext_alias, EXT_RA if c.name.lower() == e_ra_name.lower() else EXT_DEC)
                        for c in cond.find_all(exp.Column) if _owner(c, sides) is ext})
        if len(mapping) != len(list(cond.find_all(exp.Column))):
            return None
        preds.append(to_duckdb(_retarget(cond, mapping)))
    job.predicate = " AND ".join(f"({p})" for p in preds)
    # conditions on the catalogue alone run in the workers too (for LEFT JOIN, only those of ON)
    used = {id(f[0]) for f in found}
    for cond in on + ([] if outer else where):
        if id(cond) not in used and _only(cond, cat, sides):
            mapping = {id(c): (job.cat_alias, cat.names[c.name.lower()]) for c in cond.find_all(exp.Column)}
            job.pushed.append(to_duckdb(_retarget(cond, mapping)))
    # catalogue columns the query reads (all of them for * or o.*)
    star = any(not isinstance(s.parent, exp.Count) and (not isinstance(s.parent, exp.Column) or not s.parent.table
                                                        or s.parent.table.lower() in cat.qualifiers)
               for s in tree.find_all(exp.Star))
    if star:
        cols = info.column_names()
    else:
        wanted = {c.name.lower() for c in tree.find_all(exp.Column) if _owner(c, sides) is cat}
        cols = [n for n in info.column_names() if n.lower() in wanted]
    job.columns = list(dict.fromkeys(cols + [m.ra_column, m.dec_column]))
    if not star and m.id_column and m.id_column not in job.columns:
        job.columns.append(m.id_column)  # the tie-break of nearest matches
    return Detected(job=job, upload=up_key, ext_ra=e_ra_name, ext_dec=e_dec_name, outer=outer,
                    local=_local_tree(tree, ext, cat, join, star), ext_quals=ext.qualifiers, cat_quals=cat.qualifiers)


def _local_tree(tree: exp.Select, ext: _Side, cat: _Side, join: exp.Join, star: bool) -> exp.Select:
    """The user's query over the external rows and the matched catalogue rows."""
    local = tree.copy()
    e_alias = ext.node.alias or ext.node.name
    c_alias = cat.node.alias or cat.node.name
    lfrom = local.args.get("from") or local.args.get("from_")
    lj = local.args["joins"][0]
    ext_first = tree_from_is(tree, ext.node)
    for node, name, alias in ((lfrom.this if ext_first else lj.this, EXT, e_alias),
                              (lj.this if ext_first else lfrom.this, PAIRS, c_alias)):
        node.replace(exp.Table(this=exp.to_identifier(name), alias=exp.TableAlias(this=exp.to_identifier(alias))))
    key = exp.EQ(this=exp.column(XID, table=exp.to_identifier(e_alias)),
                 expression=exp.column(PID, table=exp.to_identifier(c_alias)))
    on = lj.args.get("on")
    lj.set("on", key if on is None else exp.and_(key, exp.Paren(this=on)))
    hidden = {"ext": [XID], "cat": [PID, SEP]}
    for s in list(local.find_all(exp.Star)):
        parent = s.parent
        if isinstance(parent, exp.Count):
            continue
        if isinstance(parent, exp.Column) and parent.table:
            names = hidden["ext"] if parent.table.lower() in ext.qualifiers else hidden["cat"]
            parent.set("this", exp.Star(except_=[exp.column(n) for n in names]))
        elif isinstance(parent, exp.Select):
            s.set("except_", [exp.column(n) for n in hidden["ext"] + hidden["cat"]])
    return local


def tree_from_is(tree: exp.Select, node: exp.Table) -> bool:
    from_ = tree.args.get("from") or tree.args.get("from_")
    return from_.this is node
