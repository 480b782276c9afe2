"""VOSI documents: capabilities (TAP 1.1 with TAPRegExt), availability and the tableset,
built with ElementTree from the service limits and the TAP_SCHEMA records."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from czar.tap.params import FORMATS, Limits
from czar.tap.tap_schema import ColumnDesc, SchemaDesc, TableDesc

__all__ = ["GEOMETRY_FEATURES", "availability_xml", "capabilities_xml", "table_xml", "tableset_xml"]

XSI = "http://www.w3.org/2001/XMLSchema-instance"
VOSI_CAP = "http://www.ivoa.net/xml/VOSICapabilities/v1.0"
VOSI_AV = "http://www.ivoa.net/xml/VOSIAvailability/v1.0"
VOSI_TAB = "http://www.ivoa.net/xml/VOSITables/v1.0"
VR = "http://www.ivoa.net/xml/VOResource/v1.0"
VS = "http://www.ivoa.net/xml/VODataService/v1.1"
TR = "http://www.ivoa.net/xml/TAPRegExt/v1.0"
for prefix, uri in (("xsi", XSI), ("vosi", VOSI_CAP), ("avail", VOSI_AV), ("vtm", VOSI_TAB), ("vr", VR),
                    ("vs", VS), ("tr", TR)):
    ET.register_namespace(prefix, uri)

FEATURES = "ivo://ivoa.net/std/TAPRegExt#features-"
#: geometry functions the dialect and the workers implement (REGION and CENTROID are refused,
#: and geometry values cannot be selected, only used in predicates and COORD1/COORD2/AREA)
GEOMETRY_FEATURES = ("POINT", "CIRCLE", "BOX", "POLYGON", "CONTAINS", "INTERSECTS", "DISTANCE", "AREA",
                     "COORD1", "COORD2", "COORDSYS")
LANGUAGE_FEATURES = {
    "adqlgeo": GEOMETRY_FEATURES,
    "adql-string": ("LOWER", "ILIKE"),
    "adql-offset": ("OFFSET",),
    "adql-type": ("CAST",),
    # answered in several steps by the czar (czar/compose.py)
    "adql-sets": ("UNION", "EXCEPT", "INTERSECT"),
    "adql-common-table": ("WITH",),
}
#: TAPRegExt ids of the output formats
FORMAT_IDS = {"votable": "ivo://ivoa.net/std/TAPRegExt#output-votable-td",
              "votable-b2": "ivo://ivoa.net/std/TAPRegExt#output-votable-binary2",
              "csv": None, "tsv": None, "fits": None, "parquet": None}  # TAPRegExt names only VOTable ones
ALIASES = {"votable": ("votable",), "votable-b2": ("votable/b2",), "csv": ("csv",), "tsv": ("tsv",),
           "fits": ("fits",), "parquet": ("parquet",)}


def _doc(root: ET.Element, *prefixes: str) -> bytes:
    """Serialise; ``prefixes`` used only inside xsi:type values are declared on the root
    (ElementTree declares only those its tag and attribute names use)."""
    for prefix in prefixes:
        root.set(f"xmlns:{prefix}", {"vs": VS, "tr": TR, "vr": VR}[prefix])
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    e = ET.SubElement(parent, tag, attrs)
    if text is not None:
        e.text = text
    return e


def _interface(cap: ET.Element, url: str, use: str, role: str | None = None, version: str | None = None) -> None:
    attrs = {f"{{{XSI}}}type": "vs:ParamHTTP"}
    if role:
        attrs["role"] = role
    if version:
        attrs["version"] = version
    iface = _sub(cap, "interface", **attrs)
    _sub(iface, "accessURL", url, use=use)


def capabilities_xml(base: str, limits: Limits) -> bytes:
    """VOSI capabilities of the TAP service at ``base`` (…/tap)."""
    root = ET.Element(f"{{{VOSI_CAP}}}capabilities")
    # TAP 1.1 service capability, with TAPRegExt details
    cap = _sub(root, "capability", standardID="ivo://ivoa.net/std/TAP", **{f"{{{XSI}}}type": "tr:TableAccess"})
    _interface(cap, base, "base", role="std", version="1.1")
    lang = _sub(cap, "language")
    _sub(lang, "name", "ADQL")
    _sub(lang, "version", "2.0", **{"ivo-id": "ivo://ivoa.net/std/ADQL#v2.0"})
    _sub(lang, "version", "2.1", **{"ivo-id": "ivo://ivoa.net/std/ADQL#v2.1"})
    _sub(lang, "description", "ADQL 2.1 (and 2.0) on a Qserv-style partitioned catalogue")
    for kind, forms in LANGUAGE_FEATURES.items():
        feats = _sub(lang, "languageFeatures", type=FEATURES + kind)
        for form in forms:
            _sub(_sub(feats, "feature"), "form", form)
    for key, (media, _) in FORMATS.items():
        attrs = {"ivo-id": FORMAT_IDS[key]} if FORMAT_IDS[key] else {}
        fmt = _sub(cap, "outputFormat", **attrs)
        _sub(fmt, "mime", media)
        for alias in ALIASES[key]:
            _sub(fmt, "alias", alias)
    for method in ("inline", "http", "https"):
        _sub(cap, "uploadMethod", **{"ivo-id": f"ivo://ivoa.net/std/TAPRegExt#upload-{method}"})
    ret = _sub(cap, "retentionPeriod")
    _sub(ret, "default", str(limits.retention))
    _sub(ret, "hard", str(limits.max_retention))
    dur = _sub(cap, "executionDuration")
    _sub(dur, "default", str(limits.default_duration))
    _sub(dur, "hard", str(limits.max_duration))
    out = _sub(cap, "outputLimit")
    _sub(out, "default", str(limits.default_maxrec), unit="row")
    _sub(out, "hard", str(limits.max_maxrec), unit="row")
    up = _sub(cap, "uploadLimit")
    _sub(up, "hard", str(limits.upload_bytes), unit="byte")
    for std, path in (("ivo://ivoa.net/std/VOSI#capabilities", "capabilities"),
                      ("ivo://ivoa.net/std/VOSI#availability", "availability"),
                      ("ivo://ivoa.net/std/VOSI#tables-1.1", "tables"),
                      ("ivo://ivoa.net/std/DALI#examples", "examples")):
        c = _sub(root, "capability", standardID=std)
        _interface(c, f"{base}/{path}", "full")
    return _doc(root, "vs", "tr")


def availability_xml(available: bool, note: str) -> bytes:
    root = ET.Element(f"{{{VOSI_AV}}}availability")
    _sub(root, f"{{{VOSI_AV}}}available", "true" if available else "false")
    _sub(root, f"{{{VOSI_AV}}}note", note)
    return _doc(root)


def _column(parent: ET.Element, c: ColumnDesc) -> None:
    col = _sub(parent, "column")
    _sub(col, "name", c.name)
    if c.description:
        _sub(col, "description", c.description)
    if c.unit:
        _sub(col, "unit", c.unit)
    if c.ucd:
        _sub(col, "ucd", c.ucd)
    if c.utype:
        _sub(col, "utype", c.utype)
    attrs = {f"{{{XSI}}}type": "vs:VOTableType"}
    if c.arraysize:
        attrs["arraysize"] = c.arraysize
    if c.xtype:
        attrs["extendedType"] = c.xtype
    _sub(col, "dataType", c.datatype, **attrs)
    if c.indexed:
        _sub(col, "flag", "indexed")
    if c.principal:
        _sub(col, "flag", "principal")
    if c.nullable:
        _sub(col, "flag", "nullable")
    if c.std:
        _sub(col, "flag", "std")


def _table(parent: ET.Element | None, t: TableDesc, detail: bool, tag: str = "table") -> ET.Element:
    e = ET.Element(tag, {"type": t.table_type}) if parent is None else _sub(parent, tag, type=t.table_type)
    _sub(e, "name", t.name)
    if t.description:
        _sub(e, "description", t.description)
    if detail:
        for c in t.columns:
            _column(e, c)
        for k in t.keys:
            fk = _sub(e, "foreignKey")
            _sub(fk, "targetTable", k.target_table)
            for frm, to in k.columns:
                pair = _sub(fk, "fkColumn")
                _sub(pair, "fromColumn", frm)
                _sub(pair, "targetColumn", to)
            if k.description:
                _sub(fk, "description", k.description)
    return e


def tableset_xml(schemas: list[SchemaDesc], detail: bool = True) -> bytes:
    """The VOSI 1.1 tableset; ``detail=False`` (detail=min) leaves out columns and keys."""
    root = ET.Element(f"{{{VOSI_TAB}}}tableset")
    for s in schemas:
        se = _sub(root, "schema")
        _sub(se, "name", s.name)
        if s.description:
            _sub(se, "description", s.description)
        for t in s.tables:
            _table(se, t, detail)
    return _doc(root, "vs")


def table_xml(t: TableDesc) -> bytes:
    """One table's VOSI document (``/tables/<name>``), with its columns."""
    root = _table(None, t, True, tag=f"{{{VOSI_TAB}}}table")
    return _doc(root, "vs")
