"""Spatial restriction: which regions a query's WHERE clause confines a table's positions to.

Top-level AND conjuncts of these forms on the table's (ra, dec) columns restrict the chunks
visited: ADQL ``CONTAINS(POINT(ra, dec), CIRCLE|BOX|POLYGON(...)) = 1`` (either side, or bare),
``DISTANCE(POINT(ra, dec), POINT(a, b)) < r`` (or <=, either side), sciSQL
``scisql_s2PtInCircle|Box|Ellipse|CPoly(ra, dec, ...) = 1`` and Qserv's
``qserv_areaspec_box|circle|ellipse|poly(...)``, which this rule also rewrites into the
equivalent sciSQL predicate on the table's columns. Anything else (OR, non-constant regions)
restricts nothing: the query visits every chunk, which is slower but never wrong.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from sqlglot import exp

from qengine.errors import QueryError, RegionError
from qengine.geometry import Box, Circle, Ellipse, Polygon, Region, region_from_qserv

__all__ = ["SpatialResult", "spatial_restriction", "constant"]

_AREASPEC_TO_SCISQL = {
    "qserv_areaspec_box": "scisql_s2PtInBox",
    "qserv_areaspec_circle": "scisql_s2PtInCircle",
    "qserv_areaspec_ellipse": "scisql_s2PtInEllipse",
    "qserv_areaspec_poly": "scisql_s2PtInCPoly",
}


@dataclass
class SpatialResult:
    select: exp.Select          # qserv_areaspec_* replaced by sciSQL predicates
    regions: list[Region]       # ANDed: the rows lie in all of them


def constant(node: exp.Expression) -> float | None:
    """The value of a constant numeric expression (literals, + - * /, unary minus), or None."""
    if isinstance(node, exp.Paren):
        return constant(node.this)
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return float(node.this)
        except ValueError:
            return None
    if isinstance(node, exp.Neg):
        v = constant(node.this)
        return None if v is None else -v
    if isinstance(node, exp.Cast):
        return constant(node.this)
    ops = {exp.Add: lambda a, b: a + b, exp.Sub: lambda a, b: a - b, exp.Mul: lambda a, b: a * b,
           exp.Div: lambda a, b: a / b if b else None}
    for cls, fn in ops.items():
        if type(node) is cls:
            a, b = constant(node.left), constant(node.right)
            return None if a is None or b is None else fn(a, b)
    if isinstance(node, exp.Anonymous) and node.name.upper() == "PI" and not node.expressions:
        return math.pi
    return None


def _fn(node: exp.Expression) -> tuple[str, list[exp.Expression]] | None:
    if isinstance(node, exp.Anonymous):
        return node.name, list(node.expressions)
    return None


class _Columns:
    """Recognises the table's ra/dec columns, bare or qualified by its alias/name."""

    def __init__(self, ra: str, dec: str, qualifiers: set[str], alias: str | None) -> None:
        self.ra, self.dec = ra.lower(), dec.lower()
        self.ra_name, self.dec_name, self.alias = ra, dec, alias
        self.qualifiers = {q.lower() for q in qualifiers}

    def is_col(self, node: exp.Expression, name: str) -> bool:
        if not isinstance(node, exp.Column) or node.name.lower() != name:
            return False
        return not node.table or node.table.lower() in self.qualifiers

    def is_position(self, ra: exp.Expression, dec: exp.Expression) -> bool:
        return self.is_col(ra, self.ra) and self.is_col(dec, self.dec)


def _consts(args: list[exp.Expression]) -> list[float] | None:
    vals = [constant(a) for a in args]
    return None if any(v is None for v in vals) else vals  # type: ignore[return-value]


def _truth(node: exp.Expression) -> exp.Expression | None:
    """The predicate inside ``f(...) = 1``, ``1 = f(...)``, ``f(...) <> 0`` or a bare call."""
    if isinstance(node, (exp.EQ, exp.NEQ)):
        left, right = node.left, node.right
        want = 1.0 if isinstance(node, exp.EQ) else 0.0
        if constant(right) == want and isinstance(left, exp.Anonymous):
            return left
        if constant(left) == want and isinstance(right, exp.Anonymous):
            return right
        return None
    if isinstance(node, exp.Anonymous):
        return node
    return None


def _region_of_adql(shape: exp.Expression) -> Region | None:
    f = _fn(shape)
    if f is None:
        return None
    name, args = f[0].upper(), f[1]
    vals = _consts(args)
    if vals is None:
        return None
    try:
        if name == "CIRCLE" and len(vals) == 3:
            return Circle(*vals)
        if name == "BOX" and len(vals) == 4:
            # A superset for chunk selection: the circle through the box's corners.
            half_diag = math.hypot(vals[2] / 2.0, vals[3] / 2.0)
            return Circle(vals[0], vals[1], min(180.0, half_diag * 1.05 + 1e-6))
        if name == "POLYGON" and len(vals) >= 6 and len(vals) % 2 == 0:
            return Polygon(list(zip(vals[0::2], vals[1::2])))
    except RegionError:
        return None
    return None


def _conjunct_region(node: exp.Expression, cols: _Columns) -> tuple[Region | None, exp.Expression]:
    """(region, replacement) for one conjunct; replacement differs only for qserv_areaspec_*."""
    # DISTANCE(POINT(ra, dec), POINT(a, b)) < r   (either orientation)
    if isinstance(node, (exp.LT, exp.LTE, exp.GT, exp.GTE)):
        dist, bound = (node.left, node.right) if isinstance(node, (exp.LT, exp.LTE)) else (node.right, node.left)
        f = _fn(dist)
        r = constant(bound)
        if f and f[0].upper() == "DISTANCE" and r is not None and len(f[1]) == 2:
            p1, p2 = _fn(f[1][0]), _fn(f[1][1])
            for a, b in ((p1, p2), (p2, p1)):
                if a and b and a[0].upper() == "POINT" == b[0].upper() and len(a[1]) == 2 and len(b[1]) == 2:
                    centre = _consts(b[1])
                    if cols.is_position(*a[1]) and centre is not None and 0 < r <= 180:
                        return Circle(centre[0], centre[1], r), node
        return None, node
    pred = _truth(node)
    if pred is None:
        return None, node
    name, args = pred.name, list(pred.expressions)
    low = name.lower()
    if low in _AREASPEC_TO_SCISQL:
        vals = _consts(args)
        if vals is None:
            raise QueryError(f"{low} takes constant numeric arguments", token=name)
        try:
            region = region_from_qserv(low, vals)
        except RegionError as exc:
            raise QueryError(str(exc), token=name) from None
        ra, dec = exp.column(cols.ra_name), exp.column(cols.dec_name)
        if cols.alias:
            ra, dec = exp.column(cols.ra_name, table=cols.alias), exp.column(cols.dec_name, table=cols.alias)
        call = exp.Anonymous(this=_AREASPEC_TO_SCISQL[low], expressions=[ra, dec] + [a.copy() for a in args])
        return region, exp.EQ(this=call, expression=exp.Literal.number(1))
    if name.upper() in ("CONTAINS", "INTERSECTS") and len(args) == 2:
        point, shape = _fn(args[0]), args[1]
        if name.upper() == "INTERSECTS" and not (point and point[0].upper() == "POINT"):
            point, shape = _fn(args[1]), args[0]
        if point and point[0].upper() == "POINT" and len(point[1]) == 2 and cols.is_position(*point[1]):
            return _region_of_adql(shape), node
        return None, node
    if low.startswith("scisql_s2ptin") and len(args) >= 2 and cols.is_position(args[0], args[1]):
        vals = _consts(args[2:])
        if vals is None:
            return None, node
        try:
            if low == "scisql_s2ptincircle" and len(vals) == 3:
                return Circle(*vals), node
            if low == "scisql_s2ptinbox" and len(vals) == 4:
                return Box.from_qserv(*vals), node
            if low == "scisql_s2ptinellipse" and len(vals) == 5:
                return Ellipse(*vals), node
            if low == "scisql_s2ptincpoly" and len(vals) >= 6 and len(vals) % 2 == 0:
                return Polygon(list(zip(vals[0::2], vals[1::2]))), node
        except RegionError:
            return None, node
    return None, node


def _conjuncts(node: exp.Expression | None) -> list[exp.Expression]:
    if node is None:
        return []
    if isinstance(node, exp.And):
        return _conjuncts(node.left) + _conjuncts(node.right)
    if isinstance(node, exp.Paren) and isinstance(node.this, exp.And):
        return _conjuncts(node.this)
    return [node]


def spatial_restriction(select: exp.Select, ra_column: str, dec_column: str,
                        qualifiers: set[str], alias: str | None = None, copy: bool = True,
                        nodes: list[exp.Expression] | None = None) -> SpatialResult:
    """Regions the WHERE clause confines (ra_column, dec_column) to, and the rewritten query
    (``copy=False``: ``select`` itself, rewritten in place, for a caller that owns it).
    ``nodes``: ``list(select.walk())`` when the caller has it: the rewritten query is then
    searched for areaspec calls left over only if ``select`` had one."""
    where = select.args.get("where")
    if where is None:
        return SpatialResult(select, [])
    cols = _Columns(ra_column, dec_column, qualifiers, alias)
    regions: list[Region] = []
    parts = []
    for c in _conjuncts(where.this):
        region, replacement = _conjunct_region(c, cols)
        if region is not None:
            regions.append(region)
        parts.append(replacement)
    out = select.copy() if copy else select
    out.set("where", exp.Where(this=exp.and_(*parts, copy=copy)) if parts else None)
    # areaspec calls nested anywhere else (e.g. under OR) cannot be rewritten safely.
    if nodes is not None and not any(isinstance(n, exp.Anonymous) and n.name.lower() in _AREASPEC_TO_SCISQL
                                     for n in nodes):
        return SpatialResult(out, regions)  # none before: none left
    for node in out.find_all(exp.Anonymous):
        if node.name.lower() in _AREASPEC_TO_SCISQL:
            raise QueryError(f"{node.name.lower()} must be a top-level condition of WHERE (joined with AND)",
                             token=node.name)
    return SpatialResult(out, regions)
