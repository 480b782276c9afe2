"""One MySQL client connection: its default database, its variables, and the dispatch of each
statement to the czar (catalogue queries, in Qserv's dialect), to Qserv's commands (SUBMIT,
qserv_result, KILL, CANCEL, PROCESSLIST) or to mysql-mimic's handling of what clients send when
they connect (SET NAMES, SELECT @@version, SHOW DATABASES/TABLES, information_schema ...)."""
from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from mysql_mimic import ResultSet, Session
from mysql_mimic.constants import KillKind
from mysql_mimic.errors import MysqlError
from mysql_mimic.schema import Column, InfoSchema
from mysql_mimic.session import Query
from sqlglot import exp
from sqlglot.errors import SqlglotError

from czar.mysql import processlist
from czar.mysql.commands import Command, classify, strip_statement
from czar.mysql.errors import Code, mysql_error, to_mysql_error
from czar.mysql.jobs import QueryRecord
from czar.mysql.types import column_declaration, encode_batch, result_columns
from czar.dialects import parse
from czar.engine import check_tables
from czar.metadata import Metadata
from czar.plan import plan_query
from qengine.users import Principal

if TYPE_CHECKING:
    from czar.mysql.server import Frontend

log = logging.getLogger(__name__)

__all__ = ["QservSession", "table_result"]

SYSTEM_DATABASES = frozenset({"information_schema", "mysql", "performance_schema", "sys"})
BATCH_ROWS = 8192
_POLL = 0.05  # seconds between checks while waiting for an async result


def table_result(table: pa.Table) -> ResultSet:
    """A result set streamed batch by batch (rows are encoded as they are sent)."""
    async def rows() -> AsyncIterator[tuple]:
        for batch in table.to_batches(max_chunksize=BATCH_ROWS):
            for row in encode_batch(batch):
                yield row
    return ResultSet(rows=rows(), columns=result_columns(table.schema))


def _reads_catalogue(tree: exp.Expression, database: str | None) -> bool:
    """Does a query read catalogue tables (as opposed to no table or only system schemas)?"""
    for t in tree.find_all(exp.Table):
        if not t.db and t.name.lower() == "dual":  # SELECT 1 FROM DUAL: no table at all
            continue
        db = (t.db or database or "").lower()
        if db not in SYSTEM_DATABASES:
            return True
    return False


class QservSession(Session):
    """mysql-mimic session bound to a :class:`~czar.mysql.server.Frontend`."""

    def __init__(self, frontend: Frontend) -> None:
        super().__init__(frontend.variables())
        self.frontend = frontend
        self.registry = frontend.registry
        self.auth = frontend.auth
        self.host = ""

    # ------------------------------------------------------------------ who is connected
    def principal(self) -> Principal | None:
        """The connected user with its grants as they are now (None: no authentication, trusted)."""
        if self.auth is None:
            return None
        p = self.auth.principal(self.username) if self.username else None
        if p is None:
            raise mysql_error(Code.ACCESS_DENIED, f"Access denied for user '{self.username or ''}': "
                              "not (or no longer) a user of this cluster")
        return p

    @property
    def metadata(self) -> Metadata:
        """The catalogue tables this connection's user may read."""
        return self.frontend.czar.metadata_for(self.principal())

    def _queries(self):
        """The query registry as this user sees it (its own queries when authenticated)."""
        return processlist.UserView(self.registry, None if self.auth is None else self.username)

    def _own(self, qid: int) -> None:
        """Another user's query id is answered like an unknown one."""
        rec = self.registry.get(qid)
        if self.auth is not None and rec is not None and rec.user != self.username:
            raise mysql_error(Code.NO_SUCH_TABLE, f"no result for query {qid}: no async query with this id "
                              "(SUBMIT returns the id)")

    # ------------------------------------------------------------------ connection life
    async def init(self, connection) -> None:
        await super().init(connection)
        if self.auth is not None and not self.username:
            # mysql-mimic reports a failed login to the client but keeps the connection: close it
            raise mysql_error(Code.ACCESS_DENIED, "Access denied")
        peer = connection.stream.writer.get_extra_info("peername")
        self.host = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else str(peer or "")
        if self.database:  # the database given at connect time (not checked by mysql-mimic)
            self.database = self._database_name(self.database) or self.database
        self.frontend.sessions[connection.connection_id] = self

    async def close(self) -> None:
        conn = self._connection
        if conn is not None:
            self.frontend.sessions.pop(conn.connection_id, None)
            rec = self.registry.on_connection(conn.connection_id)
            if rec is not None:  # the client went away: stop its query
                self.registry.cancel(rec)
        await super().close()

    def _database_name(self, name: str) -> str | None:
        low = name.lower()
        if low in SYSTEM_DATABASES:
            return low
        return next((d for d in self.metadata.databases() if d.lower() == low), None)

    async def use(self, database: str) -> None:
        name = self._database_name(database)
        if name is None:
            raise mysql_error(Code.BAD_DB_ERROR, f"Unknown database '{database}'")
        self.database = name

    async def schema(self) -> InfoSchema:
        """Catalogue tables and columns for SHOW TABLES/DATABASES and information_schema."""
        cols = []
        for t in self.metadata.tables.values():
            for c in t.columns:
                cols.append(Column(name=c["name"], type=column_declaration(c), table=t.name, schema=t.database,
                                   is_nullable=c.get("nullable", True) is not False,
                                   comment=_comment(c)))
        return InfoSchema.from_columns(cols)

    # ------------------------------------------------------------------ dispatch
    async def handle_query(self, sql: str, attrs: dict[str, str]) -> Any:
        try:
            return await self._dispatch(sql, attrs)
        except MysqlError:
            raise
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - qengine errors and bugs alike reach the client as MySQL errors
            raise to_mysql_error(exc) from None

    async def _dispatch(self, sql: str, attrs: dict[str, str]) -> Any:
        cmd = classify(sql)
        if cmd is not None:
            return await self._command(cmd)
        text = strip_statement(sql)
        if not text:
            raise mysql_error(Code.EMPTY_QUERY, "Query was empty")
        try:
            statements = self._parse(sql)
        except SqlglotError as err:
            if text.split(None, 1)[0].upper() in ("SELECT", "WITH") or text.startswith("("):
                return await self._catalogue_query(sql)  # the czar reports where the syntax error is
            raise mysql_error(Code.PARSE_ERROR, "You have an error in your SQL syntax: "
                              + str(err).splitlines()[0]) from None
        if not statements:
            raise mysql_error(Code.EMPTY_QUERY, "Query was empty")
        if len(statements) > 1:
            raise mysql_error(Code.PARSE_ERROR, "You have an error in your SQL syntax: only one statement "
                              "at a time is accepted")
        tree = statements[0]
        if isinstance(tree, exp.Query):
            if processlist.is_info_schema_query(tree, self.database):
                return table_result(processlist.query_info_schema(self._queries(), tree, self.database))
            if _reads_catalogue(tree, self.database):
                return await self._catalogue_query(sql)
            for key in ("from", "from_"):  # SELECT ... FROM DUAL is a SELECT without FROM
                src = tree.args.get(key)
                if src is not None and isinstance(src.this, exp.Table) and src.this.name.lower() == "dual":
                    tree.set(key, None)
        if isinstance(tree, exp.Describe):
            if isinstance(tree.this, exp.Query):  # EXPLAIN SELECT ...
                return await self._explain(text.split(None, 1)[1])
            return self._columns(tree.this.name, getattr(tree.this, "db", None) or None, full=False, like=None)
        if isinstance(tree, exp.Show) and tree.name.upper() == "COLUMNS":
            return self._columns(tree.text("target"), tree.text("db") or None, full=bool(tree.args.get("full")),
                                 like=tree.text("like") or None)
        if isinstance(tree, exp.Show) and tree.name.upper() == "TABLES" and tree.text("db") \
                and self._database_name(tree.text("db")) is None:
            raise mysql_error(Code.BAD_DB_ERROR, f"Unknown database '{tree.text('db')}'")
        q = Query(expression=tree, sql=sql, attrs=attrs, _middlewares=self.middlewares, _query=self.query)
        return await q.start()

    async def query(self, expression: exp.Expression, sql: str, attrs: dict[str, str]) -> Any:
        """Whatever mysql-mimic's middlewares did not answer: not something qengine does."""
        kind = expression.key.upper() if expression is not None else "statement"
        raise mysql_error(Code.NOT_SUPPORTED_YET, f"{kind} is not supported: qengine answers SELECT queries over "
                          "the catalogue, Qserv's SUBMIT/CANCEL/KILL/PROCESSLIST and client set-up statements")

    # ------------------------------------------------------------------ catalogue queries
    def _timeout(self) -> float:
        ms = self.variables.get("max_execution_time") or 0
        return float(ms) / 1000.0

    def _new(self, sql: str, kind: str) -> QueryRecord:
        conn_id = self._connection.connection_id if self._connection else None
        return self.registry.new(sql, database=self.database, user=self.username or "", host=self.host,
                                 connection_id=conn_id, kind=kind, principal=self.principal())

    async def _catalogue_query(self, sql: str) -> ResultSet:
        rec = self._new(strip_statement(sql), "SYNC")
        loop = asyncio.get_running_loop()
        try:
            table = await loop.run_in_executor(self.frontend.executor, self.registry.run, rec, self._timeout())
        except asyncio.CancelledError:  # connection killed or server stopping: stop the workers too
            self.registry.cancel(rec)
            raise
        return table_result(table)

    async def _explain(self, sql: str) -> tuple[list, list[str]]:
        loop = asyncio.get_running_loop()
        user = self.principal()
        ex = await loop.run_in_executor(self.frontend.executor, lambda: self.frontend.czar.explain(
            sql, lang="qserv", database=self.database, user=user))
        return [(line,) for line in str(ex).splitlines()], ["EXPLAIN"]

    # ------------------------------------------------------------------ Qserv commands
    async def _command(self, cmd: Command) -> Any:
        if cmd.kind == "submit":
            return await self._submit(cmd.arg or "")
        if cmd.kind == "result":
            self._own(int(cmd.arg))
            return await self._fetch(int(cmd.arg))
        if cmd.kind == "delete":
            self._own(int(cmd.arg))
            self.registry.delete_result(int(cmd.arg))
            return None
        if cmd.kind == "cancel":
            if self.auth is not None and not any(r.id == int(cmd.arg) for r in self._queries().records()):
                raise mysql_error(Code.NO_SUCH_THREAD, f"Unknown query id: {cmd.arg}")
            self.registry.cancel_id(int(cmd.arg))
            return None
        if cmd.kind == "kill":
            await self._kill(int(cmd.arg), cmd.option or "CONNECTION")
            return None
        if cmd.kind == "processlist":
            return table_result(processlist.show_processlist(self._queries(), full=cmd.option == "FULL"))
        raise mysql_error(Code.NOT_SUPPORTED_YET, f"PROCEDURE {cmd.arg.split('(')[0].strip()} does not exist: "
                          "the only procedure is qserv_result_delete(id)")

    async def _submit(self, sql: str) -> tuple[list, list[str]]:
        """SUBMIT: check the query now (syntax, tables, columns), run it in the background."""
        loop = asyncio.get_running_loop()
        database = self.database
        meta = self.metadata

        def check() -> None:
            if self.auth is not None:
                check_tables(parse(sql, "qserv"), meta, database)
            plan_query(sql, meta, lang="qserv", database=database)
        await loop.run_in_executor(self.frontend.executor, check)
        rec = self._new(strip_statement(sql), "ASYNC")
        self.registry.submit(rec, self._timeout())
        return [(rec.id, rec.result_location)], ["jobId", "resultLocation"]

    async def _fetch(self, qid: int) -> ResultSet:
        """SELECT * FROM qserv_result(id): waits for the job to finish, as Qserv does."""
        rec = self.registry.get(qid)
        while rec is not None and not rec.done.is_set():
            await asyncio.sleep(_POLL)  # cancellable by KILL QUERY of this connection
        loop = asyncio.get_running_loop()  # the result is read from the job store's Parquet file
        table = await loop.run_in_executor(self.frontend.executor, self.registry.fetch_result, qid)
        return table_result(table)

    async def _kill(self, target: int, kind: str) -> None:
        """KILL [QUERY|CONNECTION] n: n is a connection id (CONNECTION_ID(), SHOW PROCESSLIST's
        ConnectionId) or, failing that, a query id (SHOW PROCESSLIST's Id)."""
        session = self.frontend.sessions.get(target)
        if session is not None and self.auth is not None and session.username != self.username:
            session = None  # another user's connection: as if unknown
        if session is not None:
            rec = self.registry.on_connection(target)
            if rec is not None:
                self.registry.cancel(rec)
            elif kind == "QUERY":  # e.g. waiting for qserv_result: interrupt the wait itself
                await self.connection.control.kill(target, KillKind.QUERY)
            if kind == "CONNECTION":  # its own connection too, as MySQL allows
                await self.connection.control.kill(target, KillKind.CONNECTION)
            return
        rec = self.registry.get(target)
        if rec is not None and self.auth is not None and rec.user != self.username:
            rec = None
        if rec is not None and rec.status == "EXECUTING":
            self.registry.cancel(rec)
            return
        raise mysql_error(Code.NO_SUCH_THREAD, f"Unknown thread id: {target}")

    # ------------------------------------------------------------------ DESCRIBE / SHOW COLUMNS
    def _columns(self, table: str, db: str | None, *, full: bool, like: str | None) -> tuple[list, list[str]]:
        if not table:
            raise mysql_error(Code.PARSE_ERROR, "You have an error in your SQL syntax: a table name is missing")
        info = self.metadata.resolve(db, table, self.database)  # unknown table: 1146
        key = info.manifest.id_column if info.role == "director" else None
        rows = []
        for c in info.columns:
            if like and not _like(like, c["name"]):
                continue
            row = [c["name"], column_declaration(c), "NO" if c.get("nullable", True) is False else "YES",
                   "PRI" if key and c["name"] == key else "", None, ""]
            if full:
                row[2:2] = [None]  # Collation after Type
                row += ["select", _comment(c) or ""]
            rows.append(tuple(row))
        names = ["Field", "Type", "Null", "Key", "Default", "Extra"]
        if full:
            names = ["Field", "Type", "Collation", "Null", "Key", "Default", "Extra", "Privileges", "Comment"]
        return rows, names


def _comment(c: dict) -> str | None:
    parts = [c.get("description") or "", f"[{c['unit']}]" if c.get("unit") else "",
             f"ucd={c['ucd']}" if c.get("ucd") else ""]
    text = " ".join(p for p in parts if p)
    return text or None


def _like(pattern: str, value: str) -> bool:
    rx = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(rx, value, re.IGNORECASE) is not None

