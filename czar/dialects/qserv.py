"""Qserv's SQL: sqlglot's MySQL dialect plus Qserv's and sciSQL's functions.

As in Qserv (MySQL 8 underneath): backquoted identifiers, ``"..."`` and ``'...'`` strings
with backslash escapes, ``#``/``--``/``/* */`` comments, ``LIMIT [offset,] count``,
``DIV``/``MOD``, ``LOG(x)`` = ln, ``STD``/``STDDEV``/``STDDEV_POP`` = *population*
standard deviation (``exp.StddevPop``), ``VARIANCE``/``VAR_POP`` = population variance
(``exp.VariancePop``), ``STDDEV_SAMP``/``VAR_SAMP`` = sample ones, NULLs sort first in
ascending order.

Qserv's spatial restrictors ``qserv_areaspec_box(lonMin, latMin, lonMax, latMax)``,
``qserv_areaspec_circle(lon, lat, radius)``,
``qserv_areaspec_ellipse(lon, lat, semiMajorArcsec, semiMinorArcsec, posAngle)`` and
``qserv_areaspec_poly(lon1, lat1, lon2, lat2, lon3, lat3, ...)`` (any case, used bare in
the WHERE clause or as ``1 = qserv_areaspec_...(...)``) and the ``scisql_*`` functions
are ``exp.Anonymous`` nodes with lower-case names (:func:`normalize_qserv`).

MySQL semantics that DuckDB does not share are made explicit in the tree:
``x DIV 0`` and ``x MOD 0`` / ``x % 0`` are NULL in MySQL (DuckDB raises), so their
divisor becomes ``NULLIF(divisor, 0)``; ``a / b`` already carries sqlglot's ``safe``
flag (``a / NULLIF(b, 0)`` in DuckDB). MySQL's case-insensitive string collations are
not emulated: ``=`` and ``LIKE`` on strings are case-sensitive in DuckDB.
"""
from __future__ import annotations

from typing import ClassVar

from sqlglot import exp
from sqlglot.dialects.mysql import MySQL
from sqlglot.parsers.mysql import MySQLParser

from qengine.errors import QuerySyntaxError

from .adql import PositionedErrors, _pos

__all__ = ["AREASPEC_FUNCTIONS", "Qserv", "normalize_qserv"]

#: qserv_areaspec_* name -> allowed argument counts (None: polygon, even and >= 6).
AREASPEC_FUNCTIONS: dict[str, tuple[int, ...] | None] = {
    "qserv_areaspec_box": (4,),
    "qserv_areaspec_circle": (3,),
    "qserv_areaspec_ellipse": (5,),
    "qserv_areaspec_poly": None,
}


class Qserv(MySQL):
    """MySQL as Qserv accepts it, with Qserv's spatial functions."""

    class Parser(PositionedErrors, MySQLParser):
        FUNCTIONS: ClassVar = {
            **MySQLParser.FUNCTIONS,
            "STD": exp.StddevPop.from_arg_list,
            "STDDEV": exp.StddevPop.from_arg_list,
            "STDDEV_POP": exp.StddevPop.from_arg_list,
            "STDDEV_SAMP": exp.StddevSamp.from_arg_list,
            "VARIANCE": exp.VariancePop.from_arg_list,
            "VAR_POP": exp.VariancePop.from_arg_list,
            "VAR_SAMP": exp.Variance.from_arg_list,
        }


def _nullif_zero(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Nullif) or (isinstance(node, exp.Literal) and node.is_number
                                         and float(node.this) != 0.0):
        return node
    return exp.Nullif(this=node, expression=exp.Literal.number(0))


def normalize_qserv(tree: exp.Expression, *, mysql: bool = True) -> exp.Expression:
    """Lower-case qserv_areaspec_*/scisql_* names, check areaspec arities and make
    hexadecimal literals (``0x1F``) integers (any language); with ``mysql``, make MySQL's NULL on division by zero explicit for DIV
    and MOD. In place; returns ``tree``."""
    for node in list(tree.walk()):
        if isinstance(node, exp.Anonymous):
            lower = node.name.lower()
            if lower.startswith(("qserv_", "scisql_")):
                node.set("this", lower)
            if lower in AREASPEC_FUNCTIONS:
                n = len(node.expressions)
                allowed = AREASPEC_FUNCTIONS[lower]
                if (allowed is not None and n not in allowed) or (
                        allowed is None and (n < 6 or n % 2)):
                    want = ("an even number >= 6 of" if allowed is None
                            else " or ".join(map(str, allowed)))
                    raise QuerySyntaxError(f"{lower} takes {want} arguments, got {n}",
                                           token=lower, **_pos(node))
        elif isinstance(node, exp.HexString) and node.parent is not None:
            # 0x1F: an integer (ADQL 2.1; MySQL in numeric context), not a BLOB.
            try:
                node.replace(exp.Literal.number(str(int(node.this, 16))))
            except ValueError:
                pass
        elif mysql and isinstance(node, (exp.IntDiv, exp.Mod)):
            node.set("expression", _nullif_zero(node.expression))
    return tree
