"""Running one SQL statement to Arrow with a single bind.

DuckDB's public ways to get Arrow out of a statement each do more work than the statement:
``con.sql(q).to_arrow_table()`` / ``.to_arrow_reader()`` bind the SQL twice (the relation, then
its execution), and ``con.execute(q).to_arrow_table()`` re-reads the finished rows through a
second statement. The duckdb 2.x connection has one internal call that binds once and produces
Arrow directly (a table or a streaming reader); it saves 2-3 ms of a 30 ms point query. It is
private, so it is used only after a probe shows it behaves as expected; otherwise (another
duckdb version) the public calls are used.
"""
from __future__ import annotations

import functools
import warnings

import duckdb
import pyarrow as pa

__all__ = ["arrow_table", "arrow_reader"]


@functools.cache
def _single_bind() -> bool:
    try:
        con = duckdb.connect()
        try:
            table = con._submit("SELECT 1 AS x", None, "arrow", 1024).arrow_table()
            reader = con._submit("SELECT 2 AS x", None, "stream", 1024).arrow_reader()
            ok = (isinstance(table, pa.Table) and table.to_pylist() == [{"x": 1}]
                  and isinstance(reader, pa.RecordBatchReader) and reader.read_all().to_pylist() == [{"x": 2}])
        finally:
            con.close()
    except Exception:  # noqa: BLE001 - any failure means: use the public API
        return False
    return ok


def arrow_table(con: duckdb.DuckDBPyConnection, sql: str) -> pa.Table:
    """The whole result of ``sql`` as an Arrow table."""
    if _single_bind():
        return con._submit(sql, None, "arrow", 1_000_000).arrow_table()
    with warnings.catch_warnings():  # the extra copy is known: a small result, one bind
        warnings.filterwarnings("ignore", message="Arrow output on a DB-API result", category=UserWarning)
        return con.execute(sql).to_arrow_table()


def arrow_reader(con: duckdb.DuckDBPyConnection, sql: str, batch_rows: int) -> pa.RecordBatchReader:
    """The result of ``sql`` streamed in batches of up to ``batch_rows`` rows."""
    if _single_bind():
        return con._submit(sql, None, "stream", int(batch_rows)).arrow_reader()
    return con.sql(sql).to_arrow_reader(int(batch_rows))
