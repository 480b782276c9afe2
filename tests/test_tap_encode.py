"""The vectorised VOTable encoders (czar/tap/encode.py) against astropy's own writer: for random
Arrow tables, astropy must read both documents to the same values and nulls; plus the pieces of
the TAP layer that need no server (parameters, uploads, formats)."""
from __future__ import annotations

import io
from datetime import datetime

import numpy as np
import pyarrow as pa
import pytest
from astropy.io.votable import parse as parse_votable
from hypothesis import given
from hypothesis import strategies as st

from czar.tap.errors import TapParamError, UploadError
from czar.tap.params import Limits, collect, parse_params, parse_upload
from czar.tap.upload import read_table
from czar.tap.votable import to_votable, unique_names, votable_to_arrow

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12)
COLUMNS = {
    "i8": (pa.int8(), st.integers(-128, 127)),
    "i16": (pa.int16(), st.integers(-2**15, 2**15 - 1)),
    "i32": (pa.int32(), st.integers(-2**31, 2**31 - 1)),
    "i64": (pa.int64(), st.integers(-2**63, 2**63 - 1)),
    "u8": (pa.uint8(), st.integers(0, 255)),
    "f32": (pa.float32(), st.floats(width=32, allow_nan=True, allow_infinity=True)),
    "f64": (pa.float64(), st.floats(allow_nan=True, allow_infinity=True)),
    "b": (pa.bool_(), st.booleans()),
    "s": (pa.string(), TEXT),
    "ascii": (pa.string(), st.text(alphabet="abc <&>\"'xyz019", max_size=8)),
    "ts": (pa.timestamp("us"), st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1))),
}


@st.composite
def tables(draw):
    names = draw(st.lists(st.sampled_from(sorted(COLUMNS)), min_size=1, max_size=6))
    n = draw(st.integers(0, 30))
    cols = {}
    for i, name in enumerate(names):
        typ, values = COLUMNS[name]
        cols[f"{name}_{i}"] = pa.array(draw(st.lists(st.one_of(st.none(), values), min_size=n, max_size=n)),
                                       type=typ)
    return pa.table(cols)


def _astropy_rows(body: bytes) -> list[list]:
    t = parse_votable(io.BytesIO(body), verify="ignore").get_first_table()
    arr = t.array
    out = []
    for name in arr.dtype.names:
        col = []
        for v, m in zip(np.ma.getdata(arr[name]), np.ma.getmaskarray(arr[name])):
            if isinstance(v, (float, np.floating)) and np.isnan(v):
                m = True
            if isinstance(v, bytes):
                v = v.decode()
            col.append(None if m or (isinstance(v, str) and v == "") else v)
        out.append(col)
    return out


@given(tables(), st.booleans())
def test_fast_encoders_read_back_like_astropys_writer(table, binary2):
    fast = to_votable(table, binary2=binary2)
    slow = to_votable(table, binary2=binary2, fast=False)
    assert _astropy_rows(fast) == _astropy_rows(slow)
    if binary2 and table.num_rows:
        assert b"<BINARY2>" in fast


def test_fast_tabledata_escapes_and_replaces_what_xml_cannot_carry():
    t = pa.table({"s": ["a<b>&c", "ctl\x01x", None, "ünï"]})
    back = votable_to_arrow(to_votable(t))
    assert back.column(0).to_pylist() == ["a<b>&c", "ctl?x", "", "ünï"]


def test_large_ids_and_specials_are_exact():
    t = pa.table({"id": pa.array([2**63 - 1, -2**63, 1250000369002135000], pa.int64()),
                  "x": pa.array([float("inf"), float("-inf"), 5e-324])})
    for binary2 in (False, True):
        back = votable_to_arrow(to_votable(t, binary2=binary2))
        assert back.column(0).to_pylist() == t.column(0).to_pylist()
        assert back.column(1).to_pylist() == t.column(1).to_pylist()


def test_unique_names():
    assert unique_names(["a", "A", "a", "b", ""]) == ["a", "A_2", "a_3", "b", "col"]


def test_parameters():
    lim = Limits()
    p = parse_params(collect([("query", "SELECT 1"), ("lang", "adql-2.1"), ("format", "CSV"), ("maxrec", "10"),
                              ("upload", "a,param:x;b,https://example.org/t.vot")]), lim)
    assert (p.lang, p.format, p.maxrec, p.maxrec_given) == ("adql", "csv", 10, True)
    assert p.uploads == [("a", "param:x"), ("b", "https://example.org/t.vot")]
    assert parse_params(collect([("QUERY", "q"), ("MAXREC", str(10**12))]), lim).maxrec == lim.max_maxrec
    for bad, msg in ((["QUERY", "QUERY"], "given 2 times"), (["QUERY", "RESPONSEFORMAT:x"], "RESPONSEFORMAT")):
        items = [tuple(b.split(":")) if ":" in b else (b, "q") for b in bad]
        with pytest.raises(TapParamError, match=msg):
            parse_params(collect(items), lim)
    with pytest.raises(TapParamError, match="given twice"):
        parse_upload(["a,param:x;A,param:y"])


def test_upload_readers():
    csv = b"id,name,x\n1,a,1.5\n2,,\n"
    t = read_table(csv, "t")
    assert t.column_names == ["id", "name", "x"] and t.column("id").to_pylist() == [1, 2]
    with pytest.raises(UploadError, match="not a readable VOTable"):
        read_table(b"<?xml version='1.0'?><VOTABLE", "t")
    with pytest.raises(UploadError, match="empty"):
        read_table(b"  \n", "t")
