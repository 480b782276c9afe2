"""Worker health for the czar: which workers are up, and the calls in flight on each.

A thread calls every worker's ``Health()`` with a short deadline, all at once. A worker that
refuses connections is down at once; one that misses ``STRIKES`` deadlines in a row (a stalled
process: SIGSTOP, swapping, a hung disk) is down too, and its calls in flight are cancelled so
that the czar runs their chunks on other replicas. A down worker that answers again has its
inventory read again and is up.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from qengine.workerclient import ExecuteSummary, WorkerError

if TYPE_CHECKING:
    from czar.engine import Czar

log = logging.getLogger(__name__)

# gRPC codes that mean "the worker is gone" (retry elsewhere) and those that mean "the query is
# wrong or refused" (never retried: it would fail the same way on every replica).
WORKER_DOWN_CODES = frozenset({"UNAVAILABLE"})
QUERY_ERROR_CODES = frozenset({"INVALID_ARGUMENT", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "CANCELLED",
                               "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS", "UNAUTHENTICATED",
                               "FAILED_PRECONDITION", "OUT_OF_RANGE", "UNIMPLEMENTED"})
STRIKES = 2  # missed health deadlines in a row before a worker is down


class _Part:
    """One worker's part of a query: its chunks, its call, its batches until it completes."""

    def __init__(self, addr: str, chunks, wid: str, attempt: int) -> None:
        self.addr, self.chunks, self.wid, self.attempt = addr, chunks, wid, attempt
        self.batches: list = []
        self.summary = ExecuteSummary()
        self.abandoned = False     # the query no longer wants this part
        self.worker_down = False   # the health checks gave up on its worker
        self._call = None
        self._lock = threading.Lock()

    def set_call(self, call) -> None:
        with self._lock:
            self._call = call
            stop = self.abandoned or self.worker_down
        if stop:
            call.cancel()

    def cancel(self, worker_down: bool = False) -> None:
        with self._lock:
            if worker_down:
                self.worker_down = True
            else:
                self.abandoned = True
            call = self._call
        if call is not None:
            call.cancel()

    def abandon(self) -> None:
        self.cancel(worker_down=False)


@dataclass
class WorkerState:
    up: bool = True
    reason: str = ""
    since: float = field(default_factory=time.time)
    strikes: int = 0


class HealthMonitor:
    """Up/down state of the czar's workers, kept by periodic ``Health()`` calls."""

    def __init__(self, czar: "Czar", interval: float = 1.0, timeout: float = 1.0) -> None:
        self.czar = czar
        self.interval = interval
        self.timeout = timeout
        self._lock = threading.Lock()
        self._states = {w.address: WorkerState() for w in czar.workers}
        self._inflight: dict[str, set[_Part]] = {w.address: set() for w in czar.workers}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ state
    def state(self, addr: str) -> WorkerState:
        with self._lock:
            s = self._states[addr]
            return WorkerState(s.up, s.reason, s.since, s.strikes)

    def is_up(self, addr: str) -> bool:
        return self._states[addr].up

    def describe_down(self) -> str:
        with self._lock:
            down = [f"{a} ({s.reason or 'down'})" for a, s in self._states.items() if not s.up]
        return "workers down: " + (", ".join(down) if down else "none")

    def mark_down(self, addr: str, reason: str) -> None:
        """Take a worker out of service and cancel its calls in flight (their chunks are retried)."""
        with self._lock:
            s = self._states[addr]
            was_up = s.up
            if was_up:
                s.up, s.since = False, time.time()
            s.reason = reason
            parts = list(self._inflight[addr])
        if was_up:
            log.warning("worker %s is down: %s", addr, reason)
        for p in parts:
            p.cancel(worker_down=True)

    def mark_up(self, addr: str) -> None:
        with self._lock:
            s = self._states[addr]
            if not s.up:
                log.warning("worker %s is up again", addr)
                s.up, s.since, s.reason = True, time.time(), ""
            s.strikes = 0

    def track(self, part: _Part) -> None:
        with self._lock:
            self._inflight[part.addr].add(part)
            down = not self._states[part.addr].up
        if down:
            part.cancel(worker_down=True)

    def untrack(self, part: _Part) -> None:
        with self._lock:
            self._inflight[part.addr].discard(part)

    # ------------------------------------------------------------------ checks
    def check_now(self, addr: str) -> bool:
        """One health check of one worker now; marks it down on failure."""
        try:
            self.czar._client(addr).health(timeout=self.timeout)
            return True
        except WorkerError as exc:
            self.mark_down(addr, f"health check: {exc.code}")
            return False

    def check_all(self) -> None:
        """Check every worker at once (a stalled one must not delay the others)."""
        calls = {}
        for w in self.czar.workers:
            try:
                calls[w.address] = (w, w.health_future(self.timeout))
            except Exception as exc:  # a closed channel: the czar is shutting down
                log.debug("health call to %s not started: %r", w.address, exc)
        for addr, (w, fut) in calls.items():
            try:
                fut.result()
            except grpc.RpcError as exc:
                self._failed(addr, w.error(exc))
                continue
            except Exception as exc:
                self._failed(addr, WorkerError("UNKNOWN", repr(exc), addr))
                continue
            if not self.is_up(addr):
                try:
                    self.czar._read_inventory(w)  # what it holds may have changed while it was away
                except WorkerError as exc:
                    self._failed(addr, exc)
                    continue
            self.mark_up(addr)

    def _failed(self, addr: str, exc: WorkerError) -> None:
        with self._lock:
            s = self._states[addr]
            s.strikes += 1
            strikes = s.strikes
        if exc.code in WORKER_DOWN_CODES or strikes >= STRIKES:
            self.mark_down(addr, f"health check: {exc.code}")

    def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                self.check_all()
            except Exception:  # never let the monitor die
                log.exception("health check failed")
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - t0)))

    def start(self) -> None:
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="czar-health", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout + 5)
            self._thread = None
