"""The audit log: one JSON line per query — who ran what, when, through which front end, how it
ended and how many rows it returned. Written only by the czar's engine (:meth:`Czar.query`), so
every front end is covered. Credentials never reach it: front ends hand the engine a
:class:`~qengine.users.Principal` (a name and grants), never a token or password."""
from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["AuditLog", "FIELDS"]

log = logging.getLogger(__name__)

#: the keys of every record, in this order
FIELDS = ("time", "user", "user_class", "frontend", "client", "query_id", "query", "status", "rows",
          "seconds", "error")


class AuditLog:
    """Appends records to ``path`` (created with its directory; owner-only permissions)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._f = os.fdopen(fd, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def write(self, *, user: str | None, user_class: str | None, frontend: str, client: str | None,
              query_id: str, query: str, status: str, rows: int | None, seconds: float,
              error: str | None) -> None:
        record = {"time": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                  "user": user, "user_class": user_class, "frontend": frontend, "client": client,
                  "query_id": query_id, "query": query, "status": status, "rows": rows,
                  "seconds": round(seconds, 6), "error": error}
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            if self._f.closed:
                return
            try:
                self._f.write(line)
                self._f.flush()  # one line per write: a crash loses at most the record being written
            except OSError as exc:  # a full disk must not fail the query
                log.error("audit log %s: %s", self.path, exc)

    def close(self) -> None:
        with self._lock:
            self._f.close()


def read_audit(path: str | os.PathLike) -> list[dict]:
    """Every record of an audit log (tests, tools)."""
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
