"""UWS 1.1 jobs: the phase machine, persistence in the czar's job store (a czar restart keeps
every job and re-queues the unfinished ones), a bounded pool that runs them, abort through a
cancel callback, execution-duration limits, and a reaper that destroys jobs past their
destruction time.

A job's metadata (phase, times, parameters, ...) is a row of the czar's job store
(:class:`czar.jobs.JobDB`, SQLite in the state directory, written on every change); its files
are ``<job_dir>/<job id>/``: the inline upload parts, and ``result.<ext>`` (the rendered result
in the requested format) or ``error.vot``. A job that was QUEUED or EXECUTING when the czar
stopped is run again at the next start (TAP clients poll the phase, so a re-run is invisible to
them apart from the delay)."""
from __future__ import annotations

import logging
import os
import secrets
import shutil
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from czar.jobs import JobDB, JobRow, default_state_dir
from czar.tap.errors import TapParamError, message_of
from czar.tap.params import Limits
from czar.tap.votable import error_votable
from qengine.errors import QEngineError

__all__ = ["PHASES", "Job", "JobStore", "iso", "parse_iso"]

log = logging.getLogger(__name__)

PHASES = ("PENDING", "QUEUED", "EXECUTING", "COMPLETED", "ERROR", "ABORTED", "UNKNOWN", "HELD",
          "SUSPENDED", "ARCHIVED")
ACTIVE = ("QUEUED", "EXECUTING")
FINAL = ("COMPLETED", "ERROR", "ABORTED", "ARCHIVED")
FRONTEND = "tap"  # the jobs' name space in the job store


def now() -> datetime:
    return datetime.now(UTC)


def iso(t: datetime | None) -> str | None:
    """UWS timestamps: ISO 8601 UTC with milliseconds and a Z."""
    if t is None:
        return None
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    """An ISO 8601 time (UTC when no zone is given); TapParamError when unreadable."""
    s = text.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(s)
    except ValueError:
        raise TapParamError(f"not an ISO 8601 time: {text!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass
class Job:
    job_id: str
    creation_time: datetime
    destruction: datetime
    execution_duration: int
    parameters: list[tuple[str, str]]          # as given (name spelling kept), in order
    inline: list[str] = field(default_factory=list)  # names of stored inline upload parts
    phase: str = "PENDING"
    run_id: str | None = None
    owner: str | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    result: tuple[str, str] | None = None        # (file name, media type)
    error: str | None = None
    client: str | None = None                    # the creating client's address (audit log)

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.parameters if k.upper() == name.upper()), None)

    def to_row(self) -> JobRow:
        """The job as a row of the job store (UWS-only fields in ``extra``)."""
        return JobRow(FRONTEND, self.job_id, self.phase, query=self.param("QUERY"), lang=self.param("LANG"),
                      owner=self.owner, created=_ts(self.creation_time), started=_ts(self.start_time),
                      ended=_ts(self.end_time), error=self.error, expires=_ts(self.destruction),
                      extra={"execution_duration": self.execution_duration,
                             "parameters": [list(p) for p in self.parameters], "inline": self.inline,
                             "run_id": self.run_id, "result": list(self.result) if self.result else None,
                             "client": self.client})

    @classmethod
    def from_row(cls, row: JobRow) -> Job:
        x = row.extra
        return cls(job_id=row.job_id, creation_time=_dt(row.created), destruction=_dt(row.expires),
                   execution_duration=int(x["execution_duration"]),
                   parameters=[tuple(p) for p in x["parameters"]], inline=list(x.get("inline") or []),
                   phase=row.phase, run_id=x.get("run_id"), owner=row.owner, start_time=_dt(row.started),
                   end_time=_dt(row.ended), result=tuple(x["result"]) if x.get("result") else None,
                   error=row.error, client=x.get("client"))


def _ts(t: datetime | None) -> float | None:
    return t.timestamp() if t is not None else None


def _dt(t: float | None) -> datetime | None:
    return datetime.fromtimestamp(t, UTC) if t is not None else None


#: runs a job: (job, its directory) -> (result bytes, media type, file extension)
Runner = Callable[[Job, Path], tuple[bytes, str, str]]


class JobStore:
    """Every UWS job of the service: metadata in the job store of ``state_dir`` (default: next
    to ``root``, see :func:`czar.jobs.default_state_dir`), files under ``root``."""

    def __init__(self, root: str | os.PathLike, runner: Runner, cancel: Callable[[str], bool],
                 limits: Limits, reap_interval: float = 30.0, state_dir: str | os.PathLike | None = None) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.db = JobDB(state_dir if state_dir is not None else default_state_dir(self.root))
        self.runner, self.cancel, self.limits = runner, cancel, limits
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._pool = ThreadPoolExecutor(max_workers=limits.async_slots, thread_name_prefix="uws")
        self._timers: dict[str, threading.Timer] = {}
        self._timed_out: set[str] = set()
        self._stop = threading.Event()
        self._load()
        self._reaper = threading.Thread(target=self._reap_loop, args=(reap_interval,), daemon=True,
                                        name="uws-reaper")
        self._reaper.start()

    # ------------------------------------------------------------------ persistence
    def _dir(self, job_id: str) -> Path:
        return self.root / job_id

    def _save(self, job: Job) -> None:
        if not self._dir(job.job_id).is_dir():
            return  # deleted meanwhile
        try:
            self.db.put(job.to_row())
        except QEngineError as exc:  # the store was closed: the service is stopping
            log.warning("UWS job %s not saved: %s", job.job_id, exc)

    def _load(self) -> None:
        requeue = []
        for row in self.db.rows(FRONTEND):
            try:
                job = Job.from_row(row)
            except (ValueError, KeyError, TypeError) as exc:
                log.warning("skipping unreadable job %s: %s", row.job_id, exc)
                continue
            if not self._dir(job.job_id).is_dir():  # its files were removed by hand: forget it
                log.warning("UWS job %s has no directory in %s: forgotten", job.job_id, self.root)
                self.db.delete(FRONTEND, job.job_id)
                continue
            self._jobs[job.job_id] = job
            if job.phase in ACTIVE:  # interrupted by the restart: run it again
                job.phase, job.start_time = "QUEUED", None
                self._save(job)
                requeue.append(job.job_id)
        for job_id in requeue:
            self._pool.submit(self._execute, job_id)
        if self._jobs:
            log.info("UWS: %d jobs loaded from %s (%d re-queued)", len(self._jobs), self.root, len(requeue))
        self.reap()

    # ------------------------------------------------------------------ queries
    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.creation_time)

    def job_dir(self, job_id: str) -> Path:
        return self._dir(job_id)

    # ------------------------------------------------------------------ changes
    def create(self, parameters: list[tuple[str, str]], inline: dict[str, bytes], owner: str | None = None,
               client: str | None = None) -> Job:
        """A new PENDING job of ``owner``; UWS control parameters (PHASE, DESTRUCTION,
        EXECUTIONDURATION, RUNID) are applied, the others kept for the runner."""
        t = now()
        job = Job(job_id=secrets.token_hex(16), creation_time=t,
                  destruction=t + timedelta(seconds=self.limits.retention),
                  execution_duration=self.limits.default_duration, parameters=[], owner=owner, client=client)
        d = self._dir(job.job_id)
        d.mkdir(parents=True)
        for name, data in inline.items():
            (d / f"upload-{_safe(name)}").write_bytes(data)
            job.inline.append(name)
        with self._lock:
            self._jobs[job.job_id] = job
            try:
                self._set_params(job, parameters, creating=True)
            except BaseException:  # a refused control parameter (PHASE=SUSPEND, ...): no job
                del self._jobs[job.job_id]
                shutil.rmtree(d, ignore_errors=True)
                raise
            self._save(job)
        return job

    def _set_params(self, job: Job, parameters: list[tuple[str, str]], creating: bool = False) -> bool:
        """Apply posted parameters; True if PHASE=RUN was among them."""
        run = False
        for name, value in parameters:
            key = name.strip().upper()
            if key == "PHASE":
                if value.strip().upper() == "RUN":
                    run = True
                elif value.strip().upper() == "ABORT" and not creating:
                    self.abort(job.job_id)
                else:
                    raise TapParamError(f"PHASE={value!r}: use RUN or ABORT")
            elif key == "DESTRUCTION":
                self._set_destruction(job, value)
            elif key == "EXECUTIONDURATION":
                self._set_duration(job, value)
            elif key == "ACTION":
                continue
            else:
                if key == "RUNID":
                    job.run_id = value
                if not creating:  # a parameter posted later replaces the earlier value
                    job.parameters = [(k, v) for k, v in job.parameters if k.upper() != key or key == "UPLOAD"]
                # at creation every value is kept: a repeated single-valued one fails the job (DALI)
                job.parameters.append((name, value))
        if run:
            self._start(job)
        return run

    def _set_destruction(self, job: Job, value: str) -> None:
        t = parse_iso(value)
        latest = job.creation_time + timedelta(seconds=self.limits.max_retention)
        job.destruction = min(t, latest)  # UWS: the server may shorten what is asked for

    def _set_duration(self, job: Job, value: str) -> None:
        try:
            n = int(float(value.strip()))
        except (ValueError, OverflowError):  # text, NaN, infinities (and over 1e308)
            raise TapParamError(f"EXECUTIONDURATION must be a number of seconds, got {value!r}") from None
        if n < 0:
            raise TapParamError(f"EXECUTIONDURATION must not be negative, got {value!r}")
        job.execution_duration = self.limits.max_duration if n == 0 else min(n, self.limits.max_duration)

    def update(self, job_id: str, parameters: list[tuple[str, str]]) -> Job:
        """POSTed parameters on a job or its /parameters: allowed while the job is PENDING."""
        with self._lock:
            job = self._require(job_id)
            only_control = all(k.strip().upper() in ("PHASE", "DESTRUCTION", "EXECUTIONDURATION", "ACTION")
                               for k, _ in parameters)
            if job.phase != "PENDING" and not only_control:
                raise TapParamError(f"job {job_id} is {job.phase}: parameters can change only while PENDING")
            self._set_params(job, parameters)
            self._save(job)
            self._changed.notify_all()
            return job

    def set_destruction(self, job_id: str, value: str) -> None:
        with self._lock:
            job = self._require(job_id)
            self._set_destruction(job, value)
            self._save(job)

    def set_duration(self, job_id: str, value: str) -> None:
        with self._lock:
            job = self._require(job_id)
            if job.phase != "PENDING":
                raise TapParamError(f"job {job_id} is {job.phase}: EXECUTIONDURATION can change only while PENDING")
            self._set_duration(job, value)
            self._save(job)

    def _require(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise KeyError(job_id)
        return job

    def run(self, job_id: str) -> None:
        with self._lock:
            self._start(self._require(job_id))

    def _start(self, job: Job) -> None:
        if job.phase not in ("PENDING", "HELD"):
            return  # RUN on a queued, running or finished job changes nothing
        job.phase = "QUEUED"
        self._save(job)
        self._changed.notify_all()
        self._pool.submit(self._execute, job.job_id)

    def abort(self, job_id: str) -> None:
        cancel = False
        with self._lock:
            job = self._require(job_id)
            if job.phase in FINAL:
                return
            cancel = job.phase == "EXECUTING"
            job.phase, job.end_time = "ABORTED", now()
            self._save(job)
            self._changed.notify_all()
        if cancel:
            self.cancel(job_id)  # stops the workers' parts; the runner thread then sees ABORTED

    def delete(self, job_id: str) -> None:
        with self._lock:
            job = self._require(job_id)
            running = job.phase == "EXECUTING"
            del self._jobs[job_id]
            timer = self._timers.pop(job_id, None)
            self._changed.notify_all()
        if timer:
            timer.cancel()
        if running:
            self.cancel(job_id)
        self.db.delete(FRONTEND, job_id)
        shutil.rmtree(self._dir(job_id), ignore_errors=True)

    # ------------------------------------------------------------------ execution
    def _execute(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.phase != "QUEUED":
                return
            job.phase, job.start_time = "EXECUTING", now()
            self._save(job)
            self._changed.notify_all()
            timer = threading.Timer(job.execution_duration, self._time_out, args=(job_id,))
            timer.daemon = True
            self._timers[job_id] = timer
            timer.start()
        d = self._dir(job_id)
        outcome: tuple[bytes, str, str] | None = None
        error: str | None = None
        try:
            outcome = self.runner(job, d)
        except QEngineError as exc:
            error = message_of(exc)
        except Exception as exc:  # a bug: the job still ends, in ERROR, with the reason
            log.exception("UWS job %s failed", job_id)
            error = message_of(exc)
        finally:
            with self._lock:
                t = self._timers.pop(job_id, None)
            if t:
                t.cancel()
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.phase != "EXECUTING" or self._stop.is_set():
                return  # aborted, deleted, or the service stops (re-queued at the next start)
            if job_id in self._timed_out:
                self._timed_out.discard(job_id)
                error = f"the job exceeded its execution duration of {job.execution_duration} s and was stopped"
                outcome = None
            try:
                if outcome is not None:
                    body, media, ext = outcome
                    name = f"result.{ext}"
                    (d / name).write_bytes(body)
                    job.result, job.phase = (name, media), "COMPLETED"
                else:
                    (d / "error.vot").write_bytes(error_votable(error or "unknown error"))
                    job.error, job.phase = error or "unknown error", "ERROR"
            except OSError as exc:  # the job directory vanished or the disk is full
                job.error, job.phase = f"cannot store the result: {exc}", "ERROR"
            job.end_time = now()
            self._save(job)
            self._changed.notify_all()

    def _time_out(self, job_id: str) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None or job.phase != "EXECUTING":
                return
            self._timed_out.add(job_id)
        self.cancel(job_id)

    def wait(self, job_id: str, timeout: float, phase: str | None = None) -> None:
        """Block while the job is in ``phase`` (its phase now when None) and active, at most
        ``timeout`` seconds (UWS WAIT)."""
        deadline = now() + timedelta(seconds=timeout)
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            start = phase.upper() if phase else job.phase
            if job.phase != start or job.phase not in ("PENDING", "QUEUED", "EXECUTING"):
                return
            while True:
                job = self._jobs.get(job_id)
                if job is None or job.phase != start:
                    return
                left = (deadline - now()).total_seconds()
                if left <= 0:
                    return
                self._changed.wait(min(left, 1.0))

    # ------------------------------------------------------------------ destruction
    def reap(self) -> int:
        """Destroy every job past its destruction time; returns how many."""
        t = now()
        with self._lock:
            due = [j.job_id for j in self._jobs.values() if j.destruction <= t]
        for job_id in due:
            log.info("UWS: destroying job %s (destruction time reached)", job_id)
            try:
                self.delete(job_id)
            except KeyError:
                pass
        return len(due)

    def _reap_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.reap()
            except Exception:  # never let the reaper die
                log.exception("UWS reaper failed")

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            timers = list(self._timers.values())
            running = [j.job_id for j in self._jobs.values() if j.phase == "EXECUTING"]
        for t in timers:
            t.cancel()
        for job_id in running:  # they are re-queued at the next start
            self.cancel(job_id)
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.db.close()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)[:64]


def inline_parts(job: Job, d: Path) -> dict[str, bytes]:
    """The stored inline upload parts of a job."""
    return {name: (d / f"upload-{_safe(name)}").read_bytes() for name in job.inline
            if (d / f"upload-{_safe(name)}").is_file()}
