"""Director-index restriction: ``id = x``, ``id IN (...)`` and ``id BETWEEN a AND b`` on the
director key (top-level AND conjuncts) narrow the chunks visited to those holding the ids."""
from __future__ import annotations

from dataclasses import dataclass

from sqlglot import exp

from czar.planner.spatial import _conjuncts, constant

__all__ = ["IdRestriction", "id_restriction"]


@dataclass
class IdRestriction:
    ids: list[int] | None = None             # an explicit list
    range: tuple[int, int] | None = None     # inclusive bounds

    def sql_condition(self, column: str = "id") -> str:
        if self.ids is not None:
            return f"{column} IN ({', '.join(str(i) for i in self.ids) or 'NULL'})"
        lo, hi = self.range  # type: ignore[misc]
        return f"{column} BETWEEN {lo} AND {hi}"


def _is_id(node: exp.Expression, id_column: str, qualifiers: set[str]) -> bool:
    return (isinstance(node, exp.Column) and node.name.lower() == id_column.lower()
            and (not node.table or node.table.lower() in qualifiers))


def _int(node: exp.Expression) -> int | None:
    """An integer constant, exactly (64-bit ids do not survive a trip through float)."""
    sign = 1
    while isinstance(node, (exp.Neg, exp.Paren)):
        sign = -sign if isinstance(node, exp.Neg) else sign
        node = node.this
    if isinstance(node, exp.Literal) and not node.is_string:
        try:
            return sign * int(node.this)
        except ValueError:
            pass
    v = constant(node)
    if v is None or not float(v).is_integer() or abs(v) >= 2**53:
        return None
    return sign * int(v)


def id_restriction(select: exp.Select, id_column: str, qualifiers: set[str]) -> IdRestriction | None:
    """The tightest id restriction among the WHERE clause's top-level conjuncts, if any."""
    where = select.args.get("where")
    qual = {q.lower() for q in qualifiers}
    best: IdRestriction | None = None
    for c in _conjuncts(where.this if where is not None else None):
        found = None
        if isinstance(c, exp.EQ):
            for a, b in ((c.left, c.right), (c.right, c.left)):
                if _is_id(a, id_column, qual) and _int(b) is not None:
                    found = IdRestriction(ids=[_int(b)])
        elif isinstance(c, exp.In) and _is_id(c.this, id_column, qual) and not c.args.get("query"):
            vals = [_int(e) for e in c.expressions]
            if vals and all(v is not None for v in vals):
                found = IdRestriction(ids=sorted(set(vals)))
        elif isinstance(c, exp.Between) and _is_id(c.this, id_column, qual):
            lo, hi = _int(c.args["low"]), _int(c.args["high"])
            if lo is not None and hi is not None:
                found = IdRestriction(range=(lo, hi))
        if found is not None and (best is None or best.ids is None):
            best = found
    return best
