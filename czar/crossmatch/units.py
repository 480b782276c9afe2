"""Units and UCDs of a crossmatch's result columns, as Arrow field metadata (``unit``, ``ucd``,
``description``: the keys the TAP VOTable encoder reads, as for any query's columns).

Catalogue columns carry their catalogue metadata, uploaded columns what the upload said about
them (VOTable FIELD unit/ucd), and separation columns - ``separation_arcsec`` of the API, or a
``DISTANCE(POINT, POINT)`` / ``scisql_angSep`` of the query, alone (deg) or times 60 (arcmin),
3600 (arcsec) or 3.6e6 (mas) - the UCD ``pos.angDistance`` with their unit.
"""
from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from sqlglot import exp

from czar.metadata import TableInfo
from czar.planner.distance import call_args
from czar.planner.spatial import constant

__all__ = ["SEPARATION_META", "annotate", "column_meta", "distance_unit", "field_meta", "select_meta"]

SEPARATION_META = {"unit": "arcsec", "ucd": "pos.angDistance",
                   "description": "Angular separation between the matched positions"}
_SCALES = {60.0: "arcmin", 3600.0: "arcsec", 3_600_000.0: "mas"}
Meta = dict[str, str]


def column_meta(info: TableInfo, name: str) -> Meta:
    """unit/ucd/description of a catalogue column (empty when it has none or is unknown)."""
    c = info.column(name)
    return {k: str(c[k]) for k in ("unit", "ucd", "description") if c and c.get(k)}


def field_meta(schema: pa.Schema, name: str) -> Meta:
    """unit/ucd/description an uploaded table's field carries (from its VOTable FIELD)."""
    i = schema.get_field_index(name)
    if i < 0:
        low = [j for j, n in enumerate(schema.names) if n.lower() == name.lower()]
        if len(low) != 1:
            return {}
        i = low[0]
    md = schema.field(i).metadata or {}
    out = {k.decode(): v.decode() for k, v in md.items()}
    return {k: out[k] for k in ("unit", "ucd", "description") if out.get(k)}


def _is_distance(node: exp.Expression) -> bool:
    while isinstance(node, exp.Paren):
        node = node.this
    args = call_args(node, "distance")
    if args is not None and len(args) in (2, 4):
        return True
    args = call_args(node, "scisql_angsep")
    return args is not None and len(args) == 4


def distance_unit(node: exp.Expression) -> str | None:
    """The unit of an angular distance expression (None: not one, or scaled otherwise)."""
    while isinstance(node, exp.Paren):
        node = node.this
    if _is_distance(node):
        return "deg"
    if isinstance(node, exp.Mul):
        for d, k in ((node.left, node.right), (node.right, node.left)):
            if _is_distance(d):
                return _SCALES.get(constant(k) or 0.0)
    return None


def select_meta(tree: exp.Select, column: Callable[[exp.Column], Meta], star: Callable[[str | None], dict[str, Meta]]
                ) -> dict[str, Meta]:
    """Output column name -> metadata for ``tree``'s select list: ``column`` gives a column
    reference's metadata, ``star`` those of ``*`` (None) or ``alias.*`` by output name."""
    out: dict[str, Meta] = {}
    for e in tree.expressions:
        inner = e.this if isinstance(e, exp.Alias) else e
        if isinstance(inner, exp.Star):
            out.update(star(None))
        elif isinstance(inner, exp.Column) and isinstance(inner.this, exp.Star):
            out.update(star(inner.table or None))
        elif isinstance(inner, exp.Column):
            md = column(inner)
            if md:
                out[e.alias_or_name] = md
        else:
            unit = distance_unit(inner)
            if unit and isinstance(e, exp.Alias):
                out[e.alias] = {"unit": unit, "ucd": "pos.angDistance"}
    return out


def annotate(table: pa.Table, meta: dict[str, Meta]) -> pa.Table:
    """``table`` with field metadata from ``meta`` (by column name; other fields unchanged)."""
    if not meta:
        return table
    fields = []
    for f in table.schema:
        md = meta.get(f.name)
        fields.append(f.with_metadata({**{k.decode(): v.decode() for k, v in (f.metadata or {}).items()}, **md})
                      if md else f)
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))
