"""A query result in the RESPONSEFORMAT asked for: VOTable (TABLEDATA or BINARY2), CSV, TSV,
FITS or Parquet."""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from czar.tap.params import FORMATS
from czar.tap.votable import column_votable_type, numpy_column, to_votable, unique_names

__all__ = ["EXTENSIONS", "render"]

EXTENSIONS = {"votable": "vot", "votable-b2": "vot", "csv": "csv", "tsv": "tsv", "fits": "fits",
              "parquet": "parquet"}


def _renamed(table: pa.Table) -> pa.Table:
    return table.rename_columns(unique_names(table.column_names))


def _csv(table: pa.Table) -> bytes:
    import pyarrow.csv as pcsv

    table = _renamed(table)
    # timestamps and odd types as text: every CSV reader understands ISO strings
    cols = [c.cast(pa.string()) if not (pa.types.is_integer(c.type) or pa.types.is_floating(c.type)
                                        or pa.types.is_boolean(c.type) or pa.types.is_string(c.type))
            else c for c in table.columns]
    sink = io.BytesIO()
    # the header quoted only where needed, as for the values (pyarrow quotes every header name)
    sink.write((",".join(_csv_name(n) for n in table.column_names) + "\n").encode())
    pcsv.write_csv(pa.table(cols, names=table.column_names), sink,
                   write_options=pcsv.WriteOptions(quoting_style="needed", include_header=False))
    return sink.getvalue()


def _csv_name(name: str) -> str:
    if any(c in name for c in ',"\r\n'):
        return '"' + name.replace('"', '""') + '"'
    return name


def _tsv_cell(col: pa.ChunkedArray) -> list[str]:
    text = pc.fill_null(col.cast(pa.string()), "")
    # a tab or newline inside a value would break the row: TSV has no quoting
    text = pc.replace_substring_regex(text, r"[\t\r\n]", " ")
    return text.to_pylist()


def _tsv(table: pa.Table) -> bytes:
    table = _renamed(table)
    lines = ["\t".join(table.column_names)]
    cols = [_tsv_cell(c) for c in table.columns]
    lines += ["\t".join(row) for row in zip(*cols)]
    return ("\n".join(lines) + "\n").encode()


def _fits(table: pa.Table) -> bytes:
    from astropy.table import MaskedColumn, Table

    table = _renamed(table)
    out = Table()
    for f, col in zip(table.schema, table.columns):
        datatype, _, xtype = column_votable_type(f.type)
        values, mask = numpy_column(col, datatype, xtype)
        if datatype == "char":  # FITS strings are fixed-width ASCII
            values = np.array([v.encode("ascii", "replace").decode() for v in values], dtype=str)
        md = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        c = MaskedColumn(values, mask=mask, name=f.name, description=md.get("description"))
        if md.get("unit"):
            try:
                c.unit = md["unit"]
            except ValueError:
                pass  # a unit astropy cannot parse: keep the column, drop the unit
        out[f.name] = c
    buf = io.BytesIO()
    out.write(buf, format="fits")
    return buf.getvalue()


def _parquet(table: pa.Table, overflow: bool) -> bytes:
    import pyarrow.parquet as pq

    table = _renamed(table)
    md = dict(table.schema.metadata or {})
    md[b"qengine.overflow"] = b"true" if overflow else b"false"
    buf = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(md), buf)
    return buf.getvalue()


def render(table: pa.Table, fmt: str, *, overflow: bool = False,
           infos: dict[str, str] | None = None) -> tuple[bytes, str]:
    """(body, media type) of a result in format ``fmt`` (a key of :data:`FORMATS`)."""
    media = FORMATS[fmt][0]
    if fmt in ("votable", "votable-b2"):
        return to_votable(table, overflow=overflow, binary2=fmt == "votable-b2", infos=infos), media
    if fmt == "csv":
        return _csv(table), media
    if fmt == "tsv":
        return _tsv(table), media
    if fmt == "fits":
        return _fits(table), media
    return _parquet(table, overflow), media
