"""DALI examples (``/tap/examples``): the science queries of the benchmark suite (LSST DP0.2
cone search, magnitude histogram, light curve, ...) where the served catalogue has their tables,
plus a cone search and a sample query per director table, so every deployment has runnable
examples. Written as XHTML with the RDFa terms DALI defines."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from czar.metadata import Metadata

__all__ = ["Example", "examples", "examples_xhtml"]

XHTML = "http://www.w3.org/1999/xhtml"
ET.register_namespace("", XHTML)


@dataclass
class Example:
    id: str
    name: str
    query: str
    description: str
    tables: tuple[str, ...]  # (database.table) the query reads
    columns: tuple[str, ...] = ()  # columns it needs in its first table


# From the benchmark suite (benchmarks/czar_bench.py) and the demo's examples, on LSST DP0.2.
_SUITE = [
    Example("dp02-cone", "Cone search: objects within 1 arcmin",
            "SELECT objectId, coord_ra, coord_dec, r_psfFlux FROM dp02.Object\n"
            "WHERE CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', 62.0, -37.0, 1/60.)) = 1",
            "A cone search: only the chunks the circle touches are read.", ("dp02.Object",),
            ("objectId", "coord_ra", "coord_dec", "r_psfFlux")),
    Example("dp02-dec-histogram", "Objects and mean r flux per degree of declination",
            "SELECT FLOOR(coord_dec) AS d, COUNT(*) AS n, AVG(r_psfFlux) AS f FROM dp02.Object\n"
            "GROUP BY d",
            "A full-scan aggregate, merged exactly from every worker's partial sums.", ("dp02.Object",),
            ("coord_dec", "r_psfFlux")),
    Example("dp02-star-counts", "Point-source counts per r magnitude",
            "SELECT FLOOR(31.4 - 2.5 * LOG10(r_psfFlux)) AS rmag, COUNT(*) AS n FROM dp02.Object\n"
            "WHERE r_psfFlux > 0 AND refExtendedness = 0\n"
            "GROUP BY rmag ORDER BY rmag",
            "Star counts per magnitude bin over the whole catalogue.", ("dp02.Object",),
            ("r_psfFlux", "refExtendedness")),
    Example("dp02-brightest", "The 10 brightest objects in a 2-degree box",
            "SELECT TOP 10 objectId, coord_ra, coord_dec, r_psfFlux FROM dp02.Object\n"
            "WHERE CONTAINS(POINT('ICRS', coord_ra, coord_dec), BOX('ICRS', 61, -39, 2, 2)) = 1\n"
            "ORDER BY r_psfFlux DESC",
            "A top-k: each worker returns its best rows, the czar keeps the global best.", ("dp02.Object",),
            ("objectId", "coord_ra", "coord_dec", "r_psfFlux")),
]


def _generic(meta: Metadata) -> list[Example]:
    out = []
    for t in sorted(meta.tables.values(), key=lambda t: (t.database.lower(), t.name.lower())):
        q = f"{t.database}.{t.name}"
        slug = f"{t.database}-{t.name}".lower()
        m = t.manifest
        order = f" ORDER BY {m.id_column}" if m.id_column else ""
        out.append(Example(f"{slug}-sample", f"Ten rows of {q}", f"SELECT TOP 10 * FROM {q}{order}",
                           f"A first look at {q} ({m.role} table).", (q,)))
        if m.role == "director" and m.ra_column and m.dec_column and t.chunk_ids() and t.chunker():
            b = t.chunker().chunk_bounds(t.chunk_ids()[len(t.chunk_ids()) // 2])
            ra = round(float(b.ra_min[0] + b.ra_max[0]) / 2, 3)
            dec = round(float(b.dec_min[0] + b.dec_max[0]) / 2, 3)
            cols = ", ".join(c for c in (m.id_column, m.ra_column, m.dec_column) if c)
            out.append(Example(
                f"{slug}-cone", f"Cone search in {q}",
                f"SELECT {cols} FROM {q}\nWHERE CONTAINS(POINT('ICRS', {m.ra_column}, {m.dec_column}), "
                f"CIRCLE('ICRS', {ra}, {dec}, 1.0)) = 1",
                f"Rows of {q} within 1 degree of ({ra}, {dec}).", (q,)))
    out.append(Example("tap-schema-columns", "Columns of every table",
                       "SELECT table_name, column_name, datatype, unit, ucd FROM TAP_SCHEMA.columns\n"
                       "ORDER BY table_name, column_index",
                       "The service's metadata, queryable in ADQL.", ("TAP_SCHEMA.columns",)))
    return out


def _available(ex: Example, meta: Metadata) -> bool:
    for i, name in enumerate(ex.tables):
        db, _, table = name.partition(".")
        if db.upper() == "TAP_SCHEMA":
            continue
        t = meta.tables.get((db.lower(), table.lower()))
        if t is None:
            return False
        if i == 0 and any(t.column(c) is None for c in ex.columns):
            return False
    return True


def examples(meta: Metadata) -> list[Example]:
    """The examples whose tables and columns this catalogue has."""
    return [ex for ex in _SUITE + _generic(meta) if _available(ex, meta)]


def examples_xhtml(meta: Metadata) -> bytes:
    html = ET.Element(f"{{{XHTML}}}html")
    head = ET.SubElement(html, f"{{{XHTML}}}head")
    ET.SubElement(head, f"{{{XHTML}}}title").text = "qengine TAP examples"
    body = ET.SubElement(html, f"{{{XHTML}}}body", {"vocab": "ivo://ivoa.net/std/DALI-examples#"})
    ET.SubElement(body, f"{{{XHTML}}}h1").text = "Example queries"
    for ex in examples(meta):
        div = ET.SubElement(body, f"{{{XHTML}}}div", {"id": ex.id, "resource": f"#{ex.id}", "typeof": "example"})
        ET.SubElement(div, f"{{{XHTML}}}h2", {"property": "name"}).text = ex.name
        ET.SubElement(div, f"{{{XHTML}}}p").text = ex.description
        ET.SubElement(div, f"{{{XHTML}}}pre", {"property": "query"}).text = ex.query
        for name in ex.tables:
            ET.SubElement(div, f"{{{XHTML}}}span", {"property": "table", "style": "display:none"}).text = name
    return ET.tostring(html, encoding="UTF-8", xml_declaration=True)
