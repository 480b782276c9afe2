"""Tables in and out of files for ``qengine xmatch``: CSV/TSV, Parquet, FITS and VOTable, chosen
by the file name's extension."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from qengine.errors import QEngineError

__all__ = ["format_of", "read_table", "write_table"]

_FORMATS = {".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".fits": "fits",
            ".fit": "fits", ".fts": "fits", ".vot": "votable", ".votable": "votable", ".xml": "votable"}


def format_of(path: str | Path) -> str:
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    fmt = _FORMATS.get(suffixes[-1] if suffixes else "")
    if fmt is None:
        raise QEngineError(f"{path}: unknown table format (use .csv, .tsv, .parquet, .fits or .vot/.xml)")
    return fmt


def _from_astropy(t) -> pa.Table:
    cols = {}
    for name in t.colnames:
        col = t[name]
        data = np.asarray(col)
        mask = np.asarray(col.mask) if getattr(col, "mask", None) is not None and np.ndim(col.mask) else None
        if data.dtype.kind == "S":
            data = np.char.decode(data, "utf-8")
        if data.ndim > 1:
            raise QEngineError(f"column {name!r} holds arrays: only scalar columns can be crossmatched")
        if data.dtype.kind == "U":
            data = data.astype(object)
        if data.dtype.byteorder == ">":
            data = data.astype(data.dtype.newbyteorder("="))
        cols[name] = pa.array(data, mask=mask)
    return pa.table(cols)


def read_table(path: str | Path) -> pa.Table:
    """A table from a CSV/TSV, Parquet, FITS (first table HDU) or VOTable file."""
    fmt = format_of(path)
    try:
        if fmt in ("csv", "tsv"):
            import pyarrow.csv as pcsv

            opts = pcsv.ParseOptions(delimiter="\t" if fmt == "tsv" else ",")
            return pcsv.read_csv(path, parse_options=opts)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        from astropy.table import Table

        return _from_astropy(Table.read(path, format="fits" if fmt == "fits" else "votable"))
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise QEngineError(f"{path}: cannot read it as {fmt}: {exc}") from None


def _to_astropy(table: pa.Table):
    from astropy.table import MaskedColumn, Table

    t = Table()
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            values = np.array([v if v is not None else "" for v in col.to_pylist()], dtype=str)
        else:
            values = col.to_numpy(zero_copy_only=False)
            if col.null_count and values.dtype.kind == "O":
                values = np.array([0 if v is None else v for v in col.to_pylist()])
        mask = col.is_null().to_numpy(zero_copy_only=False) if col.null_count else None
        t[name] = MaskedColumn(values, mask=mask) if mask is not None else values
    return t


def write_table(table: pa.Table, path: str | Path) -> None:
    """Write ``table`` in the format its extension names (NULLs are masked values in FITS/VOTable)."""
    fmt = format_of(path)
    if fmt in ("csv", "tsv"):
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path, pcsv.WriteOptions(delimiter="\t" if fmt == "tsv" else ","))
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        _to_astropy(table).write(path, format="fits" if fmt == "fits" else "votable", overwrite=True)
