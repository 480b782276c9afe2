"""Arrow tables to VOTable (astropy.io.votable) and back: result documents with
``RESOURCE type="results"``, QUERY_STATUS INFOs (OVERFLOW after the table), error documents,
and reading uploaded VOTables into Arrow."""
from __future__ import annotations

import io
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from astropy.io.votable import tree
from astropy.io.votable.exceptions import VOWarning

__all__ = ["column_votable_type", "error_votable", "numpy_column", "to_votable", "unique_names", "votable_to_arrow"]


class _ResultsResource(tree.Resource):
    """A RESOURCE that can carry INFOs after its table: DALI puts QUERY_STATUS=OVERFLOW there."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.post_infos: list[tree.Info] = []

    def to_xml(self, w, **kwargs):
        attrs = w.object_attrs(self, ("ID", "type", "utype"))
        with w.tag("RESOURCE", attrib=attrs):
            for info in self.infos:
                info.to_xml(w, **kwargs)
            for table in self.tables:
                table.to_xml(w, **kwargs)
            for info in self.post_infos:
                info.to_xml(w, **kwargs)


def _info(name: str, value: str, content: str | None = None) -> tree.Info:
    info = tree.Info(name=name, value=value)
    info.ID = None  # astropy copies the name into ID; two QUERY_STATUS INFOs would clash
    if content is not None:
        info.content = content
    return info


def unique_names(names: list[str]) -> list[str]:
    """Column names made unique (case-insensitively, as ADQL compares them): x, x_2, x_3..."""
    seen: set[str] = set()
    out = []
    for name in names:
        name = name or "col"
        candidate, k = name, 1
        while candidate.lower() in seen:
            k += 1
            candidate = f"{name}_{k}"
        seen.add(candidate.lower())
        out.append(candidate)
    return out


def column_votable_type(t: pa.DataType) -> tuple[str, str | None, str | None]:
    """(datatype, arraysize, xtype) of an Arrow type, as TAP_SCHEMA also declares it."""
    if pa.types.is_boolean(t):
        return "boolean", None, None
    if pa.types.is_int8(t) or pa.types.is_int16(t):
        return "short", None, None
    if pa.types.is_uint8(t):
        return "unsignedByte", None, None
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return "int", None, None
    if pa.types.is_integer(t):
        return "long", None, None
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return "float", None, None
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "double", None, None
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "char", "*", "timestamp"
    return "char", "*", None


def numpy_column(col: pa.ChunkedArray, datatype: str, xtype: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Values and null mask of a column, in the numpy dtype its VOTable datatype needs."""
    mask = col.is_null().to_numpy(zero_copy_only=False) if col.null_count else np.zeros(len(col), bool)
    t = col.type
    if datatype == "char":
        if xtype == "timestamp":
            col = _iso_text(col)
        elif not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            col = col.cast(pa.string()) if not pa.types.is_binary(t) else pc.binary_join_element_wise(col, "")
        values = np.array(["" if v is None else v for v in col.to_pylist()], dtype=object)
        return values, mask
    dtype = {"boolean": np.bool_, "short": np.int16, "unsignedByte": np.uint8, "int": np.int32,
             "long": np.int64, "float": np.float32, "double": np.float64}[datatype]
    if pa.types.is_decimal(t):
        col = col.cast(pa.float64())
    if col.null_count:  # masked cells: the filler is never written (empty cell, BINARY2 null bit)
        fill = False if datatype == "boolean" else (float("nan") if datatype in ("float", "double") else 0)
        col = col.fill_null(pa.scalar(fill, type=col.type))
    values = np.asarray(col.to_numpy(), dtype=dtype)
    return values, mask


def _iso_text(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """DALI timestamps: whole seconds without a fraction, else the fraction pyarrow keeps."""
    t = col.type
    if pa.types.is_date(t):
        return pc.strftime(col.cast(pa.timestamp("s")), format="%Y-%m-%d")
    if t.tz is not None:
        col = col.cast(pa.timestamp(t.unit))
    per_second = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[t.unit]
    ticks = col.cast(pa.int64()).to_numpy(zero_copy_only=False)
    whole = bool(np.all(np.nan_to_num(ticks.astype(float), nan=0) % per_second == 0)) if per_second > 1 else True
    if whole:
        return pc.strftime(col.cast(pa.timestamp("s"), safe=False), format="%Y-%m-%dT%H:%M:%S")
    return pc.strftime(col, format="%Y-%m-%dT%H:%M:%S")


def _needs_unicode(col: pa.ChunkedArray) -> bool:
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)) or len(col) == 0:
        return False
    ascii_ok = pc.all(pc.fill_null(pc.string_is_ascii(col), True)).as_py()
    return not ascii_ok


def to_votable(table: pa.Table, *, overflow: bool = False, binary2: bool = False,
               infos: dict[str, str] | None = None, fast: bool = True) -> bytes:
    """A TAP result document: RESOURCE type="results", QUERY_STATUS=OK, the table (TABLEDATA or
    BINARY2), and QUERY_STATUS=OVERFLOW after it when the result was cut at MAXREC.

    astropy writes the document; the rows come from :mod:`czar.tap.encode` (vectorised) unless
    ``fast`` is False or a BINARY2 table has unicodeChar columns (then astropy writes them too)."""
    vot = tree.VOTableFile(version="1.4")
    res = _ResultsResource(type="results")
    vot.resources.append(res)
    res.infos.append(_info("QUERY_STATUS", "OK"))
    for name, value in (infos or {}).items():
        res.infos.append(_info(name, value))
    vt = tree.TableElement(vot) if hasattr(tree, "TableElement") else tree.Table(vot)
    res.tables.append(vt)
    names = unique_names(table.column_names)
    kinds = []
    for name, f, col in zip(names, table.schema, table.columns):
        md = {k.decode(): v.decode() for k, v in (f.metadata or {}).items()}
        datatype, arraysize, xtype = column_votable_type(f.type)
        xtype = md.get("xtype") or xtype
        if datatype == "char" and _needs_unicode(col):
            datatype = "unicodeChar"
        kinds.append((datatype, xtype))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VOWarning)  # W03: an ID made from an odd name
            field = tree.Field(vot, name=name, datatype=datatype, arraysize=arraysize, xtype=xtype,
                               ucd=md.get("ucd") or None, unit=md.get("unit") or None)
        if md.get("description"):
            field.description = md["description"]
        vt.fields.append(field)
    if overflow:
        res.post_infos.append(_info("QUERY_STATUS", "OVERFLOW",
                                    "the result was truncated at MAXREC rows; more rows exist"))
    fast = fast and table.num_rows > 0 and not (binary2 and any(d == "unicodeChar" for d, _ in kinds))
    vt.create_arrays(0 if fast else table.num_rows)
    if not fast:
        for key, col, (datatype, xtype) in zip(vt.array.dtype.names, table.columns, kinds):
            values, mask = numpy_column(col, "char" if datatype == "unicodeChar" else datatype, xtype)
            vt.array[key] = values
            vt.array.mask[key] = mask
    if binary2:
        vt.format = "binary2"
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VOWarning)  # odd units/UCDs in catalogue metadata
        vot.to_xml(buf, tabledata_format="binary2" if binary2 else None)
    doc = buf.getvalue()
    if not fast:
        return doc
    from czar.tap.encode import binary2_stream, tabledata_rows

    if binary2:
        data = b'<DATA><BINARY2><STREAM encoding="base64">' + binary2_stream(table, kinds) + \
            b"</STREAM></BINARY2></DATA>\n"
    else:
        data = b"<DATA><TABLEDATA>\n" + tabledata_rows(table, kinds) + b"</TABLEDATA></DATA>\n"
    at = doc.index(b"</TABLE>")  # the one table; text inside FIELDs and INFOs is escaped
    return doc[:at] + data + doc[at:]


def error_votable(message: str) -> bytes:
    """A DALI error document: QUERY_STATUS=ERROR with the message as the INFO's content."""
    vot = tree.VOTableFile(version="1.4")
    res = _ResultsResource(type="results")
    vot.resources.append(res)
    res.infos.append(_info("QUERY_STATUS", "ERROR", message))
    buf = io.BytesIO()
    vot.to_xml(buf)
    return buf.getvalue()


def votable_to_arrow(data: bytes) -> pa.Table:
    """The first table of a VOTable (TABLEDATA, BINARY or BINARY2) as Arrow, nulls kept."""
    from astropy.io.votable import parse

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VOWarning)
        vot = parse(io.BytesIO(data), verify="ignore")
    vt = vot.get_first_table()
    cols, names = [], []
    for f in vt.fields:
        name = f.name or f.ID
        data_col = vt.array[vt.array.dtype.names[len(names)]]
        values = np.ma.getdata(data_col)
        mask = np.ma.getmaskarray(data_col)
        if values.ndim > 1:
            from czar.tap.errors import UploadError

            raise UploadError(f"column {name!r} holds arrays; only scalar columns can be uploaded")
        if (f.xtype or "").lower() in ("timestamp", "adql:timestamp") and values.dtype.kind in "OSU":
            arr = _timestamps(name, values, mask)
        elif values.dtype.kind == "O":
            vals = [None if m else (v.decode() if isinstance(v, bytes) else v) for v, m in zip(values, mask)]
            if any(isinstance(v, np.ndarray) for v in vals):
                from czar.tap.errors import UploadError

                raise UploadError(f"column {name!r} holds arrays; only scalar columns can be uploaded")
            arr = pa.array(vals, type=pa.string())
        elif values.dtype.kind in "SU":
            vals = [None if m else (v.decode() if isinstance(v, bytes) else str(v)) for v, m in zip(values, mask)]
            arr = pa.array(vals, type=pa.string())
        else:
            if values.dtype.kind == "f":
                mask = mask | np.isnan(values)
            arr = pa.array(values, mask=mask if mask.any() else None)
        cols.append(arr)
        names.append(name)
    return pa.table(cols, names=names)


def _timestamps(name: str, values: np.ndarray, mask: np.ndarray) -> pa.Array:
    """A char column with xtype timestamp as an Arrow timestamp (it goes back out as one)."""
    text = [None if m or not str(v).strip() else (v.decode() if isinstance(v, bytes) else str(v)).strip().rstrip("Z")
            for v, m in zip(values, mask)]
    try:
        parsed = np.array([np.datetime64("NaT") if v is None else np.datetime64(v, "us") for v in text],
                          dtype="datetime64[us]")
    except ValueError as exc:
        from czar.tap.errors import UploadError

        raise UploadError(f"column {name!r} (xtype timestamp): {exc}") from None
    return pa.array(parsed, mask=np.isnat(parsed), type=pa.timestamp("us"))
