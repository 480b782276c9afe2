"""Qserv's views of running and past queries: ``SHOW [FULL] PROCESSLIST``,
``information_schema.processlist`` (executing queries) and ``information_schema.queries`` (all
remembered queries), with Qserv's column names. SELECTs over the two tables run in a private
DuckDB over Arrow snapshots of the registry, so any WHERE/ORDER BY/aggregate works."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pyarrow as pa
from sqlglot import exp
from sqlglot.errors import SqlglotError

from czar.mysql.errors import Code, mysql_error
from czar.mysql.jobs import EXECUTING, QueryRecord, QueryRegistry

__all__ = ["INFO_TABLES", "info_schema_tables", "query_info_schema", "show_processlist"]

INFO_TABLES = ("processlist", "queries")
_TS = pa.timestamp("us")


def _seconds(rec: QueryRecord, now: datetime) -> int:
    return int(((rec.completed or now) - rec.submitted).total_seconds())


def show_processlist(registry: QueryRegistry, full: bool) -> pa.Table:
    """Executing queries as Qserv's ShowProcessList view (Info cut to 100 characters unless FULL)."""
    now = datetime.now()
    recs = registry.running()
    info = [r.sql if full else r.sql[:100] for r in recs]
    return pa.table({
        "Id": pa.array([r.id for r in recs], pa.int64()),
        "User": pa.array([r.user for r in recs], pa.string()),
        "Host": pa.array([r.host for r in recs], pa.string()),
        "db": pa.array([r.database for r in recs], pa.string()),
        "Command": pa.array([r.kind for r in recs], pa.string()),
        "Time": pa.array([_seconds(r, now) for r in recs], pa.int64()),
        "State": pa.array([r.status for r in recs], pa.string()),
        "Info": pa.array(info, pa.string()),
        "Submitted": pa.array([r.submitted for r in recs], _TS),
        "Completed": pa.array([r.completed for r in recs], _TS),
        "Returned": pa.array([r.returned for r in recs], _TS),
        "CzarId": pa.array([registry.czar_name for _ in recs], pa.string()),
        "ResultLocation": pa.array([r.result_location for r in recs], pa.string()),
        "ConnectionId": pa.array([r.connection_id for r in recs], pa.int64()),
    })


def info_schema_tables(registry: QueryRegistry) -> dict[str, pa.Table]:
    """``information_schema.processlist`` and ``.queries`` as Arrow tables."""
    now = datetime.now()
    everything = registry.records()
    running = [r for r in everything if r.status == EXECUTING]

    def common(recs: list[QueryRecord]) -> dict[str, pa.Array]:
        return {
            "ID": pa.array([r.id for r in recs], pa.int64()),
            "USER": pa.array([r.user for r in recs], pa.string()),
            "HOST": pa.array([r.host for r in recs], pa.string()),
            "DB": pa.array([r.database for r in recs], pa.string()),
            "COMMAND": pa.array([r.kind for r in recs], pa.string()),
            "TIME": pa.array([_seconds(r, now) for r in recs], pa.int64()),
            "STATE": pa.array([r.status for r in recs], pa.string()),
            "INFO": pa.array([r.sql for r in recs], pa.string()),
            "TYPE": pa.array([r.kind for r in recs], pa.string()),
            "CZAR": pa.array([registry.czar_name for _ in recs], pa.string()),
            "SUBMITTED": pa.array([r.submitted for r in recs], _TS),
        }

    processlist = pa.table({**common(running), "QUERY": pa.array([r.sql for r in running], pa.string())})
    queries = pa.table({
        **common(everything),
        "STATUS": pa.array([r.status for r in everything], pa.string()),
        "COMPLETED": pa.array([r.completed for r in everything], _TS),
        "RETURNED": pa.array([r.returned for r in everything], _TS),
        "ROWS": pa.array([r.rows for r in everything], pa.int64()),
        "RESULTLOCATION": pa.array([r.result_location for r in everything], pa.string()),
        "QUERY": pa.array([r.sql for r in everything], pa.string()),
        "ERROR": pa.array([r.error.msg if r.error else None for r in everything], pa.string()),
    })
    return {"processlist": processlist, "queries": queries}


def _is_info_table(t: exp.Table, database: str | None) -> bool:
    return (t.db or database or "").lower() == "information_schema" and t.name.lower() in INFO_TABLES


def is_info_schema_query(tree: exp.Expression, database: str | None = None) -> bool:
    """Does the statement read information_schema.processlist or .queries (``database``: the
    session's default, for unqualified names)?"""
    return any(_is_info_table(t, database) for t in tree.find_all(exp.Table))


class UserView:
    """The queries of one user only (MySQL shows a user its own queries); ``user`` None: all."""

    def __init__(self, registry: QueryRegistry, user: str | None) -> None:
        self.registry, self.user = registry, user
        self.czar_name = registry.czar_name

    def records(self) -> list[QueryRecord]:
        return [r for r in self.registry.records() if self.user is None or r.user == self.user]

    def running(self) -> list[QueryRecord]:
        return [r for r in self.records() if r.status == EXECUTING]


def query_info_schema(registry: QueryRegistry, tree: exp.Expression, database: str | None = None) -> pa.Table:
    """Run a SELECT over information_schema.processlist/queries (MySQL syntax) in DuckDB."""
    tables = info_schema_tables(registry)
    for t in list(tree.find_all(exp.Table)):
        if not _is_info_table(t, database):
            raise mysql_error(Code.NOT_SUPPORTED_YET, f"{t.sql('mysql')} cannot be read together with "
                                                      "information_schema.processlist/queries")
        alias = t.alias or t.name
        t.replace(exp.Table(this=exp.to_identifier(f"__{t.name.lower()}"),
                            alias=exp.TableAlias(this=exp.to_identifier(alias))))
    try:
        sql = tree.sql("duckdb")
    except SqlglotError as err:
        raise mysql_error(Code.PARSE_ERROR, f"cannot read the query: {err}") from None
    con = duckdb.connect(config={"enable_external_access": False, "autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False})  # user SQL: no files, no network
    try:
        for name, table in tables.items():
            con.register(f"__{name}", table)
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as err:
        raise mysql_error(Code.UNKNOWN_ERROR, str(err).splitlines()[0]) from None
    finally:
        con.close()
