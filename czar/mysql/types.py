"""Arrow results as MySQL result sets: column types, and rows encoded for the text protocol.

Values are turned into text column by column with Arrow's vectorised casts (shortest
round-trip decimal text for floats, as MySQL prints them: a FLOAT column gives ``17.234568``,
a DOUBLE ``0.1``), so a result batch never passes value by value through Python formatting.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from mysql_mimic import ResultColumn
from mysql_mimic.charset import CharacterSet
from mysql_mimic.types import ColumnType

__all__ = ["column_declaration", "encode_batch", "mysql_type", "result_columns"]


def mysql_type(t: pa.DataType) -> ColumnType:
    """The MySQL wire type of an Arrow type (what ``cursor.description`` reports)."""
    if pa.types.is_boolean(t) or pa.types.is_int8(t):
        return ColumnType.TINY
    if pa.types.is_int16(t) or pa.types.is_uint8(t):
        return ColumnType.SHORT
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return ColumnType.LONG
    if pa.types.is_integer(t):  # int64, uint32, uint64 (no UNSIGNED flag: text keeps every value exact)
        return ColumnType.LONGLONG
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return ColumnType.FLOAT
    if pa.types.is_float64(t):
        return ColumnType.DOUBLE
    if pa.types.is_decimal(t):  # DuckDB's SUM of integers, HUGEINT
        return ColumnType.NEWDECIMAL
    if pa.types.is_timestamp(t):
        return ColumnType.DATETIME
    if pa.types.is_date(t):
        return ColumnType.DATE
    if pa.types.is_time(t) or pa.types.is_duration(t):
        return ColumnType.TIME
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return ColumnType.BLOB
    if pa.types.is_null(t):
        return ColumnType.NULL
    return ColumnType.VAR_STRING  # strings, and lists/structs shown as text


def _encode_bytes(col: ResultColumn, val: Any) -> bytes:
    return val if isinstance(val, bytes) else str(val).encode("utf-8")


_TEXT_TYPES = (ColumnType.VAR_STRING, ColumnType.STRING, ColumnType.VARCHAR)


def result_columns(schema: pa.Schema) -> list[ResultColumn]:
    """One MySQL result column per Arrow field; as in MySQL, only text columns carry utf8mb4,
    numbers, dates and blobs the binary character set (63).

    Values reach mysql-mimic as ready-made bytes (:func:`encode_batch`), which its default
    (compiled) text encoders pass through; TINY's default would ``int()`` them, NULL's refuses."""
    cols = []
    for f in schema:
        kind = mysql_type(f.type)
        charset = CharacterSet.utf8mb4 if kind in _TEXT_TYPES else CharacterSet.binary
        encoder = _encode_bytes if kind in (ColumnType.TINY, ColumnType.NULL) else None
        cols.append(ResultColumn(f.name, kind, character_set=charset, text_encoder=encoder))
    return cols


def _as_text(col: pa.Array) -> list:
    """A column's values as MySQL text protocol bytes (None for NULL), formatted by Arrow."""
    t = col.type
    if pa.types.is_null(t):
        return [None] * len(col)
    if pa.types.is_boolean(t):
        col = pc.cast(col, pa.int8())
    if not (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t)):
        try:
            col = pc.cast(col, pa.string())
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # nested types: Python's text
            return [None if v is None else str(v).encode("utf-8") for v in col.to_pylist()]
    return pc.cast(col, pa.large_binary() if pa.types.is_large_string(col.type) else pa.binary()).to_pylist()


def encode_batch(batch: pa.RecordBatch) -> list[tuple]:
    """Rows of a batch with every value as MySQL text bytes (None for NULL)."""
    if batch.num_columns == 0:
        return [()] * batch.num_rows
    return list(zip(*(_as_text(c) for c in batch.columns)))


#: catalogue datatype -> MySQL column declaration (DESCRIBE / SHOW COLUMNS / information_schema)
_DECLARATIONS = {
    "boolean": "tinyint(1)", "byte": "tinyint", "short": "smallint", "int": "int", "long": "bigint",
    "float": "float", "double": "double", "char": "char", "string": "text", "timestamp": "datetime(6)",
}


def column_declaration(column: dict) -> str:
    """MySQL type of a catalogue column, e.g. ``bigint``, ``double``, ``varchar(32)``."""
    dt = column.get("datatype", "string")
    size = column.get("arraysize")
    if dt in ("char", "string") and size not in (None, "*"):
        n = str(size).rstrip("*")
        if n.isdigit():
            return f"{'char' if dt == 'char' and not str(size).endswith('*') else 'varchar'}({n})"
    return _DECLARATIONS.get(dt, "text")
