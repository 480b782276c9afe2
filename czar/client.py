"""``qengine.connect(url)``: the Python API of a running czar (``qengine czar``)."""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request

import pyarrow as pa

from qengine.errors import QEngineError, QueryError
from qengine.users import AuthError

__all__ = ["Connection", "connect"]


class Connection:
    """Queries a czar over HTTP; the same ``query``/``explain`` as a LocalCluster."""

    def __init__(self, url: str, timeout: float = 3600.0, token: str | None = None) -> None:
        """``token``: a bearer token (``qengine user token NAME``) when the czar authenticates
        (default: ``$QENGINE_TOKEN``, so that ``qengine query --url`` works too)."""
        self.url = url.rstrip("/")
        self.timeout = timeout
        token = token or os.environ.get("QENGINE_TOKEN") or None
        self._headers = {"Content-Type": "application/json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    def _post(self, path: str, body: dict) -> tuple[bytes, str]:
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers=self._headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return resp.read(), resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())
            except ValueError:
                raise QEngineError(f"czar answered HTTP {exc.code}") from None
            if err.get("type") in ("QueryError", "QuerySyntaxError"):
                raise QueryError(err.get("error", "query failed")) from None
            if exc.code == 401:
                raise AuthError(err.get("error", "authentication required")) from None
            raise QEngineError(err.get("error", f"czar answered HTTP {exc.code}")) from None
        except urllib.error.URLError as exc:
            raise QEngineError(f"cannot reach the czar at {self.url}: {exc.reason}") from None

    def query(self, sql: str, *, lang: str = "adql", database: str | None = None, max_rows: int = 0) -> pa.Table:
        data, _ = self._post("/api/v1/query", {"sql": sql, "lang": lang, "database": database, "max_rows": max_rows})
        return pa.ipc.open_stream(pa.py_buffer(data)).read_all()

    def explain(self, sql: str, *, lang: str = "adql", database: str | None = None):
        from czar.engine import Explain

        data, _ = self._post("/api/v1/explain", {"sql": sql, "lang": lang, "database": database})
        d = json.loads(data)
        return Explain(chunks=d["chunks"], num_chunks=d["num_chunks"], regions=d["regions"],
                       per_worker=d["per_worker"], merge_sql=d["merge_sql"],
                       count_from_stats=d.get("count_from_stats"))

    def close(self) -> None:
        pass

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(url: str, timeout: float = 3600.0, token: str | None = None) -> Connection:
    """Connect to a czar, e.g. ``qengine.connect("http://localhost:8080", token=...)``."""
    return Connection(url, timeout, token)
