"""Tests for partitioner.readers: streaming input readers for bulk ingest.

Round trips (hypothesis) through CSV/TSV (Qserv style, with/without header, gzip/bz2, CRLF),
Parquet, FITS and VOTable; batch bounds and line numbers; precise errors; skip mode.
"""
from __future__ import annotations

import bz2
import gzip
import itertools
import logging
import math
import os
import struct

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import partitioner.readers as readers
from partitioner.readers import (Batch, InputSpec, Reject, count_bytes, detect_format,
                                 read_batches)
from qengine.errors import IngestError

SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("ra", pa.float64()),
    pa.field("mag", pa.float32()),
    pa.field("nobs", pa.int32()),
    pa.field("flags", pa.int16()),
    pa.field("tiny", pa.int8()),
    pa.field("ok", pa.bool_()),
    pa.field("name", pa.string()),
])
NAMES = SCHEMA.names

# small and deterministic by default (the suite must stay fast); READERS_EXAMPLES=500 to dig
_N = int(os.environ.get("READERS_EXAMPLES", "12"))
EXAMPLES = settings(max_examples=_N, deadline=None, derandomize=_N <= 12,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])
_counter = itertools.count()


# ------------------------------------------------------------------------------------------
# helpers


def _ints(bits: int, nullable: bool = True):
    s = st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    return st.one_of(st.none(), s) if nullable else s


def _floats(width: int = 64):
    special = ([0.1, 1 / 3, 2.0 ** -1074, 1.7976931348623157e308, 123456789.12345678, -0.0]
               if width == 64 else
               [float(np.float32(x)) for x in (0.1, 1 / 3, 1e-45, 3.4028235e38, 16777217.0)])
    return st.one_of(st.none(), st.floats(width=width), st.sampled_from(special))


_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r\x1e\x1f"),
                max_size=12)


def rows_strategy(floats=_floats, text=_TEXT, max_size=25):
    row = st.fixed_dictionaries({
        "id": _ints(64, nullable=False), "ra": floats(64), "mag": floats(32),
        "nobs": _ints(32), "flags": _ints(16), "tiny": _ints(8),
        "ok": st.one_of(st.none(), st.booleans()), "name": st.one_of(st.none(), text),
    })
    return st.lists(row, max_size=max_size)


def to_table(rows: list[dict], schema: pa.Schema = SCHEMA) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema)


def read_all(path, schema=SCHEMA, spec=InputSpec(), rejects=None) -> tuple[pa.Table, list[Batch]]:
    batches = list(read_batches(path, schema, spec, rejects))
    for b in batches:
        assert b.data.schema == schema
        assert 0 < b.data.num_rows <= spec.batch_rows
    table = pa.Table.from_batches([b.data for b in batches], schema=schema)
    return table, batches


def _float_bits(values, width):
    fmt, cast = ("<d", "<q") if width == 64 else ("<f", "<i")
    return [None if v is None else ("nan" if math.isnan(v) else
                                   struct.unpack(cast, struct.pack(fmt, v))[0]) for v in values]


def assert_same(got: pa.Table, want: pa.Table) -> None:
    """Equal column by column; floats bit-exact (any NaN equals any NaN), NULLs where expected."""
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    for name in want.column_names:
        g, w = got.column(name).to_pylist(), want.column(name).to_pylist()
        t = want.schema.field(name).type
        if pa.types.is_floating(t):
            width = 32 if t == pa.float32() else 64
            assert _float_bits(g, width) == _float_bits(w, width), name
        else:
            assert g == w, name


def line_numbers(batches: list[Batch]) -> list[int]:
    out: list[int] = []
    for b in batches:
        if b.line_numbers is None:
            out.extend(range(b.first_line, b.first_line + b.data.num_rows))
        else:
            assert len(b.line_numbers) == b.data.num_rows
            assert b.first_line == b.line_numbers[0]
            out.extend(int(x) for x in b.line_numbers)
    return out


def _fmt_float(v, width):
    if width == 32:
        return str(np.float32(v))
    return repr(float(v))


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_text(path, table: pa.Table, *, delimiter=",", header=True, null="\\N", crlf=False,
               trailing_newline=True, names=None, bool_style=0) -> list[str]:
    """Qserv/MySQL-style text: \\N nulls, backslash escapes, strings quoted."""
    cols = names or table.column_names
    lines = []
    if header:
        lines.append(delimiter.join(cols))
    data = table.to_pylist()
    for i, row in enumerate(data):
        fields = []
        for name in cols:
            v = row[name]
            t = table.schema.field(name).type
            if v is None:
                fields.append(null)
            elif pa.types.is_boolean(t):
                style = (bool_style + i) % 3
                fields.append(("1" if v else "0") if style == 0 else
                              ("true" if v else "false") if style == 1 else
                              ("True" if v else "FALSE"))
            elif pa.types.is_floating(t):
                fields.append(_fmt_float(v, 32 if t == pa.float32() else 64))
            elif pa.types.is_string(t):
                fields.append(_quote(v))
            else:
                fields.append(str(v))
        lines.append(delimiter.join(fields))
    nl = "\r\n" if crlf else "\n"
    text = nl.join(lines) + (nl if trailing_newline and lines else "")
    raw = text.encode("utf-8")
    name = str(path)
    if name.endswith(".gz"):
        raw = gzip.compress(raw)
    elif name.endswith(".bz2"):
        raw = bz2.compress(raw)
    with open(path, "wb") as f:
        f.write(raw)
    return lines


@pytest.fixture(scope="module")
def tdir(tmp_path_factory):
    return tmp_path_factory.mktemp("readers")


def fresh(tdir, suffix: str):
    return tdir / f"f{next(_counter)}{suffix}"


# ------------------------------------------------------------------------------------------
# round trips


@EXAMPLES
@given(rows=rows_strategy(), variant=st.sampled_from([
    dict(suffix=".csv"), dict(suffix=".csv", header=False), dict(suffix=".tsv", delimiter="\t"),
    dict(suffix=".csv.gz"), dict(suffix=".tsv.bz2", delimiter="\t", header=False),
    dict(suffix=".csv", crlf=True), dict(suffix=".csv", trailing_newline=False),
    dict(suffix=".csv", null="NULL"), dict(suffix=".txt", delimiter="\t"),
]), batch_rows=st.sampled_from([1, 3, 7, 1000]))
def test_text_round_trip(tdir, rows, variant, batch_rows):
    variant = dict(variant)
    path = fresh(tdir, variant.pop("suffix"))
    table = to_table(rows)
    write_text(path, table, **variant)
    got, batches = read_all(path, spec=InputSpec(batch_rows=batch_rows))
    assert_same(got, table)
    # exactly batch_rows per batch except the last
    sizes = [b.data.num_rows for b in batches]
    assert all(s == batch_rows for s in sizes[:-1])
    first = 2 if variant.get("header", True) else 1
    assert line_numbers(batches) == list(range(first, first + len(rows)))
    assert all(b.line_numbers is None for b in batches)


@settings(max_examples=max(8, _N // 2), deadline=None, derandomize=_N <= 12,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_strategy(max_size=60), chunk=st.sampled_from([64, 200, 1000]),
       batch_rows=st.sampled_from([5, 16, 100]))
def test_text_many_small_chunks(tdir, rows, chunk, batch_rows, monkeypatch):
    """Batches assembled from many parse chunks keep exact sizes and line numbers."""
    monkeypatch.setattr(readers, "_CHUNK_BYTES", chunk)
    path = fresh(tdir, ".csv")
    table = to_table(rows)
    write_text(path, table)
    got, batches = read_all(path, spec=InputSpec(batch_rows=batch_rows))
    assert_same(got, table)
    assert [b.data.num_rows for b in batches][:-1] == [batch_rows] * (len(batches) - 1)
    assert line_numbers(batches) == list(range(2, 2 + len(rows)))


@EXAMPLES
@given(rows=rows_strategy(), batch_rows=st.sampled_from([1, 4, 1000]))
def test_parquet_round_trip(tdir, rows, batch_rows):
    path = fresh(tdir, ".parquet")
    table = to_table(rows)
    pq.write_table(table, path, row_group_size=5)
    got, batches = read_all(path, spec=InputSpec(batch_rows=batch_rows))
    assert_same(got, table)
    assert line_numbers(batches) == list(range(1, 1 + len(rows)))


def _fits_table(table: pa.Table, path) -> None:
    """Write with explicit TNULLs for integer columns (astropy.io.fits, big-endian on disk)."""
    from astropy.io import fits

    fmts = {pa.int64(): ("K", np.int64), pa.int32(): ("J", np.int32), pa.int16(): ("I", np.int16),
            pa.int8(): ("I", np.int16), pa.float64(): ("D", np.float64),
            pa.float32(): ("E", np.float32), pa.bool_(): ("L", bool)}
    cols = []
    for f in table.schema:
        vals = table.column(f.name).to_pylist()
        if pa.types.is_string(f.type):
            width = max([len(v.encode()) for v in vals if v] + [1])
            cols.append(fits.Column(name=f.name.upper(), format=f"{width}A",
                                    array=np.array([v or "" for v in vals], dtype=f"S{width}")))
            continue
        code, dt = fmts[f.type]
        null = None
        if pa.types.is_integer(f.type) and any(v is None for v in vals):
            used = {v for v in vals if v is not None}
            null = next(x for x in itertools.count(int(np.iinfo(dt).min)) if x not in used)
        arr = np.array([null if v is None and null is not None else (v if v is not None else 0)
                        for v in vals], dtype=dt)
        cols.append(fits.Column(name=f.name.upper(), format=code, null=null, array=arr))
    fits.BinTableHDU.from_columns(cols).writeto(path, overwrite=True)


_ASCII = st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=10)


@EXAMPLES
@given(rows=rows_strategy(floats=lambda w: st.floats(width=w), text=_ASCII),
       batch_rows=st.sampled_from([2, 1000]), gz=st.booleans())
def test_fits_round_trip(tdir, rows, batch_rows, gz):
    for r in rows:  # FITS has no NULL for floats, booleans or strings
        r["ok"] = bool(r["ok"])
        r["name"] = r["name"] or ""
    table = to_table(rows)
    path = fresh(tdir, ".fits")
    _fits_table(table, path)
    if gz:
        gzpath = fresh(tdir, ".fits.gz")
        gzpath.write_bytes(gzip.compress(path.read_bytes()))
        path = gzpath
    got, batches = read_all(path, spec=InputSpec(batch_rows=batch_rows))
    assert_same(got, table)
    assert line_numbers(batches) == list(range(1, 1 + len(rows)))


_XML_TEXT = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF,
                                  blacklist_categories=("Cs", "Cc")), max_size=10)


@EXAMPLES
@given(rows=rows_strategy(text=_XML_TEXT), batch_rows=st.sampled_from([3, 1000]))
def test_votable_round_trip(tdir, rows, batch_rows):
    from astropy.table import MaskedColumn, Table

    table = to_table(rows)
    t = Table()
    for f in SCHEMA:
        vals = table.column(f.name).to_pylist()
        mask = [v is None for v in vals]
        if pa.types.is_string(f.type):
            t[f.name] = MaskedColumn([v or "" for v in vals], mask=mask, dtype=str)
        else:
            dt = np.int16 if f.type == pa.int8() else f.type.to_pandas_dtype()  # no int8 in VOTable
            t[f.name] = MaskedColumn(np.array([0 if v is None else v for v in vals], dtype=dt),
                                     mask=mask)
    path = fresh(tdir, ".vot")
    t.write(path, format="votable")
    got, _ = read_all(path, spec=InputSpec(batch_rows=batch_rows))
    # VOTable: NaN is the NULL of floats; a NULL string is written as an empty one
    want = []
    for r in rows:
        r = dict(r)
        for k in ("ra", "mag"):
            if r[k] is not None and math.isnan(r[k]):
                r[k] = None
        if r["name"] is None:
            r["name"] = ""
        if r["mag"] is not None:
            r["mag"] = float(np.float32(r["mag"]))
        want.append(r)
    assert_same(got, to_table(want))


# ------------------------------------------------------------------------------------------
# text specifics


def test_qserv_nulls_escapes_and_quotes(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(
        b'id,ra,mag,nobs,flags,tiny,ok,name\n'
        b'1,\\N,\\N,\\N,\\N,\\N,\\N,\\N\n'          # all NULL
        b'2,1.5,2.5,3,4,5,true,N\n'                  # a plain N is a string
        b'3,NULL,,7,8,9,0,"\\\\N"\n'                 # quoted \\N is the text \N
        b'4,-0.0,nan,-2147483648,-32768,-128,1,a\\,b\n'   # escaped delimiter
        b'5,inf,-inf,2147483647,32767,127,FALSE,""\n'     # quoted empty string
        b'6,1e-300,1,0,0,0,True,"say \\"hi\\""\n')
    got, batches = read_all(path)
    assert got.column("name").to_pylist() == [None, "N", "\\N", "a,b", "", 'say "hi"']
    assert got.column("ra").to_pylist()[:2] == [None, 1.5]
    assert got.column("ra")[2].as_py() is None
    assert math.copysign(1, got.column("ra")[3].as_py()) == -1
    assert got.column("nobs").to_pylist() == [None, 3, 7, -2147483648, 2147483647, 0]
    assert got.column("ok").to_pylist() == [None, True, False, True, False, True]
    assert got.column("mag")[1].as_py() == 2.5 and got.column("mag")[2].as_py() is None
    assert math.isnan(got.column("mag")[3].as_py())


def test_headerless_with_explicit_columns(tmp_path):
    path = tmp_path / "h.txt"
    # file order differs from the schema; 'junk' is not in the schema; mag, flags missing
    path.write_text("a,7,1.25,x\nb,8,2.5,y\n")
    spec = InputSpec(columns=("name", "ID", "RA", "junk"), batch_rows=10)
    got, batches = read_all(path, spec=spec)
    assert got.column("id").to_pylist() == [7, 8]
    assert got.column("name").to_pylist() == ["a", "b"]
    assert got.column("ra").to_pylist() == [1.25, 2.5]
    assert got.column("mag").null_count == 2
    assert batches[0].first_line == 1


def test_header_detection_case_insensitive_and_extra_column(tmp_path, caplog):
    path = tmp_path / "h.csv"
    path.write_text("ID,Ra,extra,NAME\n1,2.5,zzz,a\n")
    with caplog.at_level(logging.INFO, logger="partitioner.readers"):
        got, batches = read_all(path)
    assert got.column("id").to_pylist() == [1] and got.column("name").to_pylist() == ["a"]
    assert batches[0].first_line == 2
    assert "extra" in caplog.text  # ignored, logged
    assert caplog.text.count("filled with NULL") == 1  # missing nullable columns, logged once


def test_blank_lines_bom_and_line_numbers(tmp_path):
    path = tmp_path / "b.csv"
    path.write_bytes(b"\xef\xbb\xbfid,name\n1,a\n\n2,b\r\n\r\n\n3,c\n\n")
    got, batches = read_all(path, spec=InputSpec(batch_rows=2))
    assert got.column("id").to_pylist() == [1, 2, 3]
    assert line_numbers(batches) == [2, 4, 7]


@pytest.mark.parametrize("content,spec", [
    (b"", InputSpec()), (b"", InputSpec(header=True)), (b"id,ra,name\n", InputSpec()),
    (b"ID,RA,NAME", InputSpec(header=True)), (b"\n\n", InputSpec()), (b"\r\n", InputSpec()),
])
def test_empty_and_header_only(tmp_path, content, spec):
    path = tmp_path / "e.csv"
    path.write_bytes(content)
    assert list(read_batches(path, SCHEMA, spec)) == []


def test_empty_gz(tmp_path):
    path = tmp_path / "e.csv.gz"
    path.write_bytes(gzip.compress(b""))
    assert list(read_batches(path, SCHEMA)) == []


def test_booleans_and_overflow_boundaries(tmp_path):
    schema = pa.schema([pa.field("b", pa.bool_()), pa.field("i", pa.int8()),
                        pa.field("u", pa.uint16())])
    path = tmp_path / "b.csv"
    path.write_text("b,i,u\n0,-128,0\n1,127,65535\ntrue,0,1\nfalse,1,2\n")
    got, _ = read_all(path, schema)
    assert got.column("b").to_pylist() == [False, True, True, False]
    assert got.column("i").to_pylist() == [-128, 127, 0, 1]
    assert got.column("u").to_pylist() == [0, 65535, 1, 2]


def test_other_types_read_as_text_then_cast(tmp_path):
    schema = pa.schema([pa.field("d", pa.date32()), pa.field("h", pa.float16())])
    path = tmp_path / "t.csv"
    path.write_text("d,h\n2024-01-02,1.5\n\\N,\\N\n")
    got, _ = read_all(path, schema)
    assert got.column("d").to_pylist()[1] is None
    assert str(got.column("d")[0]) == "2024-01-02"
    assert got.column("h").to_pylist() == [1.5, None]


# ------------------------------------------------------------------------------------------
# errors: file, line and column named


def _good_lines(n: int, start: int = 0) -> list[str]:
    return [f"{i},{i * 0.5},{i},{i},1,1,1,n{i}" for i in range(start, start + n)]


def _write_lines(path, lines: list[str], header=True) -> None:
    text = ("id,ra,mag,nobs,flags,tiny,ok,name\n" if header else "") + "\n".join(lines) + "\n"
    if str(path).endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)


def _error(path, spec=InputSpec(), schema=SCHEMA) -> IngestError:
    with pytest.raises(IngestError) as ei:
        for _ in read_batches(path, schema, spec):
            pass
    return ei.value


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
def test_non_numeric_in_second_batch(tmp_path, suffix):
    path = tmp_path / f"objects{suffix}"
    lines = _good_lines(30)
    lines[13] = "13,abc,1,1,1,1,1,x"          # data row 14 -> line 15, second batch of 10
    _write_lines(path, lines)
    it = read_batches(path, SCHEMA, InputSpec(batch_rows=10))
    first = next(it)
    assert first.data.num_rows == 10 and first.first_line == 2
    with pytest.raises(IngestError) as ei:
        next(it)
    e = ei.value
    assert (e.file, e.line, e.column) == (str(path), 15, "ra")
    assert str(e) == f"{path}:15: column 'ra': invalid value 'abc' for double"


def test_error_line_with_small_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "_CHUNK_BYTES", 100)
    path = tmp_path / "objects.csv"
    lines = _good_lines(200)
    lines[150] = "150,1,1,1,1,1,maybe,x"
    _write_lines(path, lines)
    e = _error(path, InputSpec(batch_rows=64))
    assert (e.line, e.column) == (152, "ok")
    assert "objects.csv:152: column 'ok': invalid value 'maybe' for boolean" in str(e)


def test_too_few_and_too_many_fields(tmp_path):
    path = tmp_path / "few.csv"
    lines = _good_lines(5)
    lines[2] = "2,1.0,1,1,1,1,1"
    _write_lines(path, lines)
    e = _error(path)
    assert "few.csv:4: column 'name': expected 8 fields, found 7" in str(e)
    assert (e.line, e.column) == (4, "name")

    path = tmp_path / "many.csv"
    lines = _good_lines(5)
    lines[4] = "4,1.0,1,1,1,1,1,x,y"
    _write_lines(path, lines, header=False)
    e = _error(path)
    assert str(e).startswith(f"{path}:5: expected 8 fields, found 9")
    assert "'name'" in str(e) and e.line == 5


def test_out_of_range_int(tmp_path):
    path = tmp_path / "big.csv"
    lines = _good_lines(4)
    lines[3] = "3,1.0,1,3000000000,1,1,1,x"
    _write_lines(path, lines)
    e = _error(path)
    assert (e.line, e.column) == (5, "nobs")
    assert "big.csv:5: column 'nobs': value 3000000000 out of range for int" in str(e)
    lines[3] = "3,1.0,1,1,1,200,1,x"
    _write_lines(path, lines)
    assert "column 'tiny': value 200 out of range for byte" in str(_error(path))
    lines[3] = "3,1.0,1,1.5,1,1,1,x"
    _write_lines(path, lines)
    assert "column 'nobs': value '1.5' is not an integer" in str(_error(path))


def test_null_in_non_nullable_column(tmp_path):
    path = tmp_path / "n.csv"
    lines = _good_lines(3)
    lines[1] = "\\N,1.0,1,1,1,1,1,x"
    _write_lines(path, lines)
    e = _error(path)
    assert (e.line, e.column) == (3, "id") and "NULL" in str(e)


def test_missing_required_column(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("ra,name\n1.0,x\n")
    e = _error(path)
    assert (e.line, e.column) == (1, "id")
    assert str(e) == f"{path}:1: column 'id': column 'id' missing from file (file has: ra, name)"


def test_missing_required_column_binary(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"ra": [1.0]}), path)
    e = _error(path)
    assert e.column == "id" and "m.parquet" in str(e) and "missing from file" in str(e)


def test_unknown_format(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    e = _error(path)
    assert "data.xlsx" in str(e) and "unknown input format" in str(e)
    path2 = tmp_path / "data.csv"
    path2.write_text("x")
    e = _error(path2, InputSpec(format="hdf5"))
    assert "data.csv" in str(e) and "unknown format 'hdf5'" in str(e)


def test_bad_utf8_and_line_breaks_inside_values(tmp_path):
    path = tmp_path / "u.csv"
    path.write_bytes(b"id,name\n1,ok\n2,\xff\xfe\n")
    e = _error(path)
    assert (e.line, e.column) == (3, "name") and "UTF-8" in str(e)
    path.write_bytes(b"id,name\n1,a\r2,b\n3,c\n")   # a bare CR inside line 2
    e = _error(path)
    assert e.line == 2 and "carriage return" in str(e)


def test_parquet_cast_error_names_row_and_column(tmp_path):
    path = tmp_path / "p.parquet"
    nobs = list(range(25))
    nobs[17] = 3_000_000_000
    pq.write_table(pa.table({"id": list(range(25)), "nobs": pa.array(nobs, pa.int64())}), path,
                   row_group_size=10)
    e = _error(path, InputSpec(batch_rows=8))
    assert (e.line, e.column) == (18, "nobs")
    assert "p.parquet:18: column 'nobs': value 3000000000 out of range for int" in str(e)


def test_parquet_extra_columns_and_case(tmp_path, caplog):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"NAME": ["a", "b"], "Id": [1, 2], "foo": [0, 0],
                             "nobs": pa.array([1, 2], pa.int64())}), path)
    with caplog.at_level(logging.INFO, logger="partitioner.readers"):
        got, _ = read_all(path)
    assert got.column("id").to_pylist() == [1, 2] and got.column("name").to_pylist() == ["a", "b"]
    assert got.column("nobs").type == pa.int32()
    assert "'foo'" in caplog.text


def test_fits_unsigned_bool_null_and_nan_to_int(tmp_path):
    from astropy.io import fits

    path = tmp_path / "t.fits"
    cols = [
        fits.Column(name="Id", format="J", array=np.array([1, 2, 3], np.int32)),
        fits.Column(name="nobs", format="I", bzero=32768,
                    array=np.array([0, 65535, 7], np.uint16)),
        fits.Column(name="flags", format="E", array=np.array([1.0, np.nan, 3.0], np.float32)),
        fits.Column(name="ok", format="L", array=np.array([True, False, True])),
    ]
    fits.BinTableHDU.from_columns(cols).writeto(path)
    # make row 3's logical value NULL (a zero byte) by patching the file
    with fits.open(path, mode="update") as h:
        h[1].data.view(np.ndarray)["ok"][2] = 0
    got, _ = read_all(path)
    assert got.column("nobs").to_pylist() == [0, 65535, 7]
    assert got.column("flags").to_pylist() == [1, None, 3]
    assert got.column("ok").to_pylist() == [True, False, None]


def test_votable_gz(tmp_path):
    from astropy.table import Table

    t = Table({"id": np.array([5, 6]), "ra": [1.0, 2.0]})
    path = tmp_path / "t.vot"
    t.write(path, format="votable")
    gzpath = tmp_path / "t.vot.gz"
    gzpath.write_bytes(gzip.compress(path.read_bytes()))
    got, _ = read_all(gzpath)
    assert got.column("id").to_pylist() == [5, 6]


# ------------------------------------------------------------------------------------------
# skip mode


def _mixed_file(path):
    lines = _good_lines(40)
    bad = {
        3: ("3,xyz,1,1,1,1,1,a", "ra", "invalid value 'xyz' for double"),
        11: ("11,1.0,1,1,1,1", "ok", "expected 8 fields, found 6"),
        12: ("12,1.0,1,1,1,1,1,a,b", None, "expected 8 fields, found 9"),
        25: ("25,1.0,1,99999999999,1,1,1,a", "nobs", "out of range for int"),
        26: ("\\N,1.0,1,1,1,1,1,a", "id", "NULL"),
        39: ("39,1.0,1,1,1,1,2,a", "ok", "invalid value '2' for boolean"),
    }
    for i, (text, _, _) in bad.items():
        lines[i] = text
    _write_lines(path, lines)
    return lines, bad


def test_skip_mode_rejects_and_keeps_good_rows(tmp_path):
    path = tmp_path / "mixed.csv"
    lines, bad = _mixed_file(path)
    rejects: list[Reject] = []
    got, batches = read_all(path, spec=InputSpec(skip_bad_rows=10, batch_rows=8), rejects=rejects)
    good = [i for i in range(40) if i not in bad]
    assert got.column("id").to_pylist() == good
    assert line_numbers(batches) == [i + 2 for i in good]
    assert [r.line for r in rejects] == [i + 2 for i in sorted(bad)]
    for r, i in zip(rejects, sorted(bad)):
        text, column, reason = bad[i]
        assert r.file == str(path) and r.column == column and reason in r.reason
        assert r.text == text
    assert [b.data.num_rows for b in batches][:-1] == [8] * (len(batches) - 1)


def test_skip_mode_limit(tmp_path):
    path = tmp_path / "mixed.csv"
    _, bad = _mixed_file(path)
    rejects: list[Reject] = []
    with pytest.raises(IngestError) as ei:
        list(read_batches(path, SCHEMA, InputSpec(skip_bad_rows=4), rejects))
    e = ei.value
    assert e.line == sorted(bad)[4] + 2 and e.column == "id"
    assert "4 already rejected" in str(e) and "mixed.csv" in str(e)
    assert len(rejects) == 4


def test_skip_mode_parquet(tmp_path):
    path = tmp_path / "p.parquet"
    pq.write_table(pa.table({"id": pa.array([1, None, 3, 4], pa.int64()),
                             "tiny": pa.array([1, 2, 300, 4], pa.int64())}), path)
    rejects: list[Reject] = []
    got, batches = read_all(path, spec=InputSpec(skip_bad_rows=5), rejects=rejects)
    assert got.column("id").to_pylist() == [1, 4]
    assert [(r.line, r.column) for r in rejects] == [(2, "id"), (3, "tiny")]
    assert line_numbers(batches) == [1, 4]


# ------------------------------------------------------------------------------------------
# format detection, sizes, bounded batches on a larger file


@pytest.mark.parametrize("name,fmt", [
    ("a.csv", "csv"), ("a.CSV.gz", "csv"), ("a.tsv.bz2", "tsv"), ("a.txt", "csv"),
    ("a.parquet", "parquet"), ("a.pq", "parquet"), ("a.fits", "fits"), ("a.fit", "fits"),
    ("a.fits.gz", "fits"), ("a.vot", "votable"), ("a.xml", "votable"),
    ("a.votable.gz", "votable"),
])
def test_detect_format(name, fmt):
    assert detect_format(name) == fmt


def test_count_bytes(tmp_path):
    path = tmp_path / "x.csv.gz"
    path.write_bytes(gzip.compress(b"id\n1\n" * 1000))
    assert count_bytes(path) == path.stat().st_size


def test_bounded_batches_larger_file(tmp_path):
    n = 50_000
    rng = np.random.default_rng(3)
    table = pa.table({"id": np.arange(n), "ra": rng.uniform(0, 360, n),
                      "nobs": rng.integers(-2**31, 2**31, n).astype(np.int32)})
    schema = pa.schema([pa.field("id", pa.int64(), False), pa.field("ra", pa.float64()),
                        pa.field("nobs", pa.int32())])
    path = tmp_path / "big.csv.gz"
    import pyarrow.csv as pa_csv
    buf = pa.BufferOutputStream()
    pa_csv.write_csv(table, buf)
    path.write_bytes(gzip.compress(buf.getvalue().to_pybytes()))
    got, batches = read_all(path, schema, InputSpec(batch_rows=4096))
    assert got.equals(table.cast(schema))
    assert [b.data.num_rows for b in batches] == [4096] * 12 + [n - 12 * 4096]
    assert [b.first_line for b in batches] == [2 + 4096 * k for k in range(13)]


def test_corrupt_gzip_is_an_ingest_error(tmp_path):
    path = tmp_path / "t.csv.gz"
    data = gzip.compress(("id,name\n" + "".join(f"{i},n{i}\n" for i in range(20000))).encode())
    path.write_bytes(data[: len(data) // 2])
    e = _error(path)
    assert "t.csv.gz" in str(e) and "decompress" in str(e)


def test_abandoned_reader_stops_its_threads(tmp_path):
    import threading

    path = tmp_path / "t.csv"
    _write_lines(path, _good_lines(5000))
    before = threading.active_count()
    it = read_batches(path, SCHEMA, InputSpec(batch_rows=100))
    next(it)
    it.close()
    assert threading.active_count() == before


def test_spec_validation(tmp_path):
    path = tmp_path / "t.csv"
    _write_lines(path, _good_lines(2))
    assert "must differ" in str(_error(path, InputSpec(delimiter='"')))
    assert "batch_rows" in str(_error(path, InputSpec(batch_rows=0)))
