"""Distance predicates between two positions in a parsed query, as the near-neighbour and
crossmatch planners both recognise them: ``scisql_angSep(...) < r``, ``DISTANCE(POINT, POINT) < r``,
``CONTAINS(POINT, CIRCLE) = 1`` / ``INTERSECTS``, ``scisql_s2PtInCircle(...) = 1`` (either way round)."""
from __future__ import annotations

from sqlglot import exp

from czar.planner.spatial import constant

__all__ = ["conjuncts", "call_args", "true_call", "distance_form"]


def conjuncts(node: exp.Expression | None) -> list[exp.Expression]:
    """The AND-ed conditions of ``node`` (a WHERE or ON condition), parentheses opened."""
    if node is None:
        return []
    if isinstance(node, exp.And):
        return conjuncts(node.left) + conjuncts(node.right)
    if isinstance(node, exp.Paren):
        return conjuncts(node.this) if isinstance(node.this, exp.And) else [node.this]
    return [node]


def call_args(node: exp.Expression, *names: str) -> list[exp.Expression] | None:
    """The arguments of a call to one of ``names`` (case-insensitive), else None."""
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.Anonymous) and node.name.lower() in names:
        return list(node.expressions)
    return None


def true_call(node: exp.Expression) -> exp.Expression | None:
    """The call inside ``f(...) = 1``, ``1 = f(...)``, ``f(...) <> 0`` or a bare call."""
    if isinstance(node, (exp.EQ, exp.NEQ)):
        want = 1.0 if isinstance(node, exp.EQ) else 0.0
        if constant(node.right) == want:
            return node.left
        if constant(node.left) == want:
            return node.right
        return None
    return node


def distance_form(node: exp.Expression) -> tuple[list[exp.Expression], exp.Expression] | None:
    """([ra1, dec1, ra2, dec2], radius expression) of a distance-bounding conjunct, else None."""
    if isinstance(node, (exp.LT, exp.LTE, exp.GT, exp.GTE)):
        dist, bound = (node.left, node.right) if isinstance(node, (exp.LT, exp.LTE)) else (node.right, node.left)
        args = call_args(dist, "scisql_angsep")
        if args is not None and len(args) == 4:
            return args, bound
        args = call_args(dist, "distance")
        if args is not None and len(args) == 2:
            p1, p2 = call_args(args[0], "point"), call_args(args[1], "point")
            if p1 is not None and p2 is not None and len(p1) == 2 == len(p2):
                return p1 + p2, bound
        return None
    call = true_call(node)
    if call is None:
        return None
    args = call_args(call, "scisql_s2ptincircle")
    if args is not None and len(args) == 5:
        return args[:4], args[4]
    for name in ("contains", "intersects"):
        args = call_args(call, name)
        if args is None or len(args) != 2:
            continue
        point, circle = call_args(args[0], "point"), call_args(args[1], "circle")
        if name == "intersects" and point is None:
            point, circle = call_args(args[1], "point"), call_args(args[0], "circle")
        if point is not None and circle is not None and len(point) == 2 and len(circle) == 3:
            return point + circle[:2], circle[2]
    return None

