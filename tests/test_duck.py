"""qengine.duck: the one-bind Arrow calls and the public fallback give the same results."""
from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest

from qengine import duck

SQL = ("SELECT i, i * 0.5 AS x, CASE WHEN i % 3 = 0 THEN NULL ELSE 'v' || i END AS s "
       "FROM range(20000) t(i) ORDER BY i")


@pytest.fixture(params=["single-bind", "public"])
def mode(request, monkeypatch):
    if request.param == "public":
        monkeypatch.setattr(duck, "_single_bind", lambda: False)
    return request.param


def test_table_and_reader_agree_with_duckdb(mode):
    con = duckdb.connect()
    want = con.sql(SQL).to_arrow_table()
    assert duck.arrow_table(con, SQL).equals(want)
    reader = duck.arrow_reader(con, SQL, 4096)
    assert isinstance(reader, pa.RecordBatchReader)
    batches = list(reader)
    assert all(b.num_rows <= 4096 for b in batches) and len(batches) >= 5
    assert pa.Table.from_batches(batches).equals(want)


def test_errors_are_duckdb_errors(mode):
    con = duckdb.connect()
    with pytest.raises(duckdb.Error):
        duck.arrow_table(con, "SELECT no_such_column FROM range(3)")
    with pytest.raises(duckdb.Error):
        list(duck.arrow_reader(con, "SELECT 1/0::INTEGER FROM range(3) WHERE error('boom') IS NULL", 10))

