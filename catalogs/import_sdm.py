#!/usr/bin/env python3
"""Regenerate ``catalogs/lsst_dr.yaml`` from Rubin's published schema (lsst-sdm-schemas).

The LSST catalogue's column metadata (datatype, unit, UCD, description, length) is never
copied by hand: this script holds only the *selection* (which DP0.2 tables and columns, the
Qserv roles, and the few documented additions) and reads everything else from the
``dp02_dc2.yaml`` felis schema shipped in the ``lsst-sdm-schemas`` package.

Usage::

    python catalogs/import_sdm.py            # rewrite catalogs/lsst_dr.yaml
    python catalogs/import_sdm.py --check    # exit 1 if the file is not what would be written
    python catalogs/import_sdm.py -o FILE    # write elsewhere

Only PyYAML and lsst-sdm-schemas are needed (no qengine import), so it runs as a plain script.
"""
from __future__ import annotations

import argparse
import importlib.resources
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

SDM_SCHEMA = "dp02_dc2"
BANDS = "ugrizy"
OUTPUT = Path(__file__).with_name("lsst_dr.yaml")

# --- the selection -------------------------------------------------------------------------
# A column entry is either the name of a column of the table's sdm table, or a dict with
#   name, and either sdm_column ("Table.column": metadata from that sdm column) or a full
#   hand-written definition (datatype, unit, ucd, ...); any other key overrides the sdm value.

_OBJECT_PER_BAND = ["psfFlux", "psfFluxErr", "psfFlux_flag", "cModelFlux", "cModelFluxErr",
                    "calibFlux", "calibFluxErr", "extendedness", "pixelFlags_saturated"]

TABLES: list[dict[str, Any]] = [
    {
        "name": "Object",
        "role": "director",
        "sdm_table": "Object",
        "id_column": "objectId",
        "ra_column": "coord_ra",
        "dec_column": "coord_dec",
        "principal": ["objectId", "coord_ra", "coord_dec", "detect_isPrimary",
                      "refExtendedness", *[f"{b}_psfFlux" for b in BANDS],
                      *[f"{b}_cModelFlux" for b in BANDS]],
        "columns": [
            "objectId", "parentObjectId", "coord_ra", "coord_dec", "x", "y", "xErr", "yErr",
            "tract", "patch", "skymap", "refBand", "detect_isPrimary", "detect_isIsolated",
            "detect_isDeblendedSource", "detect_fromBlend", "detect_isPatchInner",
            "detect_isTractInner", "deblend_nChild", "deblend_skipped", "sky_object",
            "footprintArea", "refExtendedness", "refFwhm", "shape_xx", "shape_xy", "shape_yy",
            "shape_flag", "xy_flag",
            *[f"{b}_{c}" for b in BANDS for c in _OBJECT_PER_BAND],
        ],
    },
    {
        "name": "Source",
        "role": "child",
        "sdm_table": "Source",
        "description_suffix": (
            " Partitioned here as a child of Object through objectId (a column DP0.2's Source "
            "table does not have, added for the purpose); coord_ra/coord_dec and ra/decl are "
            "the source's own position, kept as data."),
        "director": "Object",
        "foreign_key": "objectId",
        "id_column": "sourceId",
        "ra_column": "coord_ra",
        "dec_column": "coord_dec",
        "aliases": {"dec": "decl"},
        "principal": ["sourceId", "objectId", "ccdVisitId", "coord_ra", "coord_dec", "band",
                      "psfFlux", "psfFluxErr"],
        "columns": [
            "sourceId",
            {"name": "objectId", "sdm_column": "ForcedSource.objectId",
             "description": (
                 "Id of the Object this source is associated with. NOT in DP0.2's Source table "
                 "(DP0.2 did not associate Sources with Objects): added so that Source can be "
                 "partitioned as a child of Object; metadata as ForcedSource.objectId.")},
            "ccdVisitId", "visit", "detector", "band", "physical_filter", "parentSourceId",
            "coord_ra", "coord_dec", "ra", "decl", "x", "y", "xErr", "yErr",
            "psfFlux", "psfFluxErr", "psfFlux_flag", "calibFlux", "calibFluxErr",
            "ap09Flux", "ap09FluxErr", "sky", "extendedness", "ixx", "iyy", "ixy",
            "detect_isPrimary", "sky_source", "centroid_flag", "pixelFlags_cr",
            "pixelFlags_edge", "pixelFlags_saturated", "pixelFlags_bad", "calib_psf_used",
        ],
    },
    {
        "name": "ForcedSource",
        "role": "child",
        "sdm_table": "ForcedSource",
        "description_suffix": (
            " Partitioned as a child of Object through objectId; coord_ra/coord_dec (the "
            "Object's position the photometry was forced at) are kept as data."),
        "director": "Object",
        "foreign_key": "objectId",
        "id_column": "forcedSourceId",
        "ra_column": "coord_ra",
        "dec_column": "coord_dec",
        "columns": "*",  # all of them
    },
    {
        "name": "CcdVisit",
        "role": "replicated",
        "sdm_table": "CcdVisit",
        "id_column": "ccdVisitId",
        "ra_column": "ra",
        "dec_column": "decl",
        "aliases": {"dec": "decl"},
        "columns": "*",
    },
    {
        "name": "Visit",
        "role": "replicated",
        "sdm_table": "Visit",
        "id_column": "visit",
        "ra_column": "ra",
        "dec_column": "decl",
        "aliases": {"dec": "decl"},
        "columns": "*",
    },
    {
        "name": "Filter",
        "role": "replicated",
        "sdm_table": None,  # DP0.2 has no filter table: defined here, by hand
        "description": (
            "The six LSST bands (one row per band), for joins on band. Not part of DP0.2's "
            "published schema: defined by qengine; band and physical_filter follow the "
            "metadata of CcdVisit.band and CcdVisit.physical_filter."),
        "id_column": "band",
        "columns": [
            {"name": "filterId", "datatype": "byte", "ucd": "meta.id;instr.filter",
             "nullable": False, "principal": True,
             "description": "Filter number, 0-5 for u, g, r, i, z, y."},
            {"name": "band", "sdm_column": "CcdVisit.band", "nullable": False,
             "principal": True, "indexed": True,
             "description": "Abstract filter (band) name: one of u, g, r, i, z, y."},
            {"name": "physical_filter", "sdm_column": "CcdVisit.physical_filter",
             "description": "Name of the physical filter of the DC2 simulation for this band."},
            {"name": "lambdaEff", "datatype": "double", "unit": "nm",
             "ucd": "em.wl.effective;instr.filter", "principal": True,
             "description": "Effective wavelength of the band."},
            {"name": "lambdaMin", "datatype": "double", "unit": "nm", "ucd": "em.wl;stat.min",
             "description": "Blue edge of the band (half-maximum transmission)."},
            {"name": "lambdaMax", "datatype": "double", "unit": "nm", "ucd": "em.wl;stat.max",
             "description": "Red edge of the band (half-maximum transmission)."},
        ],
    },
]

CATALOG = {
    "name": "lsst_dr",
    "database": "dp02",
    "description": (
        "Rubin Observatory Data Preview 0.2 (DESC DC2 simulation, processed with the LSST "
        "Science Pipelines): a science-useful subset of the Object, Source and ForcedSource "
        "columns, with CcdVisit, Visit and a small Filter table. Column metadata from "
        "lsst-sdm-schemas (dp02_dc2.yaml)."),
    # Qserv's DP0.2 deployment: 340 stripes x 3 sub-stripes (sub-stripe height 0.176 deg).
    "partitioning": {"num_stripes": 340, "num_sub_stripes": 3, "overlap": 0.01667},
}

HEADER = """\
# LSST data release catalogue (Rubin DP0.2) for qengine.
#
# GENERATED by catalogs/import_sdm.py from lsst-sdm-schemas ({schema}.yaml) -- do not edit by
# hand: change the selection in import_sdm.py and run `python catalogs/import_sdm.py`
# (`--check` verifies this file is up to date).
#
# Layout (shared by every catalogue in catalogs/, read by qengine.catalog.load_catalog):
#   name, database, description         catalogue key, SQL database name, free text
#   partitioning: {{num_stripes, num_sub_stripes, overlap}}   Qserv chunker (overlap in degrees)
#   sdm_schema                          provenance: the lsst-sdm-schemas schema used
#   tables: <name>: one mapping per table, in this order:
#     role                director | child | replicated | match
#     id_column           unique id (required for a director)
#     ra_column, dec_column   position in degrees (required for a director; others: data)
#     director, foreign_key   child: the director table and the column holding its id
#     aliases             other names users may write for a column, alias: column
#     sdm_table           provenance: the sdm table columns come from
#     columns             one flow mapping per column: name, datatype (felis/VOTable word),
#                         unit, ucd, description, and optionally nullable, principal, indexed,
#                         sentinel, arraysize, sdm_column (metadata copied from another sdm
#                         column, "Table.column")
"""

# --- reading the sdm schema ----------------------------------------------------------------


def load_sdm(schema: str = SDM_SCHEMA) -> dict[str, dict[str, Any]]:
    """{table name: {"table": table dict, "columns": {column name: column dict}}}."""
    resource = importlib.resources.files("lsst.sdm.schemas") / f"{schema}.yaml"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    doc = yaml.load(resource.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506
    return {t["name"]: {"table": t, "columns": {c["name"]: c for c in t["columns"]}}
            for t in doc["tables"]}


def _clean(text: Any) -> str | None:
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text or None


def sdm_metadata(col: dict[str, Any], table: dict[str, Any]) -> dict[str, Any]:
    """The catalogue column fields derived from one felis column."""
    datatype = col["datatype"]
    unit = col.get("fits:tunit") or col.get("ivoa:unit") or None
    out: dict[str, Any] = {"datatype": datatype, "unit": unit, "ucd": col.get("ivoa:ucd") or None,
                           "description": _clean(col.get("description"))}
    if datatype in ("char", "string"):
        size = col.get("votable:arraysize")
        if size is None and col.get("length") is not None:
            size = str(col["length"])
        out["arraysize"] = None if size is None else str(size)
    primary = table.get("primaryKey")
    if col.get("nullable") is False or primary == col.get("@id"):
        out["nullable"] = False
    if col.get("tap:principal") is not None:
        out["_sdm_principal"] = bool(col["tap:principal"])
    return out


def build(sdm: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The catalogue document (a plain dict) for the current selection."""
    sdm = sdm if sdm is not None else load_sdm()
    tables: dict[str, Any] = {}
    for spec in TABLES:
        tname = spec["name"]
        sdm_name = spec.get("sdm_table")
        sdm_table = sdm[sdm_name] if sdm_name else None
        entries = spec["columns"]
        if entries == "*":
            entries = list(sdm_table["columns"])
        columns = []
        for entry in entries:
            if isinstance(entry, str):
                entry = {"name": entry}
            entry = dict(entry)
            name = entry.pop("name")
            ref = entry.get("sdm_column")
            if ref:
                ref_table, ref_col = ref.split(".")
                meta = sdm_metadata(sdm[ref_table]["columns"][ref_col], sdm[ref_table]["table"])
            elif "datatype" in entry:
                meta = {}
            else:
                if sdm_table is None or name not in sdm_table["columns"]:
                    raise SystemExit(f"{tname}.{name}: not in {SDM_SCHEMA} {sdm_name}")
                meta = sdm_metadata(sdm_table["columns"][name], sdm_table["table"])
            meta.update(entry)
            col = {"name": name, **meta}
            keys = {spec.get("id_column"), spec.get("foreign_key"), spec.get("ra_column"),
                    spec.get("dec_column")} - {None}
            sdm_says = meta.get("_sdm_principal")  # None when the sdm column does not say
            if name in spec.get("principal", ()) or sdm_says or (sdm_says is None
                                                                  and name in keys):
                col["principal"] = True
            col.pop("_sdm_principal", None)
            if name in (spec.get("foreign_key"),) or (
                    name == spec.get("id_column") and spec["role"] in ("director", "child")):
                col["indexed"] = True
            if name in (spec.get("id_column"), spec.get("foreign_key")) or (
                    spec["role"] == "director" and name in keys):
                col["nullable"] = False  # ids, keys and a director's position are required
            columns.append(col)
        description = spec.get("description")
        if description is None and sdm_table is not None:
            description = _clean(sdm_table["table"].get("description"))
        description = (description or "") + spec.get("description_suffix", "")
        tdoc: dict[str, Any] = {"role": spec["role"], "description": description or None}
        for key in ("id_column", "ra_column", "dec_column", "director", "foreign_key",
                    "aliases"):
            if spec.get(key):
                tdoc[key] = spec[key]
        if sdm_name:
            tdoc["sdm_table"] = sdm_name
        tdoc["columns"] = columns
        tables[tname] = tdoc
    return {**CATALOG, "sdm_schema": SDM_SCHEMA, "tables": tables}


# --- writing -------------------------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "~"}
_COLUMN_KEY_ORDER = ("name", "datatype", "unit", "ucd", "description", "nullable", "principal",
                     "indexed", "sentinel", "arraysize", "sdm_column")


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def _flow(mapping: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {_scalar(v)}" for k, v in mapping.items()) + "}"


def render(doc: dict[str, Any] | None = None) -> str:
    """The text of lsst_dr.yaml."""
    doc = doc if doc is not None else build()
    out = [HEADER.format(schema=doc["sdm_schema"])]
    for key in ("name", "database", "description"):
        out.append(f"{key}: {_scalar(doc[key])}\n")
    out.append(f"partitioning: {_flow(doc['partitioning'])}\n")
    out.append(f"sdm_schema: {_scalar(doc['sdm_schema'])}\n")
    out.append("tables:\n")
    for tname, t in doc["tables"].items():
        out.append(f"\n  {tname}:\n")
        for key, value in t.items():
            if key == "columns":
                continue
            if isinstance(value, dict):
                out.append(f"    {key}: {_flow(value)}\n")
            else:
                out.append(f"    {key}: {_scalar(value)}\n")
        out.append("    columns:\n")
        for col in t["columns"]:
            ordered = {k: col[k] for k in _COLUMN_KEY_ORDER if col.get(k) is not None}
            # defaults are left out to keep lines short
            if ordered.get("nullable") is True:
                del ordered["nullable"]
            for k in ("principal", "indexed"):
                if ordered.get(k) is False:
                    del ordered[k]
            out.append(f"      - {_flow(ordered)}\n")
    return "".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the file differs from what would be written")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run python catalogs/import_sdm.py",
                  file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text, encoding="utf-8")
    ncols = sum(len(t["columns"]) for t in build()["tables"].values())
    print(f"wrote {args.output} ({ncols} columns)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
