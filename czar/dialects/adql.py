"""ADQL 2.0/2.1 as a sqlglot dialect, and the normalisation of its geometry functions.

The dialect follows the ADQL 2.1 grammar (IVOA Recommendation, BNF in ivoa-std/ADQL
``adql.bnf``) on top of sqlglot's generic SQL dialect:

* ``SELECT [DISTINCT | ALL] [TOP n] ...`` -- ``TOP n`` becomes the Select's ``limit``
  (sqlglot's T-SQL handling of ``TokenType.TOP``); ``OFFSET n`` is kept; a ``LIMIT`` is
  accepted as an extension.
* ``'...'`` strings ('' escapes a quote, backslash is an ordinary character) and
  ``"..."`` delimited identifiers; unquoted identifiers are case-insensitive
  (normalisation strategy LOWERCASE, as PostgreSQL), their spelling is kept.
* NULLs sort as in PostgreSQL, on which most TAP services run: last in ascending,
  first in descending order (``Ordered.nulls_first`` is explicit in the tree).
* Mathematical functions of ADQL 2.1 section 2.3: ``LOG(x)`` is the natural logarithm
  (``exp.Ln``), ``LOG10(x)``, ``TRUNCATE(x[, n])`` (``exp.Trunc``), ``CEILING``, ``MOD``
  (remainder with the sign of x), ``POWER``, ``RAND([seed])``, ``ROUND(x[, n])``,
  ``DEGREES``, ``RADIANS``, ``PI()``, ``SQRT``, ``EXP``, ``ABS``, ``FLOOR`` and the trig
  functions including ``ATAN2`` and ``COT``; ``LOWER``/``UPPER``, ``||``, ``ILIKE``,
  ``COALESCE``, ``CAST``, ``UNION``/``EXCEPT``/``INTERSECT``, ``WITH``.
* ``STDDEV``/``VARIANCE`` are not in the standard; they are accepted with PostgreSQL's
  meaning (the *sample* standard deviation/variance, ``exp.Stddev``/``exp.Variance``),
  as PostgreSQL-based archives (Gaia, ESA, GAVO) do; ``STDDEV_POP``/``VAR_POP`` and
  ``STDDEV_SAMP``/``VAR_SAMP`` are explicit.
* Geometry functions (``POINT``, ``CIRCLE``, ``BOX``, ``POLYGON``, ``CONTAINS``,
  ``INTERSECTS``, ``DISTANCE``, ``AREA``, ``COORD1``, ``COORD2``, ``COORDSYS``,
  ``CENTROID``, ``REGION``) and ``IN_UNIT`` are parsed into ``exp.Anonymous`` nodes
  with upper-case names; :func:`normalize_geometry` then puts them in the normal form
  described in :mod:`czar.dialects`.
"""
from __future__ import annotations

from typing import ClassVar

from sqlglot import exp, parser, tokens
from sqlglot.dialects.dialect import Dialect, NormalizationStrategy
from sqlglot.errors import ParseError
from sqlglot.parser import SENTINEL_NONE
from sqlglot.tokens import TokenType

from qengine.errors import QueryError, QuerySyntaxError

__all__ = ["ACCEPTED_COORDSYS", "ADQL", "GEOMETRY_FUNCTIONS", "REGION_FUNCTIONS", "normalize_geometry"]

#: Geometry constructors (values) and the functions taking geometries.
REGION_FUNCTIONS = ("CIRCLE", "BOX", "POLYGON")
GEOMETRY_VALUES = ("POINT", *REGION_FUNCTIONS, "CENTROID", "REGION")
GEOMETRY_FUNCTIONS = (*GEOMETRY_VALUES, "CONTAINS", "INTERSECTS", "DISTANCE", "AREA",
                      "COORD1", "COORD2", "COORDSYS")

#: Coordinate-system words accepted (case-insensitively) as the optional first argument
#: of POINT/CIRCLE/BOX/POLYGON: the frame must be ICRS or J2000 (FK5 J2000 is taken as
#: ICRS: they differ by ~20 mas) or empty; ADQL 2.0/STC-S reference positions and the
#: SPHERICAL2 flavour may follow ('ICRS GEOCENTER').
ACCEPTED_COORDSYS = frozenset({"ICRS", "J2000"})
_REFPOS = frozenset({"GEOCENTER", "BARYCENTER", "HELIOCENTER", "TOPOCENTER", "UNKNOWNREFPOS",
                     "SPHERICAL2"})


# Words that sqlglot's generic tokenizer reserves for other dialects' syntax but that ADQL
# neither reserves nor uses: ordinary (column) names in ADQL.
_NOT_ADQL_KEYWORDS = frozenset({
    "QUALIFY", "GLOB", "RETURNING", "TABLESAMPLE", "NOTNULL", "ISNULL", "RLIKE", "REGEXP",
    "SETTINGS", "XOR", "DIV", "SORT BY", "CLUSTER BY", "DISTRIBUTE BY", "CONNECT BY", "PIVOT",
    "UNPIVOT", "STRAIGHT_JOIN", "KEEP", "OVERWRITE",
})


def _anonymous(name: str):
    def build(args: list) -> exp.Anonymous:
        return exp.Anonymous(this=name, expressions=args)
    return build


def _truncate(args: list) -> exp.Trunc:
    return exp.Trunc(this=args[0] if args else None, decimals=args[1] if len(args) > 1 else None)


class PositionedErrors:
    """Parser mixin: keep the token a ParseError is about (``error.qe_token``), so that
    errors can report the column where the token *starts*."""

    def raise_error(self, message, token=SENTINEL_NONE):  # type: ignore[override]
        tok = token or self._curr or self._prev  # type: ignore[attr-defined]
        at_end = not token and not self._curr  # type: ignore[attr-defined]
        try:
            super().raise_error(message, token)  # type: ignore[misc]
        except ParseError as err:
            err.qe_token = tok  # type: ignore[attr-defined]
            err.qe_at_end = at_end  # type: ignore[attr-defined]
            raise


class ADQL(Dialect):
    """ADQL 2.1 (also accepts ADQL 2.0 queries)."""

    NORMALIZATION_STRATEGY = NormalizationStrategy.LOWERCASE
    NULL_ORDERING = "nulls_are_large"
    LOG_BASE_FIRST = True

    class Tokenizer(tokens.Tokenizer):
        QUOTES: ClassVar = ["'"]
        IDENTIFIERS: ClassVar = ['"']
        STRING_ESCAPES: ClassVar = ["'"]
        HEX_STRINGS: ClassVar = [("0x", ""), ("0X", "")]  # ADQL 2.1 hexadecimal integers
        KEYWORDS: ClassVar = {
            **{k: v for k, v in tokens.Tokenizer.KEYWORDS.items() if k not in _NOT_ADQL_KEYWORDS},
            "TOP": TokenType.TOP,
        }

    class Parser(PositionedErrors, parser.Parser):
        LOG_DEFAULTS_TO_LN = True
        FUNCTIONS: ClassVar = {
            **parser.Parser.FUNCTIONS,
            **{name: _anonymous(name) for name in GEOMETRY_FUNCTIONS},
            "IN_UNIT": _anonymous("IN_UNIT"),
            "TRUNCATE": _truncate,
            "STDDEV": exp.Stddev.from_arg_list,
            "VARIANCE": exp.Variance.from_arg_list,
        }


# --------------------------------------------------------------------------- normalisation


def _pos(node: exp.Expression | None) -> dict:
    """line/column keyword arguments for QueryError: the position meta of ``node`` or,
    failing that, of its first descendant that has one (e.g. a Column's Identifier)."""
    if node is None:
        return {}
    for sub in node.walk():
        meta = getattr(sub, "_meta", None)  # don't create a meta dict per node
        if meta and "line" in meta and "col" in meta:
            return {"line": meta["line"], "column": meta["col"]}
    return {}


def _syntax(node: exp.Expression, message: str) -> QuerySyntaxError:
    token = node.name if isinstance(node, exp.Anonymous) else node.sql()
    return QuerySyntaxError(message, token=token, **_pos(node))


def _is_geom(node: object, *names: str) -> bool:
    return isinstance(node, exp.Anonymous) and node.name.upper() in names


def _strip_coordsys(node: exp.Anonymous) -> None:
    args = list(node.expressions)
    if not args:
        return
    first = args[0]
    if not (isinstance(first, exp.Literal) and first.is_string):
        return
    text = first.this
    words = text.upper().split()
    ok = not words or (words[0] in ACCEPTED_COORDSYS and all(w in _REFPOS for w in words[1:])) \
        or all(w in _REFPOS for w in words)
    if not ok:
        raise QueryError(
            f"coordinate system {text!r} is not supported: positions are ICRS; "
            "use 'ICRS' (or 'J2000', or '') or omit the argument",
            token=text, **_pos(first))
    node.set("expressions", args[1:])


def _flatten_points(args: list) -> list:
    """POINT(a, b) arguments given for a position -> a, b."""
    out = []
    for arg in args:
        if _is_geom(arg, "POINT") and len(arg.expressions) == 2:
            out.extend(arg.expressions)
        else:
            out.append(arg)
    return out


def _normalize_one(node: exp.Anonymous) -> exp.Expression:
    name = node.name.upper()
    node.set("this", name)
    if name in ("POINT", *REGION_FUNCTIONS):
        _strip_coordsys(node)
    args = list(node.expressions)
    n = len(args)
    if name == "POINT":
        if n != 2:
            raise _syntax(node, f"POINT takes a longitude and a latitude, got {n} argument(s)")
    elif name == "CIRCLE":
        # CIRCLE(ra, dec, r) or CIRCLE(POINT(ra, dec), r) (ADQL 2.1)
        if n == 2 and _is_geom(args[0], "POINT"):
            args = _flatten_points(args)
        elif n != 3:
            raise _syntax(node, "CIRCLE takes a centre (ra, dec or a POINT) and a radius, "
                                f"got {n} argument(s)")
    elif name == "BOX":
        if n == 3 and _is_geom(args[0], "POINT"):
            args = _flatten_points(args)
        elif n != 4:
            raise _syntax(node, "BOX takes a centre (ra, dec or a POINT), a width and a height, "
                                f"got {n} argument(s)")
    elif name == "POLYGON":
        if n >= 3 and all(_is_geom(a, "POINT") for a in args):
            args = _flatten_points(args)
        elif n < 6 or n % 2:
            raise _syntax(node, "POLYGON takes at least 3 vertices, as ra, dec pairs or POINTs, "
                                f"got {n} argument(s)")
    elif name == "DISTANCE":
        if n == 4:
            args = [exp.Anonymous(this="POINT", expressions=args[:2]),
                    exp.Anonymous(this="POINT", expressions=args[2:])]
        elif n != 2:
            raise _syntax(node, "DISTANCE takes two POINTs or four numbers "
                                f"(ra1, dec1, ra2, dec2), got {n} argument(s)")
    elif name in ("CONTAINS", "INTERSECTS") and n != 2:
        raise _syntax(node, f"{name} takes two geometries, got {n} argument(s)")
    elif name in ("AREA", "COORD1", "COORD2", "COORDSYS", "CENTROID", "REGION") and n != 1:
        raise _syntax(node, f"{name} takes one argument, got {n}")
    node.set("expressions", args)
    return node


def normalize_geometry(tree: exp.Expression) -> exp.Expression:
    """Put ADQL geometry calls in normal form, in place (see :mod:`czar.dialects`).

    Upper-case names, coordinate-system argument removed (refused unless ICRS-like),
    POINT-valued centres/vertices flattened to coordinates, DISTANCE in its two-POINT
    form. Arity errors raise QuerySyntaxError; a refused frame raises QueryError.
    """
    # Children before parents, so that a POINT inside CIRCLE/DISTANCE is already normal.
    for node in list(tree.walk(bfs=False))[::-1]:
        if isinstance(node, exp.Anonymous) and node.name.upper() in GEOMETRY_FUNCTIONS:
            _normalize_one(node)
    return tree
