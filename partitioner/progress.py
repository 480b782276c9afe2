"""Progress of long ingests: a bar with rows/s and ETA on a terminal, a summary line otherwise."""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from partitioner.readers import count_bytes

log = logging.getLogger(__name__)


class Progress:
    """Tracks rows read per input file; the ETA comes from bytes of input consumed so far."""

    def __init__(self, label: str, total_bytes: int, enabled: bool | None = None) -> None:
        self.label = label
        self.total_bytes = max(total_bytes, 1)
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.rows = 0
        self.t0 = time.perf_counter()
        self._done_bytes = 0
        self._current: Path | None = None
        self._rows_in_file = 0
        self._rows_per_byte = None
        self._bar = (tqdm(total=self.total_bytes, unit="B", unit_scale=True, desc=label, file=sys.stderr,
                          dynamic_ncols=True) if self.enabled else None)

    def advance(self, rows: int, path: Path) -> None:
        if path != self._current:
            if self._current is not None:
                size = count_bytes(self._current)
                self._done_bytes += size
                if self._rows_in_file:
                    self._rows_per_byte = self._rows_in_file / max(size, 1)
            self._current, self._rows_in_file = path, 0
        self.rows += rows
        self._rows_in_file += rows
        if self._bar is not None:
            size = count_bytes(path)
            rpb = self._rows_per_byte
            within = min(size, int(self._rows_in_file / rpb)) if rpb else 0
            self._bar.n = min(self.total_bytes, self._done_bytes + within)
            rate = self.rows / max(time.perf_counter() - self.t0, 1e-9)
            self._bar.set_postfix_str(f"{self.rows:,} rows, {rate:,.0f} rows/s", refresh=True)

    def close(self, rows: int) -> None:
        if self._bar is not None:
            self._bar.n = self.total_bytes
            self._bar.close()
        dt = time.perf_counter() - self.t0
        log.info("%s: read %s rows in %.1f s", self.label, f"{rows:,}", dt)
