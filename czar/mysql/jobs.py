"""Every query the MySQL front end runs, with Qserv's numeric query ids: synchronous queries,
``SUBMIT``-ted (async) jobs and their kept results, cancellation (``KILL``, ``CANCEL``) and the
history behind ``SHOW PROCESSLIST`` / ``information_schema.processlist|queries``.

Ids are small increasing integers, as Qserv's QInfo ids, and keep increasing across czar
restarts (a counter in the job store); the czar sees each query under a name that is unique to
this endpoint. Async jobs live in the czar's job store (:mod:`czar.jobs`): metadata in SQLite,
results in Parquet, so ``qserv_result(id)`` still answers after a restart. A job the czar was
running when it stopped is reported as FAILED ("interrupted by a czar restart"), not re-run:
a client that SUBMITs expects one execution. Async results stay until
``CALL qserv_result_delete(id)`` or until ``result_ttl`` seconds after they completed (Qserv
keeps them one hour); a reaper deletes expired ones.
"""
from __future__ import annotations

import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pyarrow as pa
from mysql_mimic.errors import MysqlError

from czar.engine import Czar
from czar.jobs import INTERRUPTED, JobDB, JobRow, Reaper
from czar.mysql.errors import Code, mysql_error, to_mysql_error
from qengine.errors import QEngineError
from qengine.users import Principal

log = logging.getLogger(__name__)

__all__ = ["QueryRecord", "QueryRegistry"]

EXECUTING, COMPLETED, FAILED, ABORTED = "EXECUTING", "COMPLETED", "FAILED", "ABORTED"
FRONTEND = "mysql"  # the jobs' name space in the job store


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
    result_path: str | None = None     # async jobs only: the stored result, until deleted or expired
    killed: bool = False
    started: bool = False              # async jobs: taken by a pool thread
    principal: Principal | None = None  # whose grants and limits apply (None: trusted)
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def result_location(self) -> str | None:
        return f"table:result_{self.id}" if self.kind == "ASYNC" else None


class QueryRegistry:
    """Runs queries on a Czar and remembers them (bounded history); async jobs and their results
    are kept in a :class:`~czar.jobs.JobDB` (``state_dir``; a temporary one when None, removed
    at ``close()``: jobs then do not survive a restart)."""

    def __init__(self, czar: Czar, *, czar_name: str = "qengine", async_workers: int = 2,
                 result_ttl: float = 3600.0, history: int = 1000, state_dir: str | Path | None = None,
                 reap_interval: float = 30.0) -> None:
        self.czar = czar
        self.czar_name = czar_name
        self.result_ttl = result_ttl
        self._history = history
        self._lock = threading.Lock()
        self._tag = secrets.token_hex(4)  # czar query ids unique to this endpoint
        self._queries: OrderedDict[int, QueryRecord] = OrderedDict()
        self._temp_state = state_dir is None
        self.store = JobDB(tempfile.mkdtemp(prefix="qengine-mysql-state-") if state_dir is None else state_dir)
        self._load()
        self._async = ThreadPoolExecutor(max_workers=async_workers, thread_name_prefix="mysql-async")
        self._closed = False
        self._reaper = Reaper(self.reap, reap_interval, name="mysql-reaper")

    # ------------------------------------------------------------------ persistence
    def _load(self) -> None:
        """Async jobs of earlier runs: finished ones keep their results, running ones failed."""
        code = int(Code.UNKNOWN_ERROR)
        self.store.recover(FRONTEND, [EXECUTING], FAILED, INTERRUPTED, code)
        for row in self.store.rows(FRONTEND):  # a result_ttl lowered since applies to kept results too
            if row.ended is not None and (row.expires is None or row.ended + self.result_ttl < row.expires):
                self.store.update(FRONTEND, row.job_id, expires=row.ended + self.result_ttl)
        self.reap()
        for row in self.store.rows(FRONTEND):
            x = row.extra
            rec = QueryRecord(int(row.job_id), row.query or "", row.database, row.owner or "", x.get("host", ""),
                              x.get("connection_id"), "ASYNC", czar_query_id=x.get("czar_query_id", ""),
                              submitted=_dt(row.created) or datetime.now(), status=row.phase,
                              completed=_dt(row.ended), returned=_dt(x.get("returned")), rows=row.rows,
                              error=mysql_error(row.error_code or code, row.error) if row.error else None,
                              result_path=row.result_path)
            rec.done.set()
            self._queries[rec.id] = rec
        if self._queries:
            log.info("MySQL front end: %d async jobs loaded from %s", len(self._queries), self.store.root)

    def _save_new(self, rec: QueryRecord) -> None:
        self.store.put(JobRow(FRONTEND, str(rec.id), rec.status, query=rec.sql, lang="qserv", database=rec.database,
                              owner=rec.user, created=rec.submitted.timestamp(),
                              extra={"host": rec.host, "connection_id": rec.connection_id,
                                     "czar_query_id": rec.czar_query_id}))

    def reap(self) -> list[int]:
        """Delete the async jobs whose results expired (``result_ttl`` after they finished)."""
        gone = [int(j) for j in self.store.reap(FRONTEND)]
        with self._lock:
            for qid in gone:
                rec = self._queries.get(qid)
                if rec is not None:  # still listed (history), but its result is gone
                    rec.result_path = None
                    log.info("async result of query %d expired", qid)
        return gone

    # ------------------------------------------------------------------ bookkeeping
    def new(self, sql: str, *, database: str | None, user: str, host: str, connection_id: int | None,
            kind: str = "SYNC", principal: Principal | None = None) -> QueryRecord:
        with self._lock:
            if self._closed:
                raise mysql_error(Code.UNKNOWN_ERROR, "the server is shutting down")
        qid = self.store.next_id("mysql-query")  # ids keep increasing across restarts
        rec = QueryRecord(qid, sql, database, user, host, connection_id, kind,
                          czar_query_id=f"mysql-{self._tag}-{qid}", principal=principal)
        if kind == "ASYNC":
            self._save_new(rec)
        with self._lock:
            self._queries[qid] = rec
            self._trim()
        return rec

    def _trim(self) -> None:
        """Forget the oldest finished queries beyond the history size (not async jobs whose
        results are still kept)."""
        excess = len(self._queries) - self._history
        if excess <= 0:
            return
        for qid in [q for q, r in self._queries.items() if r.done.is_set() and r.result_path is None][:excess]:
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
    def _query(self, rec: QueryRecord, timeout: float) -> pa.Table:
        """The query's answer; a MysqlError on failure (not yet recorded on ``rec``)."""
        try:
            if rec.killed:
                raise mysql_error(Code.QUERY_INTERRUPTED, "Query execution was interrupted")
            table = self.czar.query(rec.sql, lang="qserv", database=rec.database, timeout=timeout,
                                    query_id=rec.czar_query_id, user=rec.principal,
                                    frontend="mysql" if rec.kind == "SYNC" else "mysql-async", client=rec.host)
            if rec.killed:  # KILL arrived while the czar was planning or merging
                raise mysql_error(Code.QUERY_INTERRUPTED, "Query execution was interrupted")
        except BaseException as exc:  # noqa: BLE001 - every failure is reported to the client
            err = to_mysql_error(exc)
            if rec.killed:
                err = mysql_error(Code.QUERY_INTERRUPTED, "Query execution was interrupted")
            raise err from None
        return table

    def run(self, rec: QueryRecord, timeout: float = 0.0) -> pa.Table:
        """Run a query to the end in the calling thread; raises a MysqlError on failure."""
        try:
            table = self._query(rec, timeout)
        except MysqlError as err:
            self._finish(rec, ABORTED if err.code == Code.QUERY_INTERRUPTED else FAILED, error=err)
            raise
        self._finish(rec, COMPLETED, rows=table.num_rows)
        return table

    def _finish(self, rec: QueryRecord, status: str, *, rows: int | None = None,
                error: MysqlError | None = None) -> None:
        rec.status, rec.rows, rec.error = status, rows, error
        rec.completed = datetime.now()
        rec.done.set()

    def submit(self, rec: QueryRecord, timeout: float = 0.0) -> None:
        """Start an async job; its result goes to the job store before the job is done."""
        def job() -> None:
            rec.started = True
            if self._closed:  # stopping before the job began: the next start reports it
                self._finish(rec, ABORTED, error=mysql_error(Code.QUERY_INTERRUPTED, "the server is shutting down"))
                return
            try:
                table = self._query(rec, timeout)
            except MysqlError as err:
                if self._closed:
                    # the czar is stopping: leave the job EXECUTING in the store, so that the
                    # next start reports it as interrupted by the restart
                    self._finish(rec, ABORTED, error=err)
                    return
                log.info("async query %d failed: %s", rec.id, err.msg)
                self._finish_async(rec, ABORTED if err.code == Code.QUERY_INTERRUPTED else FAILED, error=err)
                return
            try:
                rec.result_path = self.store.write_result(FRONTEND, str(rec.id), table)
            except Exception as exc:  # a full disk fails the job, not the server
                log.exception("cannot store the result of async query %d", rec.id)
                self._finish_async(rec, FAILED, error=mysql_error(Code.UNKNOWN_ERROR,
                                                                  f"cannot store the result: {exc}"))
                return
            self._finish_async(rec, COMPLETED, rows=table.num_rows)
        self._async.submit(job)

    def _finish_async(self, rec: QueryRecord, status: str, *, rows: int | None = None,
                      error: MysqlError | None = None) -> None:
        """Record an async job's end in the store, then wake whoever waits for it."""
        ended = time.time()
        try:
            self.store.update(FRONTEND, str(rec.id), phase=status, ended=ended, rows=rows,
                              error=error.msg if error else None, error_code=int(error.code) if error else None,
                              result_path=rec.result_path, expires=ended + self.result_ttl)
        except Exception:  # the store closed meanwhile: the job still ends here
            log.exception("cannot record the end of async query %d", rec.id)
        self._finish(rec, status, rows=rows, error=error)

    def async_result(self, qid: int) -> QueryRecord:
        """The record of a finished async job whose result can be fetched (raises otherwise)."""
        rec = self.get(qid)
        if rec is None or rec.kind != "ASYNC":
            raise mysql_error(Code.NO_SUCH_TABLE, f"no result for query {qid}: no async query with this id "
                                                  "(SUBMIT returns the id; results expire after "
                                                  f"{self.result_ttl:g} s)")
        if not rec.done.is_set():
            raise RuntimeError("async_result of a running query")  # callers wait on rec.done first
        if rec.error is not None:
            raise mysql_error(rec.error.code, f"query {qid} failed: {rec.error.msg}")
        if rec.result_path is None:
            raise mysql_error(Code.NO_SUCH_TABLE, f"the result of query {qid} was deleted or has expired")
        return rec

    def fetch_result(self, qid: int) -> pa.Table:
        """``SELECT * FROM qserv_result(id)`` of a finished job: its stored result."""
        rec = self.async_result(qid)
        path = rec.result_path
        row = self.store.get(FRONTEND, str(qid))
        if row is None or path is None:
            raise mysql_error(Code.NO_SUCH_TABLE, f"the result of query {qid} was deleted or has expired")
        try:
            table = self.store.read_result(row)
        except OSError:
            raise mysql_error(Code.NO_SUCH_TABLE, f"the result of query {qid} was deleted or has expired") from None
        rec.returned = datetime.now()
        try:
            self.store.update(FRONTEND, str(qid), extra={**row.extra, "returned": rec.returned.timestamp()})
        except QEngineError:  # the store closed meanwhile: only the RETURNED time is lost
            log.warning("cannot record the return of query %d", qid)
        return table

    def delete_result(self, qid: int) -> None:
        """``CALL qserv_result_delete(id)``: drop a finished async job's result."""
        rec = self.get(qid)
        if rec is None or rec.kind != "ASYNC":
            raise mysql_error(Code.NO_SUCH_TABLE, f"no async query with id {qid}")
        if not rec.done.is_set():
            raise mysql_error(Code.UNKNOWN_ERROR, f"query {qid} is still executing: CANCEL {qid} first")
        if rec.result_path is None and rec.error is None:
            raise mysql_error(Code.NO_SUCH_TABLE, f"the result of query {qid} was already deleted or has expired")
        rec.result_path = None
        self.store.delete(FRONTEND, str(qid))
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
        self._reaper.stop()
        self._async.shutdown(wait=False, cancel_futures=True)
        for rec in self.running():
            if rec.kind == "ASYNC" and not rec.started:  # never ran: stays EXECUTING in the store
                self._finish(rec, ABORTED, error=mysql_error(Code.QUERY_INTERRUPTED, "the server is shutting down"))
            else:
                self.cancel(rec)
        deadline = time.monotonic() + wait
        for rec in self.records():
            rec.done.wait(max(0.0, deadline - time.monotonic()))

    def close_store(self) -> None:
        """Close the job store (after ``close()``, once no query thread writes to it any more);
        a temporary store is deleted."""
        self.store.close()
        if self._temp_state:
            shutil.rmtree(self.store.root, ignore_errors=True)


def _dt(t: float | None) -> datetime | None:
    return datetime.fromtimestamp(t) if t is not None else None
