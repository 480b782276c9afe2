"""Crossmatch of two hosted director tables, chunk by chunk through the stored overlap.

Forms (ADQL or Qserv SQL; two *different* director tables with the same chunking)::

    SELECT ... FROM db.Near AS n [LEFT] JOIN db.Far AS f
      ON 1 = CONTAINS(POINT('ICRS', f.ra, f.dec), CIRCLE('ICRS', n.ra, n.dec, r)) [AND ...]
    -- or DISTANCE(...) < r, scisql_angSep(...) < r, in WHERE for an inner join (FROM n, f WHERE ...)

Qserv's near-neighbour semantics across two tables: per chunk, the near table (the first in FROM,
the side LEFT JOIN keeps) contributes its own rows and the far table its rows plus its stored
overlap rows for that chunk, so every pair closer than r <= the far table's overlap is found
exactly once, in the near row's chunk. Inside a worker the sides meet in the zone/RA-bin cell
equi-join of :mod:`czar.planner.neighbour` (reused: ``near_sql``/``far_sql``). The workers return
the pairs (near rows without one too, for LEFT JOIN); the czar then runs the user's query over
the distinct near rows and their partners, joined on the near table's id.

A one-table self-join is the near-neighbour planner's (czar/planner); anything else gives None.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from sqlglot import exp

from czar.crossmatch.detect import table_pair
from czar.crossmatch.job import SEP, quote
from czar.crossmatch.units import SEPARATION_META, annotate, column_meta, select_meta
from czar.dialects import to_duckdb
from czar.metadata import UPLOAD_DB, Metadata, TableInfo
from czar.planner import neighbour
from czar.planner.distance import conjuncts, distance_form
from czar.planner.spatial import constant
from qengine.errors import QueryError

if TYPE_CHECKING:
    from czar.engine import Czar

__all__ = ["HostedJob", "answer_hosted", "check_pair", "crossmatch_hosted", "detect_hosted", "hosted_pairs", "worker_sql"]

NEAR = "__xm_n"       # the distinct near rows, in the czar's final query
FAR = "__xm_f"        # their partners (and the near id they belong to)
NID = "__xm_nid"      # the near row's id on the far side's rows
_N, _F = "__xm_n_", "__xm_f_"   # prefixes of the two sides' columns in the workers' answer


@dataclass
class HostedJob:
    near: TableInfo
    far: TableInfo
    radius: float                                        # degrees
    near_cols: list[str] = field(default_factory=list)   # exact names, the near id among them
    far_cols: list[str] = field(default_factory=list)
    outer: bool = False                                  # near rows without a partner kept


def check_pair(near: TableInfo, far: TableInfo, radius: float) -> None:
    """Refuse what chunk-by-chunk matching cannot answer: other table roles, different chunkings,
    a radius that is not positive or wider than the far table's stored overlap."""
    for t in (near, far):
        m = t.manifest
        if m.role != "director" or not m.ra_column or not m.dec_column or not m.chunker:
            raise QueryError(f"{t.database}.{t.name} is a {m.role} table: crossmatch needs director tables "
                             "with their own position columns")
        if not m.id_column:
            raise QueryError(f"{t.database}.{t.name} has no id column: a hosted crossmatch needs one")
    a, b = near.manifest.chunker, far.manifest.chunker
    if (a["num_stripes"], a["num_sub_stripes"]) != (b["num_stripes"], b["num_sub_stripes"]):
        raise QueryError(f"{near.database}.{near.name} ({a['num_stripes']} x {a['num_sub_stripes']} stripes) and "
                         f"{far.database}.{far.name} ({b['num_stripes']} x {b['num_sub_stripes']}) are chunked "
                         "differently: their chunks do not meet; upload one of them (TAP_UPLOAD) instead")
    if not np.isfinite(radius) or radius <= 0:
        raise QueryError(f"crossmatch radius must be a positive number of degrees, got {radius!r}")
    overlap = float(b.get("overlap", 0.0))
    if radius > overlap:
        raise QueryError(
            f"crossmatch radius {radius:g} deg ({radius * 3600:g} arcsec) is larger than the overlap stored with "
            f"{far.database}.{far.name}, {overlap:g} deg ({overlap * 3600:g} arcsec): a partner farther than the "
            "overlap from a chunk's edge is in no copy of that chunk, so hosted tables match only within their "
            "overlap. Use a smaller radius, re-partition the table with a wider overlap, or match an exported "
            "copy of one side as an upload (TAP_UPLOAD / qengine xmatch FILE: any radius up to a sub-stripe)")


def worker_sql(job: HostedJob) -> str:
    """Each worker's query: the near rows of its chunks with their partners within the radius."""
    n, f = job.near, job.far
    g = neighbour.grid_for(job.radius)
    ncols = list(dict.fromkeys([*job.near_cols, n.manifest.ra_column, n.manifest.dec_column]))
    fcols = list(dict.fromkeys([*job.far_cols, f.manifest.ra_column, f.manifest.dec_column]))
    near_src = f"{{{{{n.database}.{n.name}|{','.join(ncols)}}}}}"
    far_src = [f"{{{{{f.database}.{f.name}|{','.join(fcols)}}}}}",
               f"{{{{{f.database}.{f.name}__overlap|{','.join(fcols)}}}}}"]
    near = neighbour.near_sql(near_src, n.manifest.ra_column, n.manifest.dec_column, g)
    far = neighbour.far_sql(far_src, f.manifest.ra_column, f.manifest.dec_column, g)
    nra, ndec = (f"__xm_a.{quote(c)}" for c in (n.manifest.ra_column, n.manifest.dec_column))
    fra, fdec = (f"__xm_b.{quote(c)}" for c in (f.manifest.ra_column, f.manifest.dec_column))
    cols = ([f"__xm_a.{quote(c)} AS {quote(_N + c)}" for c in job.near_cols]
            + [f"__xm_b.{quote(c)} AS {quote(_F + c)}" for c in job.far_cols]
            + [f"qe_distance({nra}, {ndec}, {fra}, {fdec}) AS {SEP}"])
    on = (f"__xm_a.chunkId = __xm_b.chunkId AND __xm_a.{neighbour.CELL} = __xm_b.{neighbour.CELL} "
          f"AND qe_in_circle({fra}, {fdec}, {nra}, {ndec}, {float(job.radius)!r})")
    return (f"SELECT {', '.join(cols)} FROM ({near}) AS __xm_a {'LEFT ' if job.outer else ''}JOIN ({far}) AS __xm_b "
            f"ON {on}")


def _empty(job: HostedJob) -> pa.Table:
    from qengine.catalog import Column

    fields = []
    for t, cols, p in ((job.near, job.near_cols, _N), (job.far, job.far_cols, _F)):
        for c in cols:
            col = t.column(c)
            fields.append(pa.field(p + c, Column(col["name"], col["datatype"]).arrow_type()))
    return pa.schema(fields + [pa.field(SEP, pa.float64())]).empty_table()


def hosted_pairs(czar: Czar, job: HostedJob, timeout: float = 0.0) -> pa.Table:
    """The workers' answer: ``__xm_n_<col>`` near columns, ``__xm_f_<col>`` far columns, ``SEP``
    (degrees); with ``job.outer`` near rows without a partner once, with NULL far columns."""
    from czar.crossmatch.execute import _run_workers

    check_pair(job.near, job.far, job.radius)
    visit = job.near.chunk_array()
    if visit.size == 0:
        return _empty(job)
    # the far table's rows and overlap are read for the near table's chunks: a worker must hold
    # both for the chunks it is given (overlap_tables: the czar's assignment checks the overlap)
    assignment = czar._assign(SimpleNamespace(table=job.near, tables=[job.near], overlap_tables=[job.far]), visit)
    batches = _run_workers(czar, worker_sql(job), assignment, {}, timeout)
    return pa.Table.from_batches(batches) if batches else _empty(job)


def _split(pairs: pa.Table, job: HostedJob) -> tuple[pa.Table, pa.Table]:
    """The distinct near rows and the far rows tagged with their near row's id."""
    nid = _N + job.near.manifest.id_column
    near_names = [_N + c for c in job.near_cols]
    idx = pairs.column(nid).to_numpy(zero_copy_only=False)
    order = np.argsort(idx, kind="stable")
    first = order[np.r_[True, idx[order][1:] != idx[order][:-1]]] if idx.size else order
    near = pairs.select(near_names).take(pa.array(np.sort(first))).rename_columns(job.near_cols)
    far = pairs.select([_F + c for c in job.far_cols] + [SEP, nid]).rename_columns([*job.far_cols, SEP, NID])
    return near, far


# ------------------------------------------------------------------------------ SQL
@dataclass
class _Ref:
    node: exp.Table
    info: TableInfo
    quals: set[str]


def _owner(col: exp.Column, refs: list[_Ref]) -> _Ref | None:
    if col.table:
        return next((r for r in refs if col.table.lower() in r.quals), None)
    owners = [r for r in refs if r.info.column(col.name) is not None]
    return owners[0] if len(owners) == 1 else None


@dataclass
class HostedDetected:
    job: HostedJob
    local: exp.Select
    near_quals: set[str] = field(default_factory=set)
    far_quals: set[str] = field(default_factory=set)


def detect_hosted(tree: exp.Expression, metadata: Metadata, database: str | None) -> HostedDetected | None:
    """The hosted crossmatch in ``tree``, or None when the query is not one."""
    pair = table_pair(tree)
    if pair is None:
        return None
    join = pair[2]
    refs = []
    for node in pair[:2]:
        if node.db and node.db.lower() == UPLOAD_DB.lower():
            return None
        try:
            info = metadata.resolve(node.db or None, node.name, database)
        except QueryError:
            return None
        if info.manifest.role != "director" or not info.manifest.chunker:
            return None
        alias = node.alias or info.name
        refs.append(_Ref(node, info, {alias.lower()} | ({info.name.lower(), node.name.lower()} if not node.alias else set())))
    a, b = refs
    if (a.info.database.lower(), a.info.name.lower()) == (b.info.database.lower(), b.info.name.lower()) \
            or a.quals & b.quals:
        return None  # a self-join: the near-neighbour planner's
    side, kind = (join.side or "").upper(), (join.kind or "").upper()
    if kind not in ("", "INNER", "OUTER", "CROSS") or side not in ("", "LEFT"):
        return None
    outer = side == "LEFT"
    on = conjuncts(join.args.get("on"))
    where = conjuncts(tree.args["where"].this) if tree.args.get("where") else []
    radius = None
    for cond in on + ([] if outer else where):
        form = distance_form(cond)
        if form is None or not all(isinstance(x, exp.Column) for x in form[0]):
            continue
        owners = [_owner(x, refs) for x in form[0]]
        if owners not in ([a, a, b, b], [b, b, a, a]):
            continue
        cols = form[0] if owners[0] is a else form[0][2:] + form[0][:2]
        ma, mb = a.info.manifest, b.info.manifest
        if [c.name.lower() for c in cols] != [ma.ra_column.lower(), ma.dec_column.lower(),
                                               mb.ra_column.lower(), mb.dec_column.lower()]:
            continue
        r = constant(form[1])
        if r is not None:
            radius = r if radius is None else min(radius, r)
    if radius is None:
        return None
    near, far = a, b
    if not outer and radius > float(b.info.manifest.chunker.get("overlap", 0)) \
            and radius <= float(a.info.manifest.chunker.get("overlap", 0)):
        near, far = b, a  # an inner join is symmetric: read the side whose overlap is wide enough
    star = {id(r): False for r in refs}
    for s in tree.find_all(exp.Star):
        if isinstance(s.parent, exp.Count):
            continue
        if isinstance(s.parent, exp.Column) and s.parent.table:
            for r in refs:
                star[id(r)] |= s.parent.table.lower() in r.quals
        else:
            star = {k: True for k in star}

    def cols(r: _Ref) -> list[str]:
        names = r.info.column_names()
        if not star[id(r)]:
            used = {c.name.lower() for c in tree.find_all(exp.Column) if _owner(c, refs) is r}
            names = [n for n in names if n.lower() in used]
        m = r.info.manifest
        return list(dict.fromkeys([*names, m.id_column, m.ra_column, m.dec_column]))

    job = HostedJob(near=near.info, far=far.info, radius=float(radius), near_cols=cols(near),
                    far_cols=cols(far), outer=outer)
    check_pair(job.near, job.far, job.radius)
    return HostedDetected(job=job, local=_local_tree(tree, near, far, join), near_quals=near.quals,
                          far_quals=far.quals)


def _local_tree(tree: exp.Select, near: _Ref, far: _Ref, join: exp.Join) -> exp.Select:
    """The user's query over the distinct near rows and their partners, joined on the near id."""
    local = tree.copy()
    lfrom = local.args.get("from") or local.args.get("from_")
    lj = local.args["joins"][0]
    near_first = (tree.args.get("from") or tree.args.get("from_")).this is near.node
    for node, name, ref in ((lfrom.this if near_first else lj.this, NEAR, near),
                            (lj.this if near_first else lfrom.this, FAR, far)):
        alias = ref.node.alias or ref.node.name
        node.replace(exp.Table(this=exp.to_identifier(name), alias=exp.TableAlias(this=exp.to_identifier(alias))))
    n_alias, f_alias = near.node.alias or near.node.name, far.node.alias or far.node.name
    key = exp.EQ(this=exp.column(near.info.manifest.id_column, table=exp.to_identifier(n_alias), quoted=True),
                 expression=exp.column(NID, table=exp.to_identifier(f_alias)))
    on = lj.args.get("on")
    lj.set("on", key if on is None else exp.and_(key, exp.Paren(this=on)))
    if not near_first and (join.side or "").upper() != "LEFT":
        pass  # inner join: the order of the two tables does not matter
    for s in list(local.find_all(exp.Star)):
        parent = s.parent
        if isinstance(parent, exp.Count):
            continue
        if isinstance(parent, exp.Column) and parent.table:
            if parent.table.lower() in far.quals:
                parent.set("this", exp.Star(except_=[exp.column(NID), exp.column(SEP)]))
        elif isinstance(parent, exp.Select):
            s.set("except_", [exp.column(NID), exp.column(SEP)])
    return local


def answer_hosted(czar: Czar, tree, database: str | None) -> pa.Table | None:
    """The answer to a crossmatch of two hosted director tables, or None when ``tree`` is not one."""
    found = detect_hosted(tree, czar.metadata, database)
    if found is None:
        return None
    pairs = hosted_pairs(czar, found.job)
    near, far = _split(pairs, found.job)
    result = czar._run_local(to_duckdb(found.local), {NEAR: near, FAR: far})
    return annotate(result, _sql_meta(found))


def _sql_meta(found: HostedDetected) -> dict[str, dict[str, str]]:
    """Units/UCDs of the columns the query selects (either table's, separations)."""
    refs = [(found.job.near, found.near_quals), (found.job.far, found.far_quals)]

    def column(col) -> dict[str, str]:
        q = (col.table or "").lower()
        owners = [i for i, quals in refs if (q in quals if q else i.column(col.name) is not None)]
        return column_meta(owners[0], col.name) if len(owners) == 1 else {}

    def star(q: str | None) -> dict[str, dict[str, str]]:
        out = {}
        for info, quals in reversed(refs):
            if q is None or q.lower() in quals:
                out.update({n: column_meta(info, n) for n in info.column_names()})
        return {k: v for k, v in out.items() if v}

    return select_meta(found.local, column, star)


def crossmatch_hosted(czar: Czar, near: str, far: str, radius: float, *, nearest: bool = False,
                      outer: bool = False, columns: list[str] | None = None, database: str | None = None,
                      timeout: float = 0.0) -> pa.Table:
    """Match each row of the hosted director ``near`` ("db.Table") with the rows of the hosted
    director ``far`` within ``radius`` degrees (at most ``far``'s stored overlap).

    Returns all of ``near``'s columns, ``far``'s ``columns`` (default: all; a name ``near`` has too
    gets the suffix ``_<far table>``) and ``separation_arcsec``: one row per pair, or per near row
    with ``nearest`` (the closest; ties: lowest id); ``outer`` keeps near rows without a match.
    Rows come by near id, then separation."""
    from czar.crossmatch.execute import SEPARATION

    infos = []
    for name in (near, far):
        db, _, t = name.rpartition(".")
        infos.append(czar.metadata.resolve(db or None, t, database))
    n, f = infos
    check_pair(n, f, float(radius))
    fcols = []
    for c in (f.column_names() if columns is None else columns):
        col = f.column(c)
        if col is None:
            raise QueryError(f"unknown column {c!r} in table {f.database}.{f.name}", token=c)
        fcols.append(col["name"])
    job = HostedJob(near=n, far=f, radius=float(radius), near_cols=n.column_names(),
                    far_cols=list(dict.fromkeys(fcols + [f.manifest.id_column])), outer=outer)
    near_rows, far_rows = _split(hosted_pairs(czar, job, timeout), job)
    nid, fid = quote(n.manifest.id_column), quote(f.manifest.id_column)
    clash = {c.lower() for c in job.near_cols}
    out = [f"p.{quote(c)} AS {quote(c + '_' + f.name if c.lower() in clash else c)}" for c in fcols]
    pick = (f" QUALIFY row_number() OVER (PARTITION BY p.{NID} ORDER BY p.{SEP}, p.{fid}) = 1" if nearest else "")
    pairs = f"(SELECT * FROM {FAR} AS p WHERE p.{SEP} IS NOT NULL{pick})"
    sql = (f"SELECT e.*, {', '.join(out + [f'p.{SEP} * 3600.0 AS {SEPARATION}'])} FROM {NEAR} AS e "
           f"{'LEFT ' if outer else ''}JOIN {pairs} AS p ON p.{NID} = e.{nid} ORDER BY e.{nid}, p.{SEP}, p.{fid}")
    result = czar._run_local(sql, {NEAR: near_rows, FAR: far_rows})
    meta = {c: column_meta(n, c) for c in job.near_cols}
    meta.update({(c + "_" + f.name if c.lower() in clash else c): column_meta(f, c) for c in fcols})
    meta[SEPARATION] = SEPARATION_META
    return annotate(result, {k: v for k, v in meta.items() if v})
