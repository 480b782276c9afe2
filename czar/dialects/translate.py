"""Translation of a normalised query tree (:func:`czar.dialects.parse`) to DuckDB SQL.

Geometry is translated into the workers' SQL macros (``qengine/sqlfuncs.py``):

* ``CONTAINS(POINT(a, b), CIRCLE(c, d, r))`` -> ``qe_in_circle(a, b, c, d, r)``;
  ``BOX(c, d, w, h)`` -> ``qe_in_adql_box(a, b, c, d, w, h)`` (the ADQL box: great-circle
  sides, width and height measured along the axes through the centre);
  ``POLYGON(...)`` -> ``qe_in_polygon(a, b, ra1, dec1, ...)`` (3 to
  :data:`MAX_POLYGON_VERTICES` vertices, convex); ``CONTAINS(CIRCLE, CIRCLE)`` ->
  ``qe_distance(centres) + r1 <= r2``. ``INTERSECTS(POINT, region)`` (either order) is
  CONTAINS; ``INTERSECTS(CIRCLE, CIRCLE)`` -> ``qe_distance(centres) <= r1 + r2``. Other
  combinations raise QueryError ("... is not supported").
* A predicate compared with 0 or 1 (``= 1``, ``1 =``, ``= 0``, ``<> 0``, ``!= 1`` ...)
  becomes the BOOLEAN predicate or its negation; a bare CONTAINS/INTERSECTS in a
  boolean context (WHERE, HAVING, ON, CASE WHEN, AND/OR/NOT) the predicate; anywhere
  else (SELECT list, arithmetic, other comparisons) ``CAST(predicate AS INTEGER)``,
  ADQL's 1/0 value. Like the macros, the predicates are NULL when a position or a
  region parameter is NULL or invalid.
* ``DISTANCE(POINT(a, b), POINT(c, d))`` -> ``qe_distance(a, b, c, d)`` (degrees).
* ``COORD1(POINT(a, b))`` -> ``a``, ``COORD2`` -> ``b``; ``COORDSYS(g)`` -> ``'ICRS'``;
  ``CENTROID(CIRCLE|BOX)`` -> the centre (``CENTROID(POLYGON)`` is refused).
* ``AREA`` in square degrees, closed forms: circle ``(180/pi)^2 2 pi (1 - cos r)``
  (written with sin^2(r/2)); ADQL box ``(180/pi)^2 4 asin(sin(w/2) sin(h/2))`` (the solid
  angle of the gnomonic rectangle); polygon: sum over the fan of triangles from the
  first vertex of Oosterom & Strackee's ``2 atan2(a.(b x c), 1 + a.b + b.c + c.a)``
  (as qengine.geometry.Polygon.area), absolute value, folded to a literal when the
  vertices are literals; point 0.

Refused with QueryError:

* geometry values (POINT, CIRCLE, BOX, POLYGON, CENTROID) in the SELECT list: "geometry
  values in the SELECT list are not supported yet"; elsewhere outside the functions
  above; geometry-valued columns (only POINT(ra, dec) built from numeric columns);
  ``REGION`` (STC-S strings); ``IN_UNIT``; CAST to a geometry type.
* ``qserv_areaspec_*`` still present: the planner replaces them by the director
  table's position predicate before translation ("qserv_areaspec_* needs a partitioned
  table in FROM").
* ``scisql_*`` functions the workers do not provide (:data:`SCISQL_FUNCTIONS`); the
  others pass through unchanged.
* anything sqlglot's DuckDB generator reports as unsupported (e.g. ``RAND(seed)``).

An unaliased CONTAINS/INTERSECTS/DISTANCE/AREA/COORD1/COORD2/COORDSYS in a SELECT list
is aliased with the function's name in lower case (``distance``). ``exp.IntDiv`` (MySQL
``DIV``: truncating division, also of non-integers; DuckDB's ``//`` of DOUBLEs does not
truncate) -> ``round((a - a % b) // b)``, exact for integers. Everything else is sqlglot's
DuckDB generator (``expr.sql(dialect="duckdb")``), comments dropped, function names kept
as written. The input tree is not modified.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, UnsupportedError

from qengine.errors import QueryError

from .adql import GEOMETRY_FUNCTIONS, GEOMETRY_VALUES, _pos, normalize_geometry

__all__ = ["MAX_POLYGON_VERTICES", "SCISQL_FUNCTIONS", "to_duckdb"]

#: sciSQL functions the workers provide (lower case; qengine.sqlfuncs.SQL_FUNCTIONS).
SCISQL_FUNCTIONS = frozenset(name.lower() for name in (
    "scisql_angSep", "scisql_s2PtInBox", "scisql_s2PtInCircle", "scisql_s2PtInEllipse",
    "scisql_s2PtInCPoly", "scisql_fluxToAbMag", "scisql_fluxToAbMagSigma",
    "scisql_abMagToFlux", "scisql_abMagToFluxSigma", "scisql_nanojanskyToAbMag",
    "scisql_nanojanskyToAbMagSigma", "scisql_abMagToNanojansky",
    "scisql_abMagToNanojanskySigma",
))

#: Vertex limit of the workers' qe_in_polygon (qengine.sqlfuncs.MAX_POLYGON_VERTICES).
MAX_POLYGON_VERTICES = 30

_PRED = "qe_geom_pred"  # meta flag of CAST(<predicate> AS INTEGER) nodes




def _error(node: exp.Expression, message: str, token: str | None = None) -> QueryError:
    if token is None and isinstance(node, exp.Anonymous):
        token = node.name
    return QueryError(message, token=token, **_pos(node))


def _name(node: object) -> str:
    return node.name.upper() if isinstance(node, exp.Anonymous) else ""


def _paren(node: exp.Expression) -> exp.Expression:
    if isinstance(node, (exp.Column, exp.Literal, exp.Func, exp.Paren, exp.Null, exp.Boolean)):
        return node
    return exp.Paren(this=node)


@functools.cache
def _template_tree(sql: str) -> exp.Expression:
    return sqlglot.parse_one(sql, read="duckdb")


def _template(sql: str, **subs: exp.Expression) -> exp.Expression:
    """Parse ``sql`` (DuckDB) and replace the columns named like ``subs`` keys by copies
    of the given expressions (parenthesised where needed)."""
    tree = _template_tree(sql).copy()
    for col in list(tree.find_all(exp.Column)):
        if not col.table and col.name in subs:
            col.replace(_paren(subs[col.name].copy()))
    return tree


def _call(name: str, args: list[exp.Expression]) -> exp.Anonymous:
    """A call of one of the workers' macros on ``args``, which it takes over: the geometry
    call they come from is replaced by it, in a tree that is to_duckdb's own (no copies:
    copying the arguments, with their position metadata, was most of a translation)."""
    return exp.Anonymous(this=name, expressions=list(args))


# --------------------------------------------------------------------------- geometry values


def _geom(node: exp.Expression, context: str) -> tuple[str, list[exp.Expression]]:
    """(kind, coordinates) of a geometry value: POINT [ra, dec], CIRCLE [ra, dec, r],
    BOX [ra, dec, w, h], POLYGON [ra1, dec1, ...]."""
    name = _name(node)
    args = list(node.expressions) if isinstance(node, exp.Anonymous) else []
    if name in ("POINT", "CIRCLE", "BOX", "POLYGON"):
        return name, args
    if name == "CENTROID":
        kind, inner = _geom(args[0], "CENTROID")
        if kind in ("POINT", "CIRCLE", "BOX"):
            return "POINT", inner[:2]
        raise _error(node, f"CENTROID of a {kind} is not supported")
    if name == "REGION":
        raise _error(node, "REGION (STC-S region strings) is not supported; use POINT, "
                           "CIRCLE, BOX or POLYGON")
    if isinstance(node, exp.Paren):
        return _geom(node.this, context)
    raise _error(node, f"{context} needs a geometry built with POINT, CIRCLE, BOX or POLYGON; "
                       f"{node.sql()!r} is not one (geometry-valued columns are not supported: "
                       "write POINT(ra, dec) with the position columns)", token=node.sql())


def _region_predicate(node: exp.Expression, point: list, kind: str, reg: list) -> exp.Expression:
    if kind == "CIRCLE":
        return _call("qe_in_circle", point + reg)
    if kind == "BOX":
        return _call("qe_in_adql_box", point + reg)
    if kind == "POLYGON":
        n = len(reg) // 2
        if n > MAX_POLYGON_VERTICES:
            raise _error(node, f"POLYGON with {n} vertices: at most {MAX_POLYGON_VERTICES} "
                               "are supported")
        return _call("qe_in_polygon", point + reg)
    raise _error(node, f"{_name(node)}(POINT, {kind}) is not supported")


def _predicate(node: exp.Anonymous) -> exp.Expression:
    """BOOLEAN SQL for CONTAINS(a, b) / INTERSECTS(a, b)."""
    name = _name(node)
    (k1, a1), (k2, a2) = (_geom(arg, name) for arg in node.expressions)
    if name == "INTERSECTS" and k2 == "POINT" and k1 != "POINT":
        (k1, a1), (k2, a2) = (k2, a2), (k1, a1)
    if k1 == "POINT" and k2 in ("CIRCLE", "BOX", "POLYGON"):
        return _region_predicate(node, a1, k2, a2)
    if k1 == "CIRCLE" and k2 == "CIRCLE":
        dist = _call("qe_distance", a1[:2] + a2[:2])
        if name == "CONTAINS":
            return _template("d + r1 <= r2", d=dist, r1=a1[2], r2=a2[2])
        return _template("d <= r1 + r2", d=dist, r1=a1[2], r2=a2[2])
    raise _error(node, f"{name}({k1}, {k2}) is not supported: use CONTAINS(POINT, CIRCLE|BOX|"
                       "POLYGON), CONTAINS(CIRCLE, CIRCLE), INTERSECTS(POINT, region) or "
                       "INTERSECTS(CIRCLE, CIRCLE)")


@functools.cache
def _integer_type() -> exp.DataType:
    return exp.DataType.build("INTEGER")


def _marked(pred: exp.Expression) -> exp.Cast:
    cast = exp.Cast(this=pred, to=_integer_type().copy())  # copied: building it parses "INTEGER"
    cast.meta[_PRED] = True
    return cast


def _is_marked(node: object) -> bool:
    return isinstance(node, exp.Cast) and bool(getattr(node, "_meta", None)) \
        and node.meta.get(_PRED, False)


def _negate(pred: exp.Expression) -> exp.Expression:
    return exp.Not(this=pred if isinstance(pred, exp.Func) else exp.Paren(this=pred))


_AREA_CIRCLE = "(129600.0 / pi()) * pow(sin(radians(r) / 2), 2)"
_AREA_BOX = "(129600.0 / pow(pi(), 2)) * asin(sin(radians(w) / 2) * sin(radians(h) / 2))"


def _number(node: exp.Expression) -> float | None:
    """The value of a numeric literal (possibly negated or parenthesised), else None."""
    if isinstance(node, exp.Paren):
        return _number(node.this)
    if isinstance(node, exp.Neg):
        value = _number(node.this)
        return None if value is None else -value
    if isinstance(node, exp.Literal) and node.is_number:
        try:
            return float(node.this)
        except ValueError:
            return None
    return None


def _double(x: float) -> exp.Literal:
    """A literal DuckDB reads as the DOUBLE ``x`` (exponent form; 1.5 would be DECIMAL)."""
    text = repr(float(x))
    return exp.Literal.number(text if "e" in text else text + "e0")


def _fan_area(values: list[float]) -> float:
    """The polygon-area formula of :func:`_polygon_area`, evaluated in Python."""
    ra = np.radians(values[0::2])
    dec = np.radians(values[1::2])
    v = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=1)
    a, b, c = v[0], v[1:-1], v[2:]
    triple = np.cross(b - a, c - a) @ a
    den = 1.0 + b @ a + np.einsum("ij,ij->i", b, c) + c @ a
    return float(abs(np.sum(2.0 * np.arctan2(triple, den)))) * (180.0 / math.pi) ** 2


def _polygon_area(coords: list[exp.Expression]) -> exp.Expression:
    values = [_number(c) for c in coords]
    if all(v is not None for v in values):  # literal vertices: fold the constant here
        area = _fan_area(values)
        if math.isfinite(area):
            return _double(area)
    n = len(coords) // 2
    subs = {f"ra{i}": coords[2 * i] for i in range(n)}
    subs.update({f"de{i}": coords[2 * i + 1] for i in range(n)})

    def comp(i: int) -> tuple[str, str, str]:
        return (f"(cos(radians(de{i})) * cos(radians(ra{i})))",
                f"(cos(radians(de{i})) * sin(radians(ra{i})))",
                f"sin(radians(de{i}))")

    ax, ay, az = comp(0)
    terms = []
    for i in range(1, n - 1):
        bx, by, bz = comp(i)
        cx, cy, cz = comp(i + 1)
        # u = b - a, w = c - a; triple = a . (u x w) keeps precision for small polygons.
        ux, uy, uz = f"({bx} - {ax})", f"({by} - {ay})", f"({bz} - {az})"
        wx, wy, wz = f"({cx} - {ax})", f"({cy} - {ay})", f"({cz} - {az})"
        triple = (f"{ax} * ({uy} * {wz} - {uz} * {wy}) + {ay} * ({uz} * {wx} - {ux} * {wz}) + "
                  f"{az} * ({ux} * {wy} - {uy} * {wx})")
        den = (f"1 + {ax} * {bx} + {ay} * {by} + {az} * {bz} + {bx} * {cx} + {by} * {cy} + "
               f"{bz} * {cz} + {cx} * {ax} + {cy} * {ay} + {cz} * {az}")
        terms.append(f"2 * atan2({triple}, {den})")
    sql = f"(32400.0 / pow(pi(), 2)) * abs({' + '.join(terms)})"
    return _template(sql, **subs)


def _area(node: exp.Anonymous) -> exp.Expression:
    kind, args = _geom(node.expressions[0], "AREA")
    if kind == "POINT":
        return _double(0.0)
    if kind == "CIRCLE":
        return exp.Paren(this=_template(_AREA_CIRCLE, r=args[2]))
    if kind == "BOX":
        return exp.Paren(this=_template(_AREA_BOX, w=args[2], h=args[3]))
    if len(args) // 2 > MAX_POLYGON_VERTICES:
        raise _error(node, f"AREA of a POLYGON with {len(args) // 2} vertices: at most "
                           f"{MAX_POLYGON_VERTICES} are supported")
    return exp.Paren(this=_polygon_area(args))


def _point_of(node: exp.Anonymous, fname: str) -> list[exp.Expression]:
    kind, args = _geom(node, fname)
    if kind != "POINT":
        raise _error(node, f"{fname} takes POINTs, got a {kind}")
    return args


# --------------------------------------------------------------------------- rewriting


def _rewrite_node(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Anonymous):
        lower = node.name.lower()
        upper = lower.upper()
        if lower.startswith("qserv_areaspec_"):
            raise _error(node, f"{lower} needs a partitioned table in FROM: it restricts the "
                               "director table's position and cannot be translated on its own")
        if lower.startswith("scisql_") and lower not in SCISQL_FUNCTIONS:
            raise _error(node, f"unknown sciSQL function {node.name}; available: "
                               + ", ".join(sorted(SCISQL_FUNCTIONS)))
        if upper in ("CONTAINS", "INTERSECTS"):
            return _marked(_predicate(node))
        if upper == "DISTANCE":
            p1, p2 = (_point_of(arg, "DISTANCE") for arg in node.expressions)
            return _call("qe_distance", p1 + p2)
        if upper in ("COORD1", "COORD2"):
            args = _point_of(node.expressions[0], upper)
            return _paren(args[0 if upper == "COORD1" else 1].copy())
        if upper == "AREA":
            return _area(node)
        if upper == "COORDSYS":
            _geom(node.expressions[0], "COORDSYS")
            return exp.Literal.string("ICRS")
        if upper == "IN_UNIT":
            raise _error(node, "IN_UNIT is not supported")
        if upper == "REGION":
            _geom(node, "REGION")
        return node
    if isinstance(node, (exp.EQ, exp.NEQ)):
        for pred_side, other in ((node.this, node.expression), (node.expression, node.this)):
            if _is_marked(pred_side) and isinstance(other, exp.Literal) and other.is_int \
                    and other.to_py() in (0, 1):
                positive = (other.to_py() == 1) == isinstance(node, exp.EQ)
                pred = pred_side.this
                return pred if positive else _negate(pred)
        return node
    if isinstance(node, exp.IntDiv):
        a, b = node.this, node.expression
        return _template("round((a - a % b) // b)", a=a, b=b)
    if isinstance(node, exp.Cast):
        to = node.args.get("to")
        if isinstance(to, exp.DataType) and to.this == exp.DataType.Type.USERDEFINED \
                and str(to.args.get("kind", "")).upper() in ("POINT", "CIRCLE", "POLYGON", "BOX"):
            raise _error(node, f"CAST to {to.args.get('kind')} is not supported",
                         token=str(to.args.get("kind")))
    return node


# Nodes _rewrite_node leaves as they are, as it does all their descendants (a column of
# identifiers too; not alias.* with a star's own arguments).
_LEAVES = (exp.Identifier, exp.Literal)


def _rewrite(node: exp.Expression) -> exp.Expression:
    """Post-order rewrite (children first); a SELECT's geometry columns are named first
    (:func:`_name_projections`), in the same pass."""
    if isinstance(node, _LEAVES) or (isinstance(node, exp.Column) and isinstance(node.this, exp.Identifier)):
        return node  # nothing below a column, name or literal is rewritten: don't descend
    if isinstance(node, exp.Select):
        _name_projections(node)
    for key, value in list(node.args.items()):
        if isinstance(value, exp.Expression):
            new = _rewrite(value)
            if new is not value:
                node.set(key, new)
        elif isinstance(value, list) and any(isinstance(v, exp.Expression) for v in value):
            new_list = [_rewrite(v) if isinstance(v, exp.Expression) else v for v in value]
            if any(a is not b for a, b in zip(new_list, value)):
                node.set(key, new_list)
    return _rewrite_node(node)


def _as_bool(node: exp.Expression | None) -> exp.Expression | None:
    """In a boolean context: CAST(<predicate> AS INTEGER) -> <predicate>."""
    if node is None:
        return None
    if _is_marked(node):
        return node.this
    if isinstance(node, (exp.And, exp.Or)):
        node.set("this", _as_bool(node.this))
        node.set("expression", _as_bool(node.expression))
    elif isinstance(node, (exp.Not, exp.Paren)):
        node.set("this", _as_bool(node.this))
    return node


def _boolean_contexts(tree: exp.Expression, nodes: list[exp.Expression] | None = None) -> None:
    """``nodes``: ``list(tree.walk())`` when the caller has it."""
    for node in list(tree.walk()) if nodes is None else nodes:
        if isinstance(node, (exp.Where, exp.Having, exp.Qualify, exp.If)):
            node.set("this", _as_bool(node.this))
        elif isinstance(node, exp.Join) and node.args.get("on") is not None:
            node.set("on", _as_bool(node.args["on"]))
        elif isinstance(node, (exp.And, exp.Or, exp.Not)):
            _as_bool(node)


def _in_select_list(node: exp.Expression) -> bool:
    child, parent = node, node.parent
    while parent is not None:
        if isinstance(parent, exp.Select):
            return child.arg_key == "expressions"
        child, parent = parent, parent.parent
    return False


_GEOMETRY_NAMES = frozenset(GEOMETRY_VALUES) | frozenset(GEOMETRY_FUNCTIONS)


def _check_leftovers(tree: exp.Expression) -> None:
    for node in tree.walk():
        name = _name(node)
        if name in GEOMETRY_VALUES:
            if _in_select_list(node):
                raise _error(node, f"geometry values in the SELECT list are not supported yet "
                                   f"({name}); select the coordinates instead, e.g. "
                                   "COORD1(p), COORD2(p) or the ra/dec columns")
            raise _error(node, f"{name} can only be used inside CONTAINS, INTERSECTS, "
                               "DISTANCE, AREA, COORD1, COORD2, COORDSYS or CENTROID")
        if name in GEOMETRY_FUNCTIONS:  # pragma: no cover - all rewritten above
            raise _error(node, f"{name} is not supported here")


_NAMED = ("CONTAINS", "INTERSECTS", "DISTANCE", "AREA", "COORD1", "COORD2", "COORDSYS")


def _name_projections(select: exp.Select) -> None:
    """An unaliased geometry function in a SELECT list is named after the function
    (``distance``), as PostgreSQL-based TAP services do, not after its translation. In place
    (the tree is to_duckdb's own: the call moves under its alias, uncopied)."""
    projs = select.expressions
    if any(_name(p) in _NAMED for p in projs):
        select.set("expressions", [exp.alias_(p, p.name.lower(), copy=False) if _name(p) in _NAMED else p
                                   for p in projs])



def to_duckdb(expr: exp.Expression, *, copy: bool = True, normalized: bool = False) -> str:
    """DuckDB SQL for a tree produced by :func:`czar.dialects.parse` (see module doc).

    ``copy=False`` lets the translation rewrite ``expr`` in place (for callers that own it:
    copying a tree costs about as much as translating it). ``normalized=True``: the geometry
    calls are in parse's normal form already (a parsed tree as the planner rewrote it), so
    :func:`normalize_geometry` (a walk over the tree) is skipped."""
    if not isinstance(expr, exp.Expression):
        raise TypeError(f"to_duckdb needs a sqlglot expression, got {type(expr).__name__}")
    tree = expr.copy() if copy else expr
    if not normalized:
        tree = normalize_geometry(tree)
    tree = _rewrite(tree)  # names the geometry columns too
    nodes = list(tree.walk())
    _boolean_contexts(tree, nodes)
    # _boolean_contexts only unwraps CASTs: a geometry call left over is among these nodes. The
    # check walks the tree again only then, to report the one it always reported.
    if any(_name(n) in _GEOMETRY_NAMES for n in nodes):
        _check_leftovers(tree)
    try:
        # the tree is this function's own (copied above or given away): no copy in the generator
        return tree.sql(dialect="duckdb", copy=False, unsupported_level=ErrorLevel.RAISE, comments=False,
                        normalize_functions=False)
    except UnsupportedError as err:
        raise QueryError(f"cannot be translated to DuckDB: {err}") from None
