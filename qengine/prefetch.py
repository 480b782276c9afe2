"""Run an iterator in a thread of its own, a bounded number of items ahead of its consumer
(:func:`prefetch`), or one call on a new thread (:func:`on_new_thread`).

Readers (decoding input files) and workers (DuckDB producing batches, pyarrow encoding them)
release the GIL, so the producer works while the consumer (spilling, or gRPC sending) does:
both cores stay busy instead of taking turns."""
from __future__ import annotations

import contextlib
import queue
import threading
from typing import Callable, Iterable, Iterator, TypeVar

__all__ = ["prefetch", "on_new_thread"]

T = TypeVar("T")

_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(produce: Callable[[], Iterable], depth: int = 2, *, name: str = "qengine-prefetch",
             join_timeout: float = 10.0) -> Iterator:
    """Yield what ``produce()`` yields, computed in a thread up to ``depth`` items ahead.

    An exception in the producer is raised in the consumer. When the consumer stops early, the
    producer stops at its next item; the produced iterator is closed in the producer's thread
    (a generator's cleanup, e.g. a DuckDB cursor, runs where it ran)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        items = None
        try:
            items = iter(produce())
            for item in items:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put(_Failure(exc))
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):  # free what was produced ahead
            while True:
                q.get_nowait()
        thread.join(timeout=join_timeout)


def on_new_thread(fn: Callable[[], T], *, name: str = "qengine-call") -> T:
    """``fn()`` run on a thread started for it; its result returned, its exception raised here.

    For DuckDB queries: DuckDB (its bundled jemalloc) runs a query markedly faster on a new
    thread than on a long-lived one. Measured in one worker process on the same one-chunk point
    queries, interleaved, DuckDB's own time: 48.9 ms on the gRPC pool's threads, 39.8 ms on one
    dedicated long-lived thread, 34.1 ms on a new thread per query (as :func:`prefetch`'s
    thread gets), with several times fewer minor page faults. A thread start costs ~0.1 ms."""
    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
