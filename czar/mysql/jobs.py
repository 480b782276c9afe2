"""Every query the MySQL front end runs, with Qserv's numeric query ids: synchronous queries,
``SUBMIT``-ted (async) jobs and their kept results, cancellation (``KILL``, ``CANCEL``) and the
history behind ``SHOW PROCESSLIST`` / ``information_schema.processlist|queries``.

Ids are small increasing integers, as Qserv's QInfo ids; the czar sees each query under a
name that is unique to this endpoint. Async results stay until ``CALL qserv_result_delete(id)``
or until ``result_ttl`` seconds after they completed (Qserv keeps them one hour).
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import pyarrow as pa
from mysql_mimic.errors import MysqlError

from czar.engine import Czar
from czar.mysql.errors import Code, mysql_error, to_mysql_error

log = logging.getLogger(__name__)

__all__ = ["QueryRecord", "QueryRegistry"]

EXECUTING, COMPLETED, FAILED, ABORTED = "EXECUTING", "COMPLETED", "FAILED", "ABORTED"


@dataclass
class QueryRecord:
    """One query: what was asked, by whom, and how it went."""

    id: int
    sql: str
    database: str | None
    user: str
    host: str
    connection_id: int | None
    kind: str                          # "SYNC" or "ASYNC" (Qserv's qType)
    czar_query_id: str
    submitted: datetime = field(default_factory=datetime.now)
    status: str = EXECUTING
    completed: datetime | None = None
    returned: datetime | None = None
    rows: int | None = None
    error: MysqlError | None = None
    result: pa.Table | None = None     # async jobs only, until deleted or expired
    killed: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def result_location(self) -> str | None:
        return f"table:result_{self.id}" if self.kind == "ASYNC" else None


class QueryRegistry:
    """Runs queries on a Czar and remembers them (bounded history)."""

    def __init__(self, czar: Czar, *, czar_name: str = "qengine", async_workers: int = 2,
                 result_ttl: float = 3600.0, history: int = 1000) -> None:
        self.czar = czar
        self.czar_name = czar_name
        self.result_ttl = result_ttl
        self._history = history
        self._lock = threading.Lock()
        self._next_id = 1
        self._tag = secrets.token_hex(4)  # czar query ids unique to this endpoint
        self._queries: OrderedDict[int, QueryRecord] = OrderedDict()
        self._async = ThreadPoolExecutor(max_workers=async_workers, thread_name_prefix="mysql-async")
        self._closed = False

    # ------------------------------------------------------------------ bookkeeping
    def new(self, sql: str, *, database: str | None, user: str, host: str, connection_id: int | None,
            kind: str = "SYNC") -> QueryRecord:
        with self._lock:
            if self._closed:
                raise mysql_error(Code.UNKNOWN_ERROR, "the server is shutting down")
            qid = self._next_id
            self._next_id += 1
            rec = QueryRecord(qid, sql, database, user, host, connection_id, kind,
                              czar_query_id=f"mysql-{self._tag}-{qid}")
            self._queries[qid] = rec
            self._trim()
        return rec

    def _trim(self) -> None:
        """Forget the oldest finished queries beyond the history size, and expired async results."""
        now = datetime.now()
        for rec in list(self._queries.values()):
            if rec.result is not None and rec.completed is not None and \
                    (now - rec.completed).total_seconds() > self.result_ttl:
                rec.result = None
                log.info("async result of query %d expired", rec.id)
        excess = len(self._queries) - self._history
        for qid in [q for q, r in self._queries.items() if r.done.is_set() and r.result is None][:max(0, excess)]:
            del self._queries[qid]

    def get(self, qid: int) -> QueryRecord | None:
        with self._lock:
            return self._queries.get(qid)

    def records(self) -> list[QueryRecord]:
        with self._lock:
            return list(self._queries.values())

    def running(self) -> list[QueryRecord]:
        return [r for r in self.records() if r.status == EXECUTING]

    def on_connection(self, connection_id: int) -> QueryRecord | None:
        """The synchronous query a connection is running, if any."""
        return next((r for r in self.running() if r.kind == "SYNC" and r.connection_id == connection_id), None)

    # ------------------------------------------------------------------ execution
    def run(self, rec: QueryRecord, timeout: float = 0.0) -> pa.Table:
        """Run a query to the end in the calling thread; raises a MysqlError on failure."""
        try:
            if rec.killed:
                raise mysql_error(Code.QUERY_INTERRUPTED, "Query execution was interrupted")
            table = self.czar.query(rec.sql, lang="qserv", database=rec.database, timeout=timeout,
                                    query_id=rec.czar_query_id)
            if rec.killed:  # KILL arrived while the czar was planning or merging
                raise mysql_error(Code.QUERY_INTERRUPTED, "Query execution was interrupted")
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the client
            err = to_mysql_error(exc)
            if rec.killed:
                err = mysql_error(Code.QUERY_INTERRUPTED, "Query execution was interrupted")
            self._finish(rec, ABORTED if err.code == Code.QUERY_INTERRUPTED else FAILED, error=err)
            raise err from None
        self._finish(rec, COMPLETED, rows=table.num_rows)
        return table

    def _finish(self, rec: QueryRecord, status: str, *, rows: int | None = None,
                error: MysqlError | None = None) -> None:
        rec.status, rec.rows, rec.error = status, rows, error
        rec.completed = datetime.now()
        rec.done.set()

    def submit(self, rec: QueryRecord, timeout: float = 0.0) -> None:
        """Start an async job; its result is kept on the record."""
        def job() -> None:
            try:
                rec.result = self.run(rec, timeout)
            except MysqlError as err:
                log.info("async query %d failed: %s", rec.id, err.msg)
        self._async.submit(job)

    def async_result(self, qid: int) -> QueryRecord:
        """The record of a finished async job whose result can be fetched (raises otherwise)."""
        rec = self.get(qid)
        if rec is None or rec.kind != "ASYNC":
            raise mysql_error(Code.NO_SUCH_TABLE, f"no result for query {qid}: no async query with this id "
                                                  "(SUBMIT returns the id)")
        if not rec.done.is_set():
            raise RuntimeError("async_result of a running query")  # callers wait on rec.done first
        if rec.error is not None:
            raise mysql_error(rec.error.code, f"query {qid} failed: {rec.error.msg}")
        if rec.result is None:
            raise mysql_error(Code.NO_SUCH_TABLE, f"the result of query {qid} was deleted or has expired")
        rec.returned = datetime.now()
        return rec

    def delete_result(self, qid: int) -> None:
        """``CALL qserv_result_delete(id)``: drop a finished async job's result."""
        rec = self.get(qid)
        if rec is None or rec.kind != "ASYNC":
            raise mysql_error(Code.NO_SUCH_TABLE, f"no async query with id {qid}")
        if not rec.done.is_set():
            raise mysql_error(Code.UNKNOWN_ERROR, f"query {qid} is still executing: CANCEL {qid} first")
        if rec.result is None and rec.error is None:
            raise mysql_error(Code.NO_SUCH_TABLE, f"the result of query {qid} was already deleted or has expired")
        rec.result = None
        with self._lock:
            self._queries.pop(qid, None)

    # ------------------------------------------------------------------ cancellation
    def cancel(self, rec: QueryRecord) -> None:
        """Stop a running query (its client gets 'Query execution was interrupted')."""
        if rec.killed or rec.done.is_set():
            return
        rec.killed = True
        if self.czar.cancel(rec.czar_query_id):
            log.info("query %d cancelled on the workers", rec.id)
            return
        # not dispatched yet (planning, queued): keep asking until it stops, so that a kill
        # arriving just before the fan-out still stops the workers instead of waiting for the end
        def keep_cancelling() -> None:
            while not rec.done.wait(0.05):
                if self.czar.cancel(rec.czar_query_id):
                    log.info("query %d cancelled on the workers", rec.id)
                    return
        threading.Thread(target=keep_cancelling, name=f"cancel-{rec.id}", daemon=True).start()

    def cancel_id(self, qid: int) -> None:
        """``CANCEL id``: stop a running query by its Qserv id."""
        rec = self.get(qid)
        if rec is None:
            raise mysql_error(Code.NO_SUCH_THREAD, f"Unknown query id: {qid}")
        if rec.status != EXECUTING:
            raise mysql_error(Code.UNKNOWN_ERROR, f"query {qid} is not executing (status {rec.status})")
        self.cancel(rec)

    def close(self, wait: float = 10.0) -> None:
        """Cancel every running query and stop the async workers."""
        with self._lock:
            self._closed = True
        for rec in self.running():
            self.cancel(rec)
        deadline = time.monotonic() + wait
        for rec in self.records():
            rec.done.wait(max(0.0, deadline - time.monotonic()))
        self._async.shutdown(wait=False, cancel_futures=True)
