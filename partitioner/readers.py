"""Streaming input readers for bulk ingest.

``read_batches(path, schema, spec)`` reads one input file in bounded batches and converts every
batch to the catalogue table's Arrow schema (columns matched by name, case-insensitively;
headerless text by position or by ``InputSpec.columns``).  Memory does not grow with the file:

* **CSV/TSV** (Qserv/MySQL style: ``\\N`` for NULL, ``\\`` escapes, optional ``"`` quotes; plain,
  ``.gz`` or ``.bz2``).  A background thread reads (and decompresses) the file into reused
  buffers and cuts it on line boundaries into chunks of about 8 MiB (never more than
  ``batch_rows`` lines); a pool of worker threads (one per CPU) parses and converts chunks
  straight to the target types with ``pyarrow.csv`` (no per-row Python), and the results are
  joined in file order into batches.  Only when a chunk fails is it searched (bisection over its
  lines, with the same parser) for the exact bad line(s), and each bad line is diagnosed field by
  field, giving file, line (1-based, the header is line 1) and column.  With
  ``skip_bad_rows=N`` bad lines are dropped and reported as ``Reject``s, up to N of them.

  Text conventions: a line is ended by ``\\n`` or ``\\r\\n``; blank lines are skipped (but counted
  for line numbers); a UTF-8 byte-order mark is ignored.  Values cannot contain line breaks
  (MySQL writes them escaped).  The escape character removes the special meaning of the next
  character (``\\,`` → ``,``, ``\\"`` → ``"``, ``\\\\`` → ``\\``); MySQL's ``\\t``/``\\n``/``\\0``
  are read as ``t``/``n``/``0``.  An unquoted field that is exactly ``\\N`` (any null token
  containing the escape character) is NULL even though escaping is on; a quoted field is never
  NULL (``""`` is the empty string), an unquoted field equal to one of ``null_values`` is.
  Booleans are ``1/0/true/false/True/False/TRUE/FALSE``.  Numbers may have surrounding blanks;
  ``nan``, ``inf``, ``-inf`` are accepted for floating-point columns; integers are range-checked.
  Batches hold exactly ``batch_rows`` rows (the last one fewer; fewer than
  ``InputSpec.batch_rows`` when rows are wide, see ``InputSpec.batch_bytes``); ``Batch.line_numbers`` is given
  whenever the rows are not on consecutive lines (blank lines, rejected rows).

* **Parquet**: ``ParquetFile.iter_batches`` (one row group in memory at a time), safe casts.
* **FITS** binary tables (the first BINTABLE HDU): astropy (memmap=True) reads the header and
  column definitions only; rows are read with plain file reads in slices of ``batch_rows``
  (a memory map of a 10 GiB file would leave every touched page resident).  Big-endian data
  made native; ``TNULL`` (and, for an integer target column, NaN) become NULL; ``L`` columns are
  booleans (a zero byte is NULL); ``TZERO``/``TSCAL`` applied (unsigned and signed-byte
  conventions exactly); strings lose FITS's trailing blanks.  Floating-point NaN in a
  floating-point target stays NaN (FITS has no other float null).  Vector, variable-length,
  complex and bit columns are refused if the schema asks for them.
* **VOTable** (first TABLE): astropy cannot stream VOTable, so the whole table is parsed into
  memory and then handed out in batches; masked cells (incl. float NaN, which VOTable defines as
  the null of floats) become NULL.  Use Parquet/FITS/CSV for large inputs.

Compressed Parquet/FITS files (``.parquet.gz``, ``.fits.gz`` ...) are first decompressed to a
temporary file (in ``tempfile.gettempdir()``, i.e. ``$TMPDIR``) so that reading stays
random-access and memory-bounded.

Errors are :class:`qengine.errors.IngestError` with ``file``, ``line`` (row for binary formats)
and ``column`` set where they are known.  Extra columns of self-describing inputs (text with a
header, Parquet, FITS, VOTable) are ignored and logged at INFO; schema columns missing from the
file are filled with NULL (logged once) when nullable, otherwise an error.  A NULL in a column
that the schema declares non-nullable is a bad row.
"""
from __future__ import annotations

import bz2
import contextlib
import csv
import gzip
import logging
import math
import os
import re
import shutil
import tempfile
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from qengine.prefetch import prefetch
from qengine.errors import IngestError

__all__ = [
    "InputSpec", "Batch", "Reject", "read_batches", "batch_rows", "row_bytes", "detect_format",
    "count_bytes", "FORMATS",
]

log = logging.getLogger(__name__)

FORMATS = ("csv", "tsv", "parquet", "fits", "votable")

_EXTENSIONS = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".fits": "fits", ".fit": "fits", ".fts": "fits",
    ".vot": "votable", ".xml": "votable", ".votable": "votable",
}
_COMPRESSIONS = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2"}

_CHUNK_BYTES = int(os.environ.get("QENGINE_READER_CHUNK_BYTES", 8 << 20))  # text parsed per step
_MAX_LINE_BYTES = 256 << 20   # longer lines are refused (probably not a line-oriented file)
_PREFETCH = 2                 # text chunks read ahead by the background thread


# --------------------------------------------------------------------------------------------
# public data types


@dataclass(frozen=True)
class InputSpec:
    """How to read one input file.  Every field has a sensible default."""

    # "csv" | "tsv" | "parquet" | "fits" | "votable"; None = from the file name's extension
    format: str | None = None
    delimiter: str | None = None   # default "," for csv, "\t" for tsv (sniffed for .txt)
    header: bool | None = None     # None = detect: most first-line fields are column names
    # names of the fields in file order, for headerless text (Qserv's in.csv.field);
    # default: the schema's order.  Names not in the schema are fields to skip.
    columns: tuple[str, ...] | None = None
    null_values: tuple[str, ...] = ("\\N", "NULL", "")   # text only; Qserv writes \N
    quote_char: str | None = '"'
    escape_char: str | None = "\\"  # "\N" is still recognised as NULL
    skip_bad_rows: int = 0         # 0 = first bad row raises; N > 0 = up to N bad rows rejected
    batch_rows: int = 262_144
    # Batches are also capped at about this many bytes in memory (estimated from the schema),
    # so that a wide table (the LSST Object table: ~500 B/row -> ~65k rows) keeps a few
    # batches in flight within a small memory budget.  Not in repr(): the batch size does not
    # change what is ingested, and repr(spec) is part of the idempotency fingerprint.
    batch_bytes: int = field(default=32 << 20, repr=False)


@dataclass
class Batch:
    data: pa.RecordBatch            # exactly the target schema (column order, types, nullability)
    first_line: int                 # 1-based line (text) / row (binary formats) of data's first row
    line_numbers: np.ndarray | None  # per-row line numbers when they are not consecutive, else None


@dataclass
class Reject:
    file: str
    line: int
    column: str | None
    reason: str
    text: str | None  # the raw line, for text formats


# --------------------------------------------------------------------------------------------
# helpers shared by all formats


_TYPE_NAMES = {
    pa.bool_(): "boolean", pa.int8(): "byte", pa.int16(): "short", pa.int32(): "int",
    pa.int64(): "long", pa.float32(): "float", pa.float64(): "double", pa.string(): "string",
    pa.large_string(): "string", pa.uint8(): "unsigned byte", pa.uint16(): "unsigned short",
    pa.uint32(): "unsigned int", pa.uint64(): "unsigned long",
}


def _type_name(t: pa.DataType) -> str:
    return _TYPE_NAMES.get(t, str(t))


def _show(value, limit: int = 60) -> str:
    """A value quoted for a message, shortened if long."""
    s = value if isinstance(value, str) else str(value)
    if len(s) > limit:
        s = s[:limit] + "..."
    return repr(s)


def _int_range(t: pa.DataType) -> tuple[int, int]:
    info = np.iinfo(t.to_pandas_dtype())
    return int(info.min), int(info.max)


def _value_reason(value, target: pa.DataType) -> str:
    """Why ``value`` (a str from text or a Python value from a binary file) does not fit ``target``."""
    name = _type_name(target)
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return f"invalid UTF-8 text {_show(value.decode('utf-8', 'replace'))}"
    if pa.types.is_integer(target):
        lo, hi = _int_range(target)
        num = value
        if isinstance(value, str):
            txt = value.strip()
            try:
                num = int(txt, 10)
            except ValueError:
                try:
                    num = float(txt)
                except ValueError:
                    return f"invalid value {_show(value)} for {name}"
        if isinstance(num, bool):
            num = int(num)
        if isinstance(num, float):
            if math.isnan(num):
                return f"value nan cannot be stored in {name}"
            if math.isinf(num):
                return f"value {num} out of range for {name}"
            if not num.is_integer():
                return f"value {_show(value)} is not an integer ({name} column)"
            num = int(num)
        if isinstance(num, int) and not lo <= num <= hi:
            return f"value {num} out of range for {name} ({lo}..{hi})"
        return f"invalid value {_show(value)} for {name}"
    if pa.types.is_boolean(target) and isinstance(value, str):
        return f"invalid value {_show(value)} for boolean (expected 1, 0, true or false)"
    if pa.types.is_floating(target) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"value {value} out of range for {name}"
    return f"invalid value {_show(value)} for {name}"


def _clean_arrow_message(exc: BaseException) -> str:
    msg = str(exc).strip()
    msg = re.sub(r"^(In CSV column #\d+: )?CSV (parse|conversion) error( to \w+)?: ", "", msg)
    return msg.splitlines()[0] if msg else type(exc).__name__


def _match_names(file_names: list[str], schema: pa.Schema, *, file: str,
                 line: int | None = None) -> dict[str, int]:
    """schema field name -> index in ``file_names`` (exact match first, then case-insensitive)."""
    exact: dict[str, int] = {}
    lower: dict[str, list[int]] = {}
    for i, n in enumerate(file_names):
        if n in exact:
            raise IngestError(f"duplicate column {n!r} in file", file=file, line=line, column=n)
        exact[n] = i
        lower.setdefault(n.lower(), []).append(i)
    out: dict[str, int] = {}
    for f in schema:
        if f.name in exact:
            out[f.name] = exact[f.name]
            continue
        cands = lower.get(f.name.lower(), [])
        if len(cands) > 1:
            shown = ", ".join(file_names[i] for i in cands)
            raise IngestError(f"column name is ambiguous in file (matches {shown})",
                              file=file, line=line, column=f.name)
        if cands:
            out[f.name] = cands[0]
    return out


def _check_missing(schema: pa.Schema, matched: dict[str, int], file_names: list[str], *,
                   file: str, line: int | None, self_describing: bool) -> None:
    missing = [f for f in schema if f.name not in matched]
    for f in missing:
        if not f.nullable:
            has = ", ".join(file_names) if file_names else "no columns"
            if len(has) > 400:
                has = has[:400] + "..."
            raise IngestError(f"column {f.name!r} missing from file (file has: {has})",
                              file=file, line=line, column=f.name)
    if missing:
        log.info("%s: column(s) %s not in file: filled with NULL", file,
                 ", ".join(repr(f.name) for f in missing))
    if self_describing:
        used = set(matched.values())
        extra = [n for i, n in enumerate(file_names) if i not in used]
        if extra:
            log.info("%s: ignoring unexpected extra column(s) %s", file,
                     ", ".join(repr(n) for n in extra))


class _BadRows:
    """Counts bad rows; records them (skip mode) or raises (strict mode / over the limit)."""

    def __init__(self, file: str, limit: int, rejects: list[Reject] | None) -> None:
        self.file, self.limit, self.rejects, self.count = file, limit, rejects, 0

    def bad(self, line: int, column: str | None, reason: str, text: str | None = None) -> None:
        if self.limit <= 0:
            raise IngestError(reason, file=self.file, line=line, column=column)
        if self.count >= self.limit:
            raise IngestError(
                f"{reason} (too many bad rows: {self.count} already rejected, limit "
                f"skip_bad_rows={self.limit})", file=self.file, line=line, column=column)
        self.count += 1
        if self.rejects is not None:
            self.rejects.append(Reject(self.file, line, column, reason, text))


def _concat_batches(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatch:
    """One record batch from several (a copy; much faster than Table.combine_chunks)."""
    if len(batches) == 1:
        return batches[0]
    if hasattr(pa, "concat_batches"):
        return pa.concat_batches(batches)
    return pa.RecordBatch.from_arrays(  # pragma: no cover - pyarrow < 19
        [pa.concat_arrays([b.column(i) for b in batches]) for i in range(len(schema))],
        schema=schema)


def _batch_with_lines(rb: pa.RecordBatch, lines: np.ndarray) -> Batch:
    """A Batch whose rows come from ``lines``; line_numbers only if they are not consecutive."""
    first = int(lines[0])
    if int(lines[-1]) - first == len(lines) - 1:
        return Batch(rb, first, None)
    return Batch(rb, first, lines)


def _validate_spec(spec: InputSpec, file: str) -> None:
    if spec.batch_rows < 1:
        raise IngestError(f"batch_rows must be at least 1, not {spec.batch_rows}", file=file)
    if spec.skip_bad_rows < 0:
        raise IngestError(f"skip_bad_rows must be >= 0, not {spec.skip_bad_rows}", file=file)
    for what, ch in (("delimiter", spec.delimiter), ("quote_char", spec.quote_char),
                     ("escape_char", spec.escape_char)):
        if ch is not None and (len(ch) != 1 or ch in "\r\n"):
            raise IngestError(f"{what} must be a single character other than a line break, "
                              f"not {ch!r}", file=file)
    chars = [c for c in (spec.delimiter, spec.quote_char, spec.escape_char) if c is not None]
    if spec.escape_char is not None and spec.escape_char == spec.quote_char:
        chars.remove(spec.escape_char)  # "" doubling as the escape: allowed
    if len(set(chars)) != len(chars):
        raise IngestError("delimiter, quote_char and escape_char must differ", file=file)
    if spec.columns is not None and len({c.lower() for c in spec.columns}) != len(spec.columns):
        raise IngestError("InputSpec.columns has duplicate names", file=file)


# --------------------------------------------------------------------------------------------
# format and compression detection


def _split_compression(path: str | Path) -> tuple[str, str | None]:
    """(name without a compression suffix, compression or None), lower-cased."""
    name = os.path.basename(str(path)).lower()
    for ext, comp in _COMPRESSIONS.items():
        if name.endswith(ext):
            return name[: -len(ext)], comp
    return name, None


def _compression(path: str | Path) -> str | None:
    comp = _split_compression(path)[1]
    if comp is None:
        try:
            with open(path, "rb") as f:
                magic = f.read(3)
        except OSError:
            return None
        if magic[:2] == b"\x1f\x8b":
            return "gzip"
        if magic == b"BZh" and (Path(path).stat().st_size > 14):
            # only trust the bzip2 magic when the next byte is a block size digit
            with open(path, "rb") as f:
                head = f.read(10)
            if head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90"):
                return "bz2"
    return comp


def detect_format(path: str | Path) -> str:
    """Input format from the file name: csv, tsv, parquet, fits or votable."""
    name, _ = _split_compression(path)
    for ext in sorted(_EXTENSIONS, key=len, reverse=True):
        if name.endswith(ext):
            return _EXTENSIONS[ext]
    raise IngestError(
        f"unknown input format for {os.path.basename(str(path))!r}: expected a name ending in "
        f"{', '.join(sorted(_EXTENSIONS))} (optionally .gz or .bz2), or give InputSpec.format",
        file=str(path))


def count_bytes(path: str | Path) -> int:
    """Size of the file on disk (compressed size for compressed files), for progress reports."""
    return os.path.getsize(path)


def row_bytes(schema: pa.Schema) -> float:
    """Estimated in-memory (Arrow) bytes per row of ``schema``: fixed-width values and validity
    bits exactly, strings and binaries as 4 offset bytes plus 16 value bytes."""
    total = 0.0
    for f in schema:
        t = f.type
        try:
            total += t.bit_width / 8
        except ValueError:  # variable width
            total += 20
        total += 1 / 8
    return max(total, 1.0)


def batch_rows(schema: pa.Schema, spec: InputSpec) -> int:
    """Rows per batch: ``spec.batch_rows``, fewer for wide rows (``spec.batch_bytes``)."""
    if spec.batch_bytes <= 0:
        return spec.batch_rows
    return max(1, min(spec.batch_rows, int(spec.batch_bytes // row_bytes(schema))))


def read_batches(path: str | Path, schema: pa.Schema, spec: InputSpec = InputSpec(),
                 rejects: list[Reject] | None = None) -> Iterator[Batch]:
    """Read ``path`` in batches of at most ``batch_rows(schema, spec)`` rows (``spec.batch_rows``,
    or fewer if rows are wide) converted to ``schema``.

    Rows rejected in skip mode are appended to ``rejects`` (if given).  Raises
    :class:`IngestError` for bad input (naming file, line or row, and column).
    """
    file = str(path)
    _validate_spec(spec, file)
    n = batch_rows(schema, spec)
    if n != spec.batch_rows:
        spec = replace(spec, batch_rows=n)
    yield from _dispatch(path, file, schema, spec, rejects)


def _dispatch(path, file: str, schema: pa.Schema, spec: InputSpec,
              rejects: list[Reject] | None) -> Iterator[Batch]:
    fmt = spec.format.lower() if spec.format else detect_format(path)
    if fmt not in FORMATS:
        raise IngestError(f"unknown format {spec.format!r} (expected one of {', '.join(FORMATS)})",
                          file=file)
    if not os.path.exists(path):
        raise IngestError("file not found", file=file)
    if fmt in ("csv", "tsv"):
        return _TextReader(path, schema, spec, fmt, rejects).batches()
    bad = _BadRows(file, spec.skip_bad_rows, rejects)
    if fmt == "parquet":
        return _read_parquet(path, schema, spec, bad)
    if fmt == "fits":
        return _read_fits(path, schema, spec, bad)
    return _read_votable(path, schema, spec, bad)


# --------------------------------------------------------------------------------------------
# text (CSV / TSV)


def _text_direct(t: pa.DataType) -> bool:
    """Types pyarrow.csv converts to directly (others are read as text then cast)."""
    return (pa.types.is_boolean(t) or pa.types.is_integer(t)
            or (pa.types.is_floating(t) and t != pa.float16())
            or pa.types.is_string(t) or pa.types.is_large_string(t)
            or pa.types.is_binary(t) or pa.types.is_large_binary(t)
            or pa.types.is_date(t) or pa.types.is_timestamp(t) or pa.types.is_decimal(t)
            or pa.types.is_time(t))


class _RowCountMismatch(Exception):
    pass


class _NullInRequired(Exception):
    def __init__(self, column: str) -> None:
        super().__init__(column)
        self.column = column


class _Chunk:
    """Whole lines of the input (NULL tokens already substituted) and where they are."""

    def __init__(self, buf: bytearray, size: int, first_line: int, nlines: int) -> None:
        self.buf, self.size, self.first_line, self.nlines = buf, size, first_line, nlines
        self._index: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None

    def buffer(self) -> pa.Buffer:
        return pa.py_buffer(self.buf)[: self.size] if self.size != len(self.buf) \
            else pa.py_buffer(self.buf)

    def index(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(starts, ends, blank) per line; ends exclude the line break; blank None if none."""
        if self._index is None:
            a = np.frombuffer(self.buf, np.uint8, count=self.size)
            nl = np.flatnonzero(a == 10)
            ends = nl if (nl.size and int(nl[-1]) == self.size - 1) else np.append(nl, self.size)
            starts = np.empty_like(ends)
            if ends.size:
                starts[0] = 0
                starts[1:] = ends[:-1] + 1
            lengths = ends - starts
            blank = lengths == 0
            ones = lengths == 1
            if ones.any():
                blank |= ones & (a[np.maximum(ends - 1, 0)] == 13)
            self._index = (starts, ends, blank if blank.any() else None)
        return self._index


class _TextReader:
    def __init__(self, path: str | Path, schema: pa.Schema, spec: InputSpec, fmt: str,
                 rejects: list[Reject] | None) -> None:
        self.path, self.file, self.schema, self.spec = path, str(path), schema, spec
        self.compression = _compression(path)
        self.bad = _BadRows(self.file, spec.skip_bad_rows, rejects)
        self.workers = max(1, min(os.cpu_count() or 1, 8))
        first = self._first_line()
        name, _ = _split_compression(path)
        if spec.delimiter is not None:
            self.delimiter = spec.delimiter
        elif fmt == "tsv":
            self.delimiter = "\t"
        elif name.endswith(".txt") and spec.format is None and first is not None \
                and first.count("\t") > first.count(","):
            self.delimiter = "\t"
        else:
            self.delimiter = ","
        self.quote = spec.quote_char
        self.escape = spec.escape_char if spec.escape_char != spec.quote_char else None

        # header and the names of the fields
        fields = self._split_line(first) if first is not None else []
        if spec.header is None:
            known = {f.name.lower() for f in schema} | {c.lower() for c in (spec.columns or ())}
            hits = sum(1 for f in fields if f.strip().lower() in known)
            self.header = bool(fields) and hits * 2 > len(fields)
        else:
            self.header = bool(spec.header) and first is not None
        if spec.columns is not None:
            names = list(spec.columns)
        elif self.header:
            names = [f.strip() for f in fields]
        else:
            names = [f.name for f in schema]
        hline = 1 if self.header else None
        self.names = names
        matched = _match_names(names, schema, file=self.file, line=hline)
        _check_missing(schema, matched, names, file=self.file, line=hline,
                       self_describing=self.header and spec.columns is None)
        self.matched = matched
        # internal column names: schema names for matched fields, placeholders for the rest
        internal = [f"__qe_unused_{i}" for i in range(len(names))]
        for sname, i in matched.items():
            internal[i] = sname
        self.internal = internal
        self.read_types: dict[str, pa.DataType] = {}
        for f in schema:
            if f.name in matched:
                rt = f.type if _text_direct(f.type) else pa.string()
                if rt != f.type:
                    try:
                        pc.cast(pa.array([], pa.string()), f.type)
                    except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as exc:
                        raise IngestError(f"type {f.type} cannot be read from text ({exc})",
                                          file=self.file, column=f.name) from None
                self.read_types[f.name] = rt
        self.include = [n for n in internal if n in self.read_types]

        # NULL tokens: those containing the escape character would be unescaped by the parser
        # ("\N" -> "N"), so whole-field occurrences are replaced by a same-length sentinel first.
        specials = {self.delimiter, self.quote, self.escape, "\n", "\r"}
        self.subst: list[tuple[bytes, bytes]] = []
        nulls = list(spec.null_values)
        for tok in spec.null_values:
            if self.escape and self.escape in tok:
                sentinel = ("\x1e" * len(tok.encode())).encode()
                if "\x1e" in specials:
                    sentinel = ("\x1f" * len(tok.encode())).encode()
                self.subst.append((tok.encode(), sentinel))
                nulls.append(sentinel.decode())
        self.null_values = nulls
        self.parse_opts = pa_csv.ParseOptions(
            delimiter=self.delimiter, quote_char=self.quote if self.quote else False,
            double_quote=True, escape_char=self.escape if self.escape else False,
            newlines_in_values=False, ignore_empty_lines=True)
        self.convert_opts = self._convert_options(self.include, self.read_types)

    # -- setup helpers ------------------------------------------------------------------------

    def _open(self):
        return pa.input_stream(str(self.path), compression=self.compression)

    def _first_line(self) -> str | None:
        """The first line (for the header), and an estimate of the bytes per line."""
        try:
            with self._open() as s:
                buf = b""
                while len(buf) < (1 << 18) or (b"\n" not in buf and len(buf) < _MAX_LINE_BYTES):
                    data = s.read(1 << 18)
                    if not data:
                        break
                    buf += data
        except (OSError, EOFError, pa.ArrowException) as exc:
            raise IngestError(f"cannot read or decompress the file: {_clean_arrow_message(exc)}",
                              file=self.file) from None
        if buf.startswith(b"\xef\xbb\xbf"):
            buf = buf[3:]
        self.bytes_per_line = max(1.0, len(buf) / max(1, buf.count(b"\n")))
        if not buf:
            return None
        line = buf.split(b"\n", 1)[0].rstrip(b"\r")
        return line.decode("utf-8", "replace")

    def _split_line(self, line: str) -> list[str]:
        kw = dict(delimiter=self.delimiter, quotechar=self.quote or '"',
                  quoting=csv.QUOTE_MINIMAL if self.quote else csv.QUOTE_NONE,
                  escapechar=self.escape, doublequote=True)
        try:
            return next(csv.reader([line], **kw), [])
        except csv.Error:
            return line.split(self.delimiter)

    def _convert_options(self, include: list[str], types: dict[str, pa.DataType]):
        return pa_csv.ConvertOptions(
            column_types={n: types[n] for n in include}, include_columns=include,
            null_values=self.null_values, strings_can_be_null=True,
            quoted_strings_can_be_null=False, check_utf8=True)

    def _read_options(self, nbytes: int):
        # one block for the whole chunk (so any line fits), parsed by the calling thread
        return pa_csv.ReadOptions(column_names=self.internal, use_threads=False,
                                  block_size=int(nbytes + 1))

    # -- chunking (runs in the background thread) ---------------------------------------------

    def _chunks(self) -> Iterator[_Chunk]:
        """Cut the (decompressed) input into chunks of whole lines, at most ``batch_rows``
        lines and about ``_CHUNK_BYTES`` each (batches are assembled from several).  Runs in
        the background thread.

        Buffers are reused round-robin: parsed batches never refer to the input bytes, and at
        most _PREFETCH + workers + 3 chunks are alive at once (being filled, queued, being
        parsed, being finished), fewer than the ring holds."""
        max_lines = self.spec.batch_rows
        est = self.bytes_per_line
        # alive at once: being filled, queued, parsed by the workers, being finished
        ring: list[bytearray | None] = [None] * (_PREFETCH + self.workers + 4)
        turn = 0
        tail = b""
        line = 1
        skip_header, first, eof = self.header, True, False
        with self._open() as stream:
            while not eof:
                floor = min(1 << 16, _CHUNK_BYTES)
                target = int(min(max(est * max_lines * 0.98, floor), _CHUNK_BYTES))
                need = max(target, len(tail) + max(floor, len(tail)))  # doubles on long lines
                buf = ring[turn]
                if buf is None or len(buf) < need or len(buf) > 2 * need + (1 << 20):
                    buf = bytearray(need + need // 4)
                    ring[turn] = buf
                buf[: len(tail)] = tail
                filled = len(tail)
                with memoryview(buf) as mv:
                    while filled < need:
                        try:
                            got = stream.readinto(mv[filled:need])
                        except (OSError, EOFError, pa.ArrowException) as exc:
                            raise IngestError(
                                f"cannot read or decompress the file after line {line - 1}: "
                                f"{_clean_arrow_message(exc)}", file=self.file) from None
                        if not got:
                            eof = True
                            break
                        filled += got
                if first:
                    first = False
                    if buf.startswith(b"\xef\xbb\xbf"):
                        buf[: filled - 3] = buf[3:filled]
                        filled -= 3
                if skip_header:
                    end = buf.find(b"\n", 0, filled)
                    if end < 0 and not eof:
                        if filled > _MAX_LINE_BYTES:
                            raise IngestError("header line too long", file=self.file, line=1)
                        tail, est = bytes(buf[:filled]), est * 2
                        continue
                    if end < 0:
                        return  # a header and nothing else
                    tail = bytes(buf[end + 1: filled])
                    line, skip_header = 2, False
                    if not eof:
                        continue
                    buf[: len(tail)] = tail
                    filled, tail = len(tail), b""
                if eof:
                    cut = filled
                else:
                    cut = buf.rfind(b"\n", 0, filled) + 1
                    if cut == 0:  # no complete line yet
                        if filled > _MAX_LINE_BYTES:
                            raise IngestError(
                                f"line longer than {_MAX_LINE_BYTES >> 20} MiB (no line break "
                                "found; is this a text file with \\n or \\r\\n line ends?)",
                                file=self.file, line=line)
                        tail, est = bytes(buf[:filled]), est * 2
                        continue
                if cut == 0:
                    break
                nlines = int(np.count_nonzero(np.frombuffer(buf, np.uint8, count=cut) == 10))
                if buf[cut - 1] != 10:
                    nlines += 1  # last line without a line break
                if nlines > max_lines:  # longer lines than estimated: cut after max_lines
                    a = np.frombuffer(buf, np.uint8, count=cut)
                    cut = int(np.flatnonzero(a == 10)[max_lines - 1]) + 1
                    del a
                    nlines = max_lines
                tail = bytes(buf[cut:filled])
                eof = eof and not tail
                yield _Chunk(buf, cut, line, nlines)
                turn = (turn + 1) % len(ring)
                line += nlines
                est = 0.5 * est + 0.5 * (cut / nlines)

    def _substitute(self, buf: bytearray, n: int) -> None:
        """Overwrite whole-field NULL tokens (e.g. \\N) in buf[:n] with the sentinel."""
        if buf.find(self.escape.encode(), 0, n) < 0:
            return
        a = np.frombuffer(buf, np.uint8, count=n)
        d = ord(self.delimiter)
        for tok, sen in self.subst:
            k = len(tok)
            if n < k:
                continue
            idx = np.flatnonzero(a[: n - k + 1] == tok[0])
            for j in range(1, k):
                idx = idx[a[idx + j] == tok[j]]
            if not idx.size:
                continue
            prev = a[np.maximum(idx - 1, 0)]
            ok = (idx == 0) | (prev == d) | (prev == 10)
            after = idx + k
            nxt = a[np.minimum(after, n - 1)]
            ok &= (after == n) | (nxt == d) | (nxt == 10) | (nxt == 13)
            sel = idx[ok]
            for j in range(k):
                a[sel + j] = sen[j]

    def _unsubstitute(self, text: bytes) -> bytes:
        for tok, sen in self.subst:
            text = text.replace(sen, tok)
        return text

    # -- parsing ------------------------------------------------------------------------------

    def _parse(self, buf: pa.Buffer, nrows: int | None) -> pa.RecordBatch:
        """Parse whole lines into a batch of the target schema; raises on any bad line
        (and if ``nrows`` is given and the number of records differs).  Single-threaded:
        chunks are parsed in parallel by the worker threads."""
        table = pa_csv.read_csv(pa.BufferReader(buf), read_options=self._read_options(buf.size),
                                parse_options=self.parse_opts, convert_options=self.convert_opts)
        if nrows is not None and table.num_rows != nrows:
            raise _RowCountMismatch(f"{table.num_rows} rows parsed from {nrows} lines")
        return self._finish(table)

    def _finish(self, table: pa.Table) -> pa.RecordBatch:
        n = table.num_rows
        arrays = []
        for f in self.schema:
            if f.name in self.read_types:
                col = table.column(f.name)
                arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
                if arr.type != f.type:
                    arr = pc.cast(arr, f.type, safe=True)
            else:
                arr = pa.nulls(n, f.type)
            if not f.nullable and arr.null_count:
                raise _NullInRequired(f.name)
            arrays.append(arr)
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _lines_text(self, chunk: _Chunk, i: int) -> bytes:
        starts, ends, _ = chunk.index()
        return bytes(chunk.buf[int(starts[i]):int(ends[i])]).rstrip(b"\r")

    def _diagnose(self, line: bytes, exc: BaseException) -> tuple[str | None, str]:
        """(column, reason) for one bad line (without its line break)."""
        captured = []

        def handler(row):
            captured.append(row)
            return "skip"

        data = pa.py_buffer(line + b"\n")
        ropts = pa_csv.ReadOptions(column_names=self.internal, use_threads=False)
        popts = pa_csv.ParseOptions(
            delimiter=self.delimiter, quote_char=self.quote if self.quote else False,
            double_quote=True, escape_char=self.escape if self.escape else False,
            newlines_in_values=False, ignore_empty_lines=True, invalid_row_handler=handler)
        try:
            raw = pa_csv.read_csv(pa.BufferReader(data), read_options=ropts, parse_options=popts,
                                  convert_options=pa_csv.ConvertOptions(
                                      column_types={n: pa.binary() for n in self.internal},
                                      null_values=[], strings_can_be_null=False,
                                      quoted_strings_can_be_null=False))
        except pa.ArrowException as e:
            return None, f"cannot parse line: {_clean_arrow_message(e)}"
        if captured:
            want, got = len(self.internal), captured[0].actual_columns
            if got < want:  # name the first field without a value
                i = got
                return (self.internal[i] if self.internal[i] in self.read_types
                        else self.names[i]), f"expected {want} fields, found {got}"
            return None, (f"expected {want} fields, found {got} (extra field(s) after column "
                          f"{self.names[-1]!r})")
        if raw.num_rows != 1:
            return None, ("line contains a carriage return (CR) or a line break inside a value "
                          f"({raw.num_rows} records on one line)")
        popts.invalid_row_handler = None
        for name in self.include:
            try:
                t = pa_csv.read_csv(pa.BufferReader(data), read_options=ropts, parse_options=popts,
                                    convert_options=self._convert_options([name], self.read_types))
                arr = t.column(name).combine_chunks()
                target = self.schema.field(name)
                if arr.type != target.type:
                    arr = pc.cast(arr, target.type, safe=True)
                if not target.nullable and arr.null_count:
                    return name, "NULL value in a non-nullable column"
            except pa.ArrowException:
                value = raw.column(name)[0].as_py()
                value = self._unsubstitute(value)
                return name, _value_reason(value, self.schema.field(name).type)
        if isinstance(exc, _NullInRequired):
            return exc.column, "NULL value in a non-nullable column"
        return None, _clean_arrow_message(exc)

    def _process(self, chunk: _Chunk, parsed) -> Batch | None:
        """The batch of a chunk from its parse result (a batch or the exception raised)."""
        buf = chunk.buffer()
        if isinstance(parsed, BaseException):
            return self._salvage(chunk, buf)
        rb = parsed
        if rb.num_rows == chunk.nlines:
            return Batch(rb, chunk.first_line, None) if rb.num_rows else None
        _, _, blank = chunk.index()
        if blank is None or rb.num_rows != int((~blank).sum()):
            # records do not match lines (a CR or quoted line break inside a value)
            return self._salvage(chunk, buf)
        if not rb.num_rows:
            return None
        return _batch_with_lines(rb, np.flatnonzero(~blank).astype(np.int64) + chunk.first_line)

    def _salvage(self, chunk: _Chunk, buf: pa.Buffer) -> Batch | None:
        """Find the bad lines of a chunk by bisection with the same parser; report/drop them."""
        starts, ends, blank = chunk.index()
        pieces: list[pa.RecordBatch] = []
        good_lines: list[np.ndarray] = []
        stack = [(0, len(starts))]
        while stack:
            lo, hi = stack.pop()
            idx = np.arange(lo, hi) if blank is None else np.flatnonzero(~blank[lo:hi]) + lo
            if not idx.size:
                continue
            a, b = int(starts[lo]), int(ends[hi - 1])
            part = buf.slice(a, min(b + 1, buf.size) - a)
            try:
                rb = self._parse(part, idx.size)
            except (pa.ArrowException, _RowCountMismatch, _NullInRequired) as exc:
                if idx.size == 1:
                    i = int(idx[0])
                    text = self._lines_text(chunk, i)
                    column, reason = self._diagnose(text, exc)
                    self.bad.bad(chunk.first_line + i, column, reason,
                                 self._unsubstitute(text).decode("utf-8", "replace"))
                    continue
                mid = int(idx[idx.size // 2])
                stack.append((mid, hi))
                stack.append((lo, mid))
                continue
            pieces.append(rb)
            good_lines.append(idx)
        if not pieces:
            return None
        rb = _concat_batches(pieces, self.schema)
        return _batch_with_lines(rb, np.concatenate(good_lines).astype(np.int64) + chunk.first_line)

    def _try_parse(self, chunk: _Chunk):
        """In a worker thread: substitute NULL tokens, then parse (or return the error)."""
        if self.subst:
            self._substitute(chunk.buf, chunk.size)
        try:
            return self._parse(chunk.buffer(), None)
        except (pa.ArrowException, _NullInRequired) as exc:
            return exc

    def _pieces(self) -> Iterator[Batch | None]:
        """Chunks parsed in parallel (one chunk per worker thread), results in file order."""
        workers = self.workers
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qengine-csv") as pool:
            inflight: deque = deque()
            try:
                for chunk in prefetch(self._chunks, _PREFETCH, name="qengine-reader"):
                    inflight.append((chunk, pool.submit(self._try_parse, chunk)))
                    if len(inflight) > workers:
                        c, fut = inflight.popleft()
                        yield self._process(c, fut.result())
                while inflight:
                    c, fut = inflight.popleft()
                    yield self._process(c, fut.result())
            finally:
                for _, fut in inflight:
                    fut.cancel()

    def batches(self) -> Iterator[Batch]:
        yield from _rebatch(self._pieces(), self.spec.batch_rows, self.schema)


def _rebatch(pieces: Iterable[Batch | None], size: int, schema: pa.Schema) -> Iterator[Batch]:
    """Batches of exactly ``size`` rows (the last one smaller) from pieces of any size."""
    pending: list[Batch] = []
    rows = 0

    def take(n: int) -> Batch:
        nonlocal rows
        parts: list[Batch] = []
        got = 0
        while got < n:
            p = pending[0]
            k = p.data.num_rows
            if got + k <= n:
                parts.append(pending.pop(0))
                got += k
            else:
                m = n - got
                head = Batch(p.data.slice(0, m), p.first_line,
                             None if p.line_numbers is None else p.line_numbers[:m])
                rest_lines = None if p.line_numbers is None else p.line_numbers[m:]
                rest_first = p.first_line + m if rest_lines is None else int(rest_lines[0])
                pending[0] = Batch(p.data.slice(m), rest_first, rest_lines)
                parts.append(head)
                got = n
        rows -= n
        if len(parts) == 1:
            return parts[0]
        rb = _concat_batches([p.data for p in parts], schema)
        lines = np.concatenate([
            p.line_numbers if p.line_numbers is not None
            else np.arange(p.first_line, p.first_line + p.data.num_rows, dtype=np.int64)
            for p in parts])
        return _batch_with_lines(rb, lines)

    for piece in pieces:
        if piece is None or not piece.data.num_rows:
            continue
        pending.append(piece)
        rows += piece.data.num_rows
        while rows >= size:
            yield take(size)
    if rows:
        yield take(rows)


# --------------------------------------------------------------------------------------------
# columnar formats (Parquet, FITS, VOTable): cast to the target, locate failures


def _bad_positions(arr: pa.Array, target: pa.DataType) -> list[int]:
    """Indices of the elements of ``arr`` that do not cast safely to ``target``."""
    out: list[int] = []
    stack = [(0, len(arr))]
    while stack:
        lo, hi = stack.pop()
        try:
            pc.cast(arr.slice(lo, hi - lo), target, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            if hi - lo == 1:
                out.append(lo)
                continue
            mid = (lo + hi) // 2
            stack.append((mid, hi))
            stack.append((lo, mid))
    return out


def _convert_columns(columns: dict[str, pa.Array], n: int, schema: pa.Schema, first_row: int,
                     bad: _BadRows) -> Batch | None:
    """Cast source arrays (by schema name; missing = NULL) to ``schema``; rows 1-based from
    ``first_row``.  Bad rows raise or, in skip mode, are rejected and dropped."""
    arrays: list[pa.Array] = []
    problems: dict[int, tuple[str, str]] = {}
    for f in schema:
        src = columns.get(f.name)
        if src is None:
            arrays.append(pa.nulls(n, f.type))
            continue
        if isinstance(src, pa.ChunkedArray):
            src = src.combine_chunks()
        if src.type == f.type:
            arr = src
        else:
            try:
                arr = pc.cast(src, f.type, safe=True)
            except pa.ArrowNotImplementedError as exc:
                raise IngestError(f"cannot convert {src.type} to {_type_name(f.type)}: {exc}",
                                  file=bad.file, column=f.name) from None
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                positions = _bad_positions(src, f.type)
                if not positions:  # fails as a whole but not row by row: report the column
                    try:
                        pc.cast(src, f.type, safe=True)
                    except pa.ArrowException as exc:
                        raise IngestError(
                            f"cannot convert {src.type} to {_type_name(f.type)}: "
                            f"{_clean_arrow_message(exc)}", file=bad.file, line=first_row,
                            column=f.name) from None
                for i in positions:
                    if i not in problems:
                        problems[i] = (f.name, _value_reason(src[i].as_py(), f.type))
                mask = np.ones(n, bool)
                mask[positions] = False
                # NULL where it failed; those rows are dropped below anyway
                arr = pc.cast(pc.if_else(pa.array(mask), src, pa.nulls(n, src.type)), f.type,
                              safe=True)
        if not f.nullable and arr.null_count:
            nulls = np.flatnonzero(~np.asarray(arr.is_valid().to_numpy(zero_copy_only=False)))
            for i in nulls.tolist():
                if i not in problems:
                    problems[i] = (f.name, "NULL value in a non-nullable column")
        arrays.append(arr)
    rb = pa.RecordBatch.from_arrays(arrays, schema=schema)
    if not problems:
        return Batch(rb, first_row, None) if n else None
    for i in sorted(problems):
        col, reason = problems[i]
        bad.bad(first_row + i, col, reason, None)
    keep = np.ones(n, bool)
    keep[list(problems)] = False
    rb = rb.filter(pa.array(keep))
    if not rb.num_rows:
        return None
    return _batch_with_lines(rb, np.flatnonzero(keep).astype(np.int64) + first_row)


@contextlib.contextmanager
def _uncompressed(path: str | Path):
    """A local uncompressed path for random-access formats (temp copy if compressed)."""
    comp = _compression(path)
    if comp is None:
        yield str(path)
        return
    opener = gzip.open if comp == "gzip" else bz2.open
    fd, tmp = tempfile.mkstemp(prefix="qengine-ingest-", suffix=os.path.splitext(
        _split_compression(path)[0])[1])
    try:
        try:
            with os.fdopen(fd, "wb") as out, opener(path, "rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)
        except (OSError, EOFError) as exc:
            raise IngestError(f"cannot decompress file: {exc}", file=str(path)) from None
        yield tmp
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _read_parquet(path, schema: pa.Schema, spec: InputSpec, bad: _BadRows) -> Iterator[Batch]:
    import pyarrow.parquet as pq

    with _uncompressed(path) as local:
        try:
            pf = pq.ParquetFile(local)
        except (pa.ArrowException, OSError) as exc:
            raise IngestError(f"not a readable Parquet file: {_clean_arrow_message(exc)}",
                              file=bad.file) from None
        names = pf.schema_arrow.names
        matched = _match_names(names, schema, file=bad.file)
        _check_missing(schema, matched, names, file=bad.file, line=None, self_describing=True)
        wanted = [names[i] for i in matched.values()]
        if not wanted and pf.metadata.num_rows:
            # no column of the schema in the file: rows of NULLs (all schema columns nullable)
            done = 0
            total = pf.metadata.num_rows
            while done < total:
                n = min(spec.batch_rows, total - done)
                b = _convert_columns({}, n, schema, done + 1, bad)
                if b is not None:
                    yield b
                done += n
            return
        row = 1
        try:
            it = pf.iter_batches(batch_size=spec.batch_rows, columns=wanted, use_threads=True)
            for rb in it:
                cols = {s: rb.column(names[i]) for s, i in matched.items()}
                b = _convert_columns(cols, rb.num_rows, schema, row, bad)
                row += rb.num_rows
                if b is not None:
                    yield b
        except (pa.ArrowException, OSError) as exc:
            raise IngestError(f"cannot read Parquet data: {_clean_arrow_message(exc)}",
                              file=bad.file, line=row) from None


def _native(a: np.ndarray) -> np.ndarray:
    if a.dtype.byteorder not in ("=", "|"):
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def _fits_scaled(raw: np.ndarray, code: str, scale, zero) -> np.ndarray:
    """Apply TSCAL/TZERO to native raw values (FITS unsigned/signed-byte conventions exact)."""
    scale = 1 if scale in (None, "") else scale
    zero = 0 if zero in (None, "") else zero
    if scale == 1 and zero == 0:
        return raw
    if scale == 1 and code in ("I", "J", "K") and zero == 2 ** (raw.dtype.itemsize * 8 - 1):
        unsigned = np.dtype(f"u{raw.dtype.itemsize}")
        return raw.view(unsigned) ^ unsigned.type(zero)
    if scale == 1 and code == "B" and zero == -128:
        return (raw ^ np.uint8(0x80)).view(np.int8)
    return raw.astype(np.float64) * scale + zero


def _read_fits(path, schema: pa.Schema, spec: InputSpec, bad: _BadRows) -> Iterator[Batch]:
    """FITS binary table: astropy reads the header; rows are read with plain file reads in
    slices of ``batch_rows`` (memory and RSS stay bounded, unlike a memory map of the whole
    file, which keeps every touched page resident)."""
    import warnings

    from astropy.io import fits

    with _uncompressed(path) as local, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            hdul = fits.open(local, memmap=True, mode="readonly", lazy_load_hdus=True)
            hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU)
                        and not isinstance(h, fits.CompImageHDU)), None)
        except (OSError, ValueError, TypeError) as exc:
            raise IngestError(f"not a readable FITS file: {exc}", file=bad.file) from None
        with hdul:
            if hdu is None:
                raise IngestError("no binary table extension in FITS file", file=bad.file)
            cols = hdu.columns
            names = list(cols.names)
            matched = _match_names(names, schema, file=bad.file)
            _check_missing(schema, matched, names, file=bad.file, line=None,
                           self_describing=True)
            nrows = int(hdu.header.get("NAXIS2", 0))
            rowlen = int(hdu.header.get("NAXIS1", 0))
            offset = int(hdu.fileinfo()["datLoc"])
            # on-disk record layout: FITS is big-endian
            fields = []
            for name, (dt, off) in zip(cols.dtype.names, [cols.dtype.fields[n][:2]
                                                           for n in cols.dtype.names]):
                base = dt.base
                if base.kind in "iuf" and base.itemsize > 1:
                    base = base.newbyteorder(">")
                fields.append((name, np.dtype((base, dt.shape)) if dt.shape else base, off))
            disk = np.dtype({"names": [f[0] for f in fields], "formats": [f[1] for f in fields],
                             "offsets": [f[2] for f in fields], "itemsize": rowlen})
            info = {}
            for sname, i in matched.items():
                col = cols[i]
                fmt = col.format
                code = str(getattr(fmt, "format", str(fmt)[-1:]))
                repeat = getattr(fmt, "repeat", 1) or 1
                if code.startswith(("P", "Q")) or "P" in code or "Q" in code:
                    raise IngestError(f"FITS column {col.name!r} is a variable-length array; "
                                      "a scalar is expected", file=bad.file, column=sname)
                if code in ("C", "M", "X"):
                    raise IngestError(f"FITS column {col.name!r} has unsupported TFORM {fmt}",
                                      file=bad.file, column=sname)
                if code != "A" and repeat != 1:
                    raise IngestError(f"FITS column {col.name!r} holds {repeat} values per row "
                                      f"(TFORM {fmt}); a scalar is expected",
                                      file=bad.file, column=sname)
                info[sname] = (disk.names[i], code, col)
        if nrows == 0:
            return
        with open(local, "rb") as f:
            for start in range(0, nrows, spec.batch_rows):
                stop = min(nrows, start + spec.batch_rows)
                f.seek(offset + start * rowlen)
                raw = np.fromfile(f, dtype=disk, count=stop - start)
                if len(raw) != stop - start:
                    raise IngestError(f"FITS file truncated: expected {nrows} rows",
                                      file=bad.file, line=start + len(raw) + 1)
                arrays: dict[str, pa.Array] = {}
                for sname, (field, code, col) in info.items():
                    target = schema.field(sname).type
                    rawv = raw[field]
                    mask = None
                    if code == "L":
                        mask = rawv == 0
                        arr = pa.array(rawv == ord("T"), mask=mask if mask.any() else None)
                    elif code == "A":
                        arr = pc.utf8_rtrim(pc.cast(pa.array(rawv, pa.binary()), pa.string()),
                                            characters=" ")
                    else:
                        rawv = _native(rawv)
                        if col.null is not None and code in ("B", "I", "J", "K"):
                            mask = rawv == int(col.null)  # TNULL: the stored value
                        vals = _fits_scaled(rawv, code, col.bscale, col.bzero)
                        if vals.dtype.kind == "f" and (pa.types.is_integer(target)
                                                       or pa.types.is_boolean(target)):
                            nan = np.isnan(vals)
                            if nan.any():
                                mask = nan if mask is None else (mask | nan)
                                vals = np.where(nan, 0, vals)
                        arr = pa.array(vals, mask=mask if mask is not None and mask.any()
                                       else None)
                    arrays[sname] = arr
                b = _convert_columns(arrays, stop - start, schema, start + 1, bad)
                if b is not None:
                    yield b


def _read_votable(path, schema: pa.Schema, spec: InputSpec, bad: _BadRows) -> Iterator[Batch]:
    """VOTable: parsed whole into memory by astropy (it cannot stream), then batched."""
    import warnings

    from astropy.io.votable import parse

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            vot = parse(str(path), verify="ignore")
            table = vot.get_first_table().to_table(use_names_over_ids=True)
        except Exception as exc:  # noqa: BLE001 - astropy raises many kinds
            raise IngestError(f"not a readable VOTable: {exc}", file=bad.file) from None
    names = list(table.colnames)
    matched = _match_names(names, schema, file=bad.file)
    _check_missing(schema, matched, names, file=bad.file, line=None, self_describing=True)
    arrays: dict[str, pa.Array] = {}
    for sname, i in matched.items():
        col = table.columns[i]
        if col.ndim > 1 and col.dtype.kind != "U":
            raise IngestError(f"VOTable field {col.name!r} holds arrays; a scalar is expected",
                              file=bad.file, column=sname)
        mask = np.ma.getmaskarray(col) if hasattr(col, "mask") else None
        vals = np.asarray(np.ma.getdata(col))
        if vals.dtype.kind == "O":
            arr = pa.array(vals.tolist(), mask=mask)
        else:
            vals = _native(vals)
            if vals.dtype.kind == "S":
                vals = vals.astype(str)
            arr = pa.array(vals, mask=mask if mask is not None and mask.any() else None)
        arrays[sname] = arr
    n = len(table)
    del table, vot
    for start in range(0, n, spec.batch_rows):
        stop = min(n, start + spec.batch_rows)
        cols = {k: v.slice(start, stop - start) for k, v in arrays.items()}
        b = _convert_columns(cols, stop - start, schema, start + 1, bad)
        if b is not None:
            yield b
