"""A daemon thread that calls a function every ``interval`` seconds until stopped (expiry of
async results); an exception is logged and never stops the loop."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Reaper"]

log = logging.getLogger(__name__)


class Reaper:
    def __init__(self, fn: Callable[[], object], interval: float, name: str = "job-reaper") -> None:
        self._fn, self._interval = fn, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._fn()
            except Exception:  # a reaper that dies would let results pile up silently
                log.exception("job reaper failed")

    def stop(self) -> None:
        self._stop.set()
