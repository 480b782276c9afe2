"""The czar's job store: async-job metadata in SQLite (``<state_dir>/jobs.sqlite``, WAL mode)
and query results in Parquet (``<state_dir>/results/<front end>/<job id>.parquet``).

Both front ends keep their jobs here so that a czar restart loses no finished result:

- a result file is written under a temporary name and renamed into place *before* its row says
  the job finished, so a crash leaves either no result (the job is then reported as
  interrupted) or a complete one — never a half-written file that a row points at;
- :meth:`JobDB.recover` marks the jobs a stopped czar was running as failed
  (:data:`INTERRUPTED`); a front end may instead re-queue them (TAP does);
- :meth:`JobDB.reap` deletes jobs (row and result file) past their expiry time;
- counters (:meth:`JobDB.next_id`) give ids that keep increasing across restarts.

One connection guarded by a lock serves every thread of the process; other processes (a second
service over the same directory) may open the same database — SQLite serialises writers.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from qengine.errors import ConfigError, QEngineError

__all__ = ["INTERRUPTED", "JobDB", "JobRow", "default_state_dir"]

log = logging.getLogger(__name__)

#: the error of a job that was running when the czar stopped
INTERRUPTED = "interrupted by a czar restart: the query was running when the czar stopped; submit it again"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    frontend    TEXT NOT NULL,      -- 'tap' or 'mysql'
    job_id      TEXT NOT NULL,
    phase       TEXT NOT NULL,      -- the front end's own status names
    query       TEXT,
    lang        TEXT,
    database    TEXT,
    owner       TEXT,
    created     REAL,               -- times: seconds since the epoch
    started     REAL,
    ended       REAL,
    error       TEXT,
    error_code  INTEGER,
    rows        INTEGER,
    result_path TEXT,               -- relative to the state directory
    expires     REAL,
    extra       TEXT NOT NULL DEFAULT '{}',  -- JSON: what only one front end needs
    PRIMARY KEY (frontend, job_id)
);
CREATE INDEX IF NOT EXISTS jobs_expires ON jobs (expires);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""
_VERSION = 1


def default_state_dir(job_dir: str | os.PathLike) -> Path:
    """The state directory next to a TAP job directory: ``<job_dir>-state``."""
    p = Path(job_dir).resolve()
    return p.with_name(p.name + "-state")


@dataclass
class JobRow:
    """One job as stored."""

    frontend: str
    job_id: str
    phase: str
    query: str | None = None
    lang: str | None = None
    database: str | None = None
    owner: str | None = None
    created: float | None = None
    started: float | None = None
    ended: float | None = None
    error: str | None = None
    error_code: int | None = None
    rows: int | None = None
    result_path: str | None = None
    expires: float | None = None
    extra: dict = field(default_factory=dict)


_COLUMNS = [f.name for f in fields(JobRow)]


class JobDB:
    """Job metadata and results under ``state_dir`` (created if missing)."""

    def __init__(self, state_dir: str | os.PathLike) -> None:
        self.root = Path(state_dir)
        self.results = self.root / "results"
        try:
            self.results.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(self.root / "jobs.sqlite", timeout=30, check_same_thread=False,
                                        isolation_level=None)  # autocommit; explicit BEGIN where needed
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=NORMAL")  # WAL: durable at checkpoints, never corrupt
            version = self._con.execute("PRAGMA user_version").fetchone()[0]
            if version > _VERSION:
                raise ConfigError(f"{self.root}/jobs.sqlite was written by a newer qengine (schema {version})")
            self._con.executescript(_SCHEMA)
            self._con.execute(f"PRAGMA user_version={_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the job store in {self.root}: {exc}") from None
        self._lock = threading.RLock()
        self._closed = False
        self._clean_results()

    # ------------------------------------------------------------------ rows
    def _execute(self, sql: str, args: Iterable = ()) -> sqlite3.Cursor:
        with self._lock:
            if self._closed:
                raise QEngineError(f"the job store in {self.root} is closed")
            try:
                return self._con.execute(sql, tuple(args))
            except sqlite3.Error as exc:  # locked for too long, disk full, ...: a clear error, not sqlite's
                raise QEngineError(f"job store {self.root / 'jobs.sqlite'}: {exc}") from exc

    def put(self, row: JobRow) -> None:
        """Insert or replace a job."""
        d = asdict(row)
        d["extra"] = json.dumps(d["extra"])
        self._execute(f"INSERT OR REPLACE INTO jobs ({', '.join(_COLUMNS)}) VALUES "
                      f"({', '.join('?' for _ in _COLUMNS)})", [d[c] for c in _COLUMNS])

    def update(self, frontend: str, job_id: str, **changes) -> None:
        """Change some fields of a job (unknown names are a bug: TypeError)."""
        bad = set(changes) - set(_COLUMNS)
        if bad:
            raise TypeError(f"unknown job fields {sorted(bad)}")
        if "extra" in changes:
            changes["extra"] = json.dumps(changes["extra"])
        sets = ", ".join(f"{k} = ?" for k in changes)
        self._execute(f"UPDATE jobs SET {sets} WHERE frontend = ? AND job_id = ?",
                      [*changes.values(), frontend, job_id])

    def get(self, frontend: str, job_id: str) -> JobRow | None:
        rows = self._select("WHERE frontend = ? AND job_id = ?", (frontend, job_id))
        return rows[0] if rows else None

    def rows(self, frontend: str, phases: Iterable[str] | None = None) -> list[JobRow]:
        """Jobs of a front end (in some phases), oldest first."""
        if phases is None:
            return self._select("WHERE frontend = ? ORDER BY created, job_id", (frontend,))
        ph = list(phases)
        return self._select(f"WHERE frontend = ? AND phase IN ({', '.join('?' for _ in ph)}) "
                            "ORDER BY created, job_id", (frontend, *ph))

    def _select(self, where: str, args: tuple) -> list[JobRow]:
        cur = self._execute(f"SELECT {', '.join(_COLUMNS)} FROM jobs {where}", args)
        out = []
        for values in cur.fetchall():
            d = dict(zip(_COLUMNS, values, strict=True))
            d["extra"] = json.loads(d["extra"] or "{}")
            out.append(JobRow(**d))
        return out

    def delete(self, frontend: str, job_id: str) -> bool:
        """Forget a job and delete its result file; False if there was no such job."""
        with self._lock:
            row = self.get(frontend, job_id)
            if row is None:
                return False
            self._execute("DELETE FROM jobs WHERE frontend = ? AND job_id = ?", (frontend, job_id))
        self._remove_result(row)
        return True

    def next_id(self, counter: str, start: int = 1) -> int:
        """The next value of a named counter (``start`` first); never repeats, also across restarts."""
        with self._lock:
            self._execute("BEGIN IMMEDIATE")  # other processes on the same file wait for us
            try:
                self._execute("INSERT OR IGNORE INTO counters (name, value) VALUES (?, ?)", (counter, start))
                value = self._execute("SELECT value FROM counters WHERE name = ?", (counter,)).fetchone()[0]
                self._execute("UPDATE counters SET value = value + 1 WHERE name = ?", (counter,))
                self._execute("COMMIT")
            except BaseException:
                self._execute("ROLLBACK")
                raise
            return value

    # ------------------------------------------------------------------ results
    def result_file(self, frontend: str, job_id: str) -> Path:
        return self.results / frontend / f"{_safe(job_id)}.parquet"

    def write_result(self, frontend: str, job_id: str, table: pa.Table) -> str:
        """Write a job's result as Parquet, atomically (temporary name, fsync, rename); returns
        the path to store in the job's ``result_path``."""
        final = self.result_file(frontend, job_id)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(4)}.tmp")
        try:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return str(final.relative_to(self.root))

    def read_result(self, row: JobRow) -> pa.Table:
        """The stored result of a job (FileNotFoundError when it has none or the file is gone)."""
        if not row.result_path:
            raise FileNotFoundError(f"job {row.job_id} has no stored result")
        return pq.read_table(self.root / row.result_path)

    def _remove_result(self, row: JobRow) -> None:
        if row.result_path:
            (self.root / row.result_path).unlink(missing_ok=True)

    def _clean_results(self) -> None:
        """Delete temporary files of writes a crash interrupted, and result files no job points
        at (written just before a crash, before the row said the job finished)."""
        known = {r[0] for r in self._execute("SELECT result_path FROM jobs WHERE result_path IS NOT NULL")}
        for f in self.results.glob("*/*"):
            rel = str(f.relative_to(self.root))
            if f.is_file() and rel not in known:
                log.info("job store: removing %s (no job refers to it)", f)
                f.unlink(missing_ok=True)

    # ------------------------------------------------------------------ restart and expiry
    def recover(self, frontend: str, running: Iterable[str], phase: str, error: str = INTERRUPTED,
                error_code: int | None = None) -> list[JobRow]:
        """Jobs left in a ``running`` phase by a czar that stopped: set them to ``phase`` with
        ``error`` (now ended); returns them as they were."""
        with self._lock:
            stale = self.rows(frontend, running)
            now = time.time()
            for row in stale:
                self.update(frontend, row.job_id, phase=phase, error=error, error_code=error_code, ended=now)
        if stale:
            log.info("job store: %d %s jobs interrupted by the restart marked %s", len(stale), frontend, phase)
        return stale

    def expired(self, frontend: str, now: float | None = None) -> list[JobRow]:
        t = time.time() if now is None else now
        return self._select("WHERE frontend = ? AND expires IS NOT NULL AND expires <= ?", (frontend, t))

    def reap(self, frontend: str, now: float | None = None) -> list[str]:
        """Delete every job of ``frontend`` past its expiry (row and result); returns their ids."""
        gone = []
        for row in self.expired(frontend, now):
            if self.delete(frontend, row.job_id):
                log.info("job store: %s job %s expired", frontend, row.job_id)
                gone.append(row.job_id)
        return gone

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._con.close()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:64]
