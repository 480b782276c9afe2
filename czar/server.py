"""The czar as a service: ``qengine czar --config cluster.yaml`` serves a small HTTP API that
``qengine.connect(url)`` speaks (query results as Arrow IPC streams). TAP and the MySQL
protocol are separate front ends on the same Czar object."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import yaml

from czar.engine import Czar
from czar.metadata import Metadata
from qengine.errors import ConfigError, QEngineError, QueryError
from qengine.workerclient import WorkerClient

log = logging.getLogger(__name__)

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def load_cluster_config(path: str | Path) -> dict:
    """Read cluster.yaml: ``metadata_root``, ``workers`` (list of host:port), ``secret_file``,
    ``http`` (host, port)."""
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    for key in ("metadata_root", "workers"):
        if key not in cfg:
            raise ConfigError(f"{path}: missing key {key!r}")
    if not isinstance(cfg["workers"], list) or not cfg["workers"]:
        raise ConfigError(f"{path}: 'workers' must be a non-empty list of host:port")
    base = path.parent
    cfg["metadata_root"] = str((base / cfg["metadata_root"]).resolve())
    if cfg.get("secret_file"):
        cfg["secret"] = (base / cfg["secret_file"]).read_text().strip()
    return cfg


def czar_from_config(cfg: dict) -> Czar:
    workers = [WorkerClient(w if isinstance(w, str) else w["address"], cfg.get("secret")) for w in cfg["workers"]]
    return Czar(Metadata(cfg["metadata_root"]), workers)


def _error_body(exc: Exception) -> dict:
    body = {"error": str(exc), "type": type(exc).__name__}
    if isinstance(exc, QueryError):
        body.update(line=exc.line, column=exc.column)
    return body


class _Handler(BaseHTTPRequestHandler):
    czar: Czar
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # route to logging, not stderr prints
        log.info("%s " + fmt, self.address_string(), *args)

    def _send(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj) -> None:
        self._send(code, json.dumps(obj).encode(), "application/json")

    def do_GET(self):
        if self.path.rstrip("/") == "/api/v1/health":
            return self._json(200, {"status": "ok", "workers": len(self.czar.workers)})
        self._json(404, {"error": f"no such resource {self.path}"})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            req = json.loads(self.rfile.read(length) or b"{}")
            sql = req["sql"]
        except (ValueError, KeyError):
            return self._json(400, {"error": "request body must be JSON with an 'sql' field"})
        kwargs = dict(lang=req.get("lang", "adql"), database=req.get("database"))
        try:
            if self.path.rstrip("/") == "/api/v1/query":
                table = self.czar.query(sql, max_rows=int(req.get("max_rows") or 0), **kwargs)
                sink = pa.BufferOutputStream()
                with pa.ipc.new_stream(sink, table.schema) as w:
                    w.write_table(table)
                return self._send(200, sink.getvalue().to_pybytes(), ARROW_STREAM)
            if self.path.rstrip("/") == "/api/v1/explain":
                ex = self.czar.explain(sql, **kwargs)
                return self._json(200, {"chunks": ex.chunks, "num_chunks": ex.num_chunks, "regions": ex.regions,
                                        "per_worker": ex.per_worker, "merge_sql": ex.merge_sql,
                                        "count_from_stats": ex.count_from_stats, "text": str(ex)})
            return self._json(404, {"error": f"no such resource {self.path}"})
        except QEngineError as exc:
            return self._json(400, _error_body(exc))
        except Exception as exc:  # never a dropped connection: report the failure
            log.exception("internal error")
            return self._json(500, {"error": f"internal error: {exc!r}", "type": "InternalError"})


def make_http_server(czar: Czar, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"czar": czar})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True, help="cluster.yaml: metadata_root, workers, secret_file, http")
    p.add_argument("--host", help="HTTP address (default from the config, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default from the config, else 8080)")


def run(args: argparse.Namespace) -> int:
    cfg = load_cluster_config(args.config)
    czar = czar_from_config(cfg)
    http = cfg.get("http") or {}
    server = make_http_server(czar, args.host or http.get("host", "127.0.0.1"), args.port or http.get("port", 8080))
    host, port = server.server_address[:2]
    print(f"qengine czar on http://{host}:{port}/ with {len(czar.workers)} workers", file=sys.stderr)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.shutdown()
    czar.close()
    return 0
