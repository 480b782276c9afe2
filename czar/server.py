"""The czar as a service: ``qengine czar --config cluster.yaml`` serves one ASGI app (Starlette on
uvicorn) with the small JSON/Arrow API that ``qengine.connect(url)`` speaks (``/api/v1``) and the
TAP 1.1 service (``/tap``, see :mod:`czar.tap`)."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import socket
import sys
import tempfile
import threading
from pathlib import Path

import pyarrow as pa
import uvicorn
import yaml
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from czar.audit import AuditLog
from czar.engine import Czar
from czar.jobs import default_state_dir
from czar.metadata import Metadata
from czar.tap import Limits, TapService
from czar.tap.votable import error_votable
from qengine.errors import ConfigError, QEngineError, QueryError
from qengine.users import AuthConfig, AuthError, Principal, parse_auth_config
from qengine.workerclient import WorkerClient

log = logging.getLogger(__name__)

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def load_cluster_config(path: str | Path) -> dict:
    """Read cluster.yaml: ``metadata_root``, ``workers`` (list of host:port), ``secret_file``,
    ``http`` (host, port), ``tap`` (job_dir, base_url, limits: the fields of
    :class:`czar.tap.Limits`, e.g. ``max_maxrec``, ``upload_bytes``), ``mysql`` (host, port),
    ``state_dir`` (the job store of async jobs, default ``<tap.job_dir>-state``) and
    ``results_ttl`` (seconds async results are kept; also TAP's default destruction time) and
    ``reap_interval`` (seconds between expiry checks, 30); ``auth`` (users, anonymous, public,
    limits: see :func:`qengine.users.parse_auth_config`; absent: no authentication, as before)
    and ``audit`` (the audit log, default ``<state_dir>/audit.jsonl``; ``false``: none)."""
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
    tap = cfg.get("tap") or {}
    if not isinstance(tap, dict):
        raise ConfigError(f"{path}: 'tap' must be a mapping (job_dir, base_url)")
    tap["job_dir"] = str((base / tap.get("job_dir", "tap-jobs")).resolve())
    known = set(Limits.__dataclass_fields__)
    limits = tap.get("limits") or {}
    bad = sorted(set(limits) - known) if isinstance(limits, dict) else ["(not a mapping)"]
    if bad:
        raise ConfigError(f"{path}: unknown tap.limits key(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    try:
        tap["limits"] = Limits(**{k: int(v) for k, v in limits.items()})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: tap.limits: {exc}") from None
    cfg["tap"] = tap
    # the job store (async jobs of both front ends, czar.jobs): SQLite + Parquet results
    cfg["state_dir"] = str((base / cfg["state_dir"]).resolve()) if cfg.get("state_dir") \
        else str(default_state_dir(tap["job_dir"]))
    ttl = cfg.get("results_ttl")
    if ttl is not None:
        try:
            cfg["results_ttl"] = float(ttl)
            if cfg["results_ttl"] <= 0:
                raise ValueError(ttl)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: results_ttl must be a positive number of seconds, got {ttl!r}") from None
        if "retention" not in limits:  # TAP's default destruction time follows results_ttl
            lim = tap["limits"]
            tap["limits"] = dataclasses.replace(lim, retention=int(cfg["results_ttl"]),
                                                max_retention=max(lim.max_retention, int(cfg["results_ttl"])))
    cfg["auth"] = parse_auth_config(cfg.get("auth"), base, str(path))
    audit = cfg.get("audit", True)
    if audit is False or audit is None:
        cfg["audit"] = None
    elif audit is True:
        cfg["audit"] = str(Path(cfg["state_dir"]) / "audit.jsonl")
    elif isinstance(audit, str):
        cfg["audit"] = str((base / audit).resolve())
    else:
        raise ConfigError(f"{path}: audit must be a file path or false, got {audit!r}")
    return cfg


def czar_from_config(cfg: dict) -> Czar:
    workers = [WorkerClient(w if isinstance(w, str) else w["address"], cfg.get("secret")) for w in cfg["workers"]]
    health = cfg.get("health") or {}   # {interval: s, timeout: s} of the workers' health checks
    auth = cfg.get("auth")
    return Czar(Metadata(cfg["metadata_root"]), workers, health_interval=float(health.get("interval", 1.0)),
                health_timeout=float(health.get("timeout", 2.0)),
                audit=AuditLog(cfg["audit"]) if cfg.get("audit") else None,
                class_limits=auth.limits if auth is not None else None)


# ---------------------------------------------------------------------- authentication
USER_KEY = "qengine.user"   # the request's Principal in the ASGI scope (absent: no authentication)
#: paths anyone may read: service discovery and health, no catalogue data or metadata
OPEN_PATHS = frozenset({"/api/v1/health", "/api/v1/health/", "/tap", "/tap/", "/tap/capabilities",
                        "/tap/availability"})


def request_user(request: Request) -> Principal | None:
    """Who sent ``request`` (None: the service runs without authentication: trusted)."""
    return request.scope.get(USER_KEY)


def request_client(request: Request) -> str | None:
    c = request.client
    return f"{c.host}:{c.port}" if c else None


class AuthMiddleware:
    """Bearer-token authentication of every HTTP request (ASGI): a valid token -> its user, no
    token -> the anonymous user when the cluster allows one, anything else -> 401 with
    ``WWW-Authenticate: Bearer`` and a message that says what to do (a VOTable under /tap, JSON
    elsewhere). Tokens are never logged."""

    def __init__(self, app, auth: AuthConfig) -> None:
        self.app, self.auth = app, auth

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        token, problem = None, None
        for k, v in scope.get("headers") or []:
            if k == b"authorization":
                scheme, _, cred = v.decode("latin-1").strip().partition(" ")
                if scheme.lower() != "bearer" or not cred.strip():
                    problem = "unsupported Authorization header: send 'Authorization: Bearer <token>'"
                token = cred.strip()
        try:
            if problem is not None:
                raise AuthError(problem)
            user = self.auth.from_token(token)
        except AuthError as exc:
            if scope["path"] in OPEN_PATHS and problem is None and token is None:
                user = None
            else:
                await _unauthorized(scope, send, str(exc), bad_token=token is not None)
                return
        except QEngineError as exc:  # the user store is unreadable: the service's fault
            log.error("authentication failed: %s", exc)
            await _send(send, 503, b"authentication is unavailable: the user store cannot be read\n",
                        [(b"content-type", b"text/plain")])
            return
        scope[USER_KEY] = user
        await self.app(scope, receive, send)


async def _unauthorized(scope, send, message: str, bad_token: bool) -> None:
    challenge = 'Bearer realm="qengine"' + (', error="invalid_token"' if bad_token else "")
    if scope["path"].startswith("/tap"):
        body, ctype = error_votable(message), b"application/x-votable+xml"
    else:
        body, ctype = json.dumps({"error": message, "type": "AuthError"}).encode(), b"application/json"
    await _send(send, 401, body, [(b"content-type", ctype), (b"www-authenticate", challenge.encode())])


async def _send(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": headers + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------- /api/v1
def _error_body(exc: Exception) -> dict:
    body = {"error": str(exc), "type": type(exc).__name__}
    if isinstance(exc, QueryError):
        body.update(line=exc.line, column=exc.column)
    return body


def _api_routes(czar: Czar) -> list[Route]:
    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "workers": len(czar.workers)})

    async def body(request: Request) -> dict:
        try:
            req = json.loads(await request.body() or b"{}")
            if not isinstance(req, dict) or "sql" not in req:
                raise KeyError("sql")
            return req
        except (ValueError, KeyError):
            raise _BadRequest() from None

    async def query(request: Request) -> Response:
        try:
            req = await body(request)
        except _BadRequest:
            return JSONResponse({"error": "request body must be JSON with an 'sql' field"}, 400)

        try:
            max_rows = int(req.get("max_rows") or 0)
            if not 0 <= max_rows < 2**63:
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            return JSONResponse({"error": f"max_rows must be a whole number of rows, 0 (no limit) or more, "
                                          f"got {req.get('max_rows')!r}"}, 400)
        user, client = request_user(request), request_client(request)

        def run() -> bytes:
            table = czar.query(req["sql"], lang=req.get("lang", "adql"), database=req.get("database"),
                               max_rows=max_rows, user=user, frontend="http",
                               client=client)
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as w:
                w.write_table(table)
            return sink.getvalue().to_pybytes()

        return await _answer(lambda: Response(run(), media_type=ARROW_STREAM))

    async def explain(request: Request) -> Response:
        try:
            req = await body(request)
        except _BadRequest:
            return JSONResponse({"error": "request body must be JSON with an 'sql' field"}, 400)

        user = request_user(request)

        def run() -> Response:
            ex = czar.explain(req["sql"], lang=req.get("lang", "adql"), database=req.get("database"), user=user)
            return JSONResponse({"chunks": ex.chunks, "num_chunks": ex.num_chunks, "regions": ex.regions,
                                 "per_worker": ex.per_worker, "merge_sql": ex.merge_sql,
                                 "count_from_stats": ex.count_from_stats, "text": str(ex)})

        return await _answer(run)

    async def status(request: Request) -> Response:
        st = czar.status()   # workers up/down, tables held, running queries
        user = request_user(request)
        if user is not None:  # only the tables the user may read, and no one's query ids (job URLs)
            for w in st["workers"]:
                w["tables"] = {k: v for k, v in w["tables"].items() if user.allows(*k.split(".", 1))}
            st["running"] = [{k: v for k, v in q.items() if k != "query_id"} for q in st["running"]]
        return JSONResponse(st)

    return [Route("/api/v1/health", health, methods=["GET"]),
            Route("/api/v1/health/", health, methods=["GET"]),
            Route("/api/v1/status", status, methods=["GET"]),
            Route("/api/v1/query", query, methods=["POST"]),
            Route("/api/v1/explain", explain, methods=["POST"])]


class _BadRequest(Exception):
    pass


async def _answer(make) -> Response:
    """Run a blocking czar call in a thread; qengine errors are 400, bugs 500 (never a dropped
    connection)."""
    try:
        return await run_in_threadpool(make)
    except QEngineError as exc:
        return JSONResponse(_error_body(exc), 400)
    except Exception as exc:
        log.exception("internal error")
        return JSONResponse({"error": f"internal error: {exc!r}", "type": "InternalError"}, 500)


# ---------------------------------------------------------------------- the app and its server
def make_app(czar: Czar, job_dir: str | Path | None = None, *, limits: Limits | None = None,
             base_url: str | None = None, reap_interval: float = 30.0,
             state_dir: str | Path | None = None, auth: AuthConfig | None = None) -> Starlette:
    """The czar's ASGI app: ``/api/v1/*`` and TAP under ``/tap``. ``job_dir`` keeps the UWS
    jobs' files (a temporary directory when None: jobs then do not survive a restart),
    ``state_dir`` the job store with their metadata (default: next to ``job_dir``); ``auth``:
    users and grants (None: no authentication, every caller trusted)."""
    if job_dir is None:
        job_dir = tempfile.mkdtemp(prefix="qengine-tap-jobs-")
    tap = TapService(czar, job_dir, limits=limits, base_url=base_url, reap_interval=reap_interval,
                     state_dir=state_dir, auth=auth)
    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:
            tap.close()  # stop the reaper and the job pool; running jobs resume at the next start

    middleware = [Middleware(AuthMiddleware, auth=auth)] if auth is not None else []
    app = Starlette(routes=_api_routes(czar) + tap.routes(), lifespan=lifespan, middleware=middleware)
    app.state.tap = tap
    return app


class HttpServer:
    """uvicorn serving the czar's app on a socket bound at construction (port 0: any free port),
    so ``server_address`` is known before serving. ``serve_forever()`` blocks; ``start()`` runs it
    in a thread; ``shutdown()`` stops it and waits."""

    def __init__(self, app: Starlette, host: str = "127.0.0.1", port: int = 0,
                 sock: socket.socket | None = None) -> None:
        self.app = app
        self._sock = sock if sock is not None else _bind(host, port)
        self.server_address = self._sock.getsockname()[:2]
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address
        return f"http://{host}:{port}"

    def serve_forever(self) -> None:
        self._server.run(sockets=[self._sock])

    def start(self) -> HttpServer:
        self._thread = threading.Thread(target=self.serve_forever, daemon=True, name="czar-http")
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise QEngineError("the HTTP server failed to start")
            self._thread.join(0.02)
        return self

    def shutdown(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)
        self._sock.close()

    def __enter__(self) -> HttpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.shutdown()


def make_http_server(czar: Czar, host: str = "127.0.0.1", port: int = 0, *, job_dir: str | Path | None = None,
                     limits: Limits | None = None, base_url: str | None = None,
                     reap_interval: float = 30.0, state_dir: str | Path | None = None,
                     auth: AuthConfig | None = None) -> HttpServer:
    """An :class:`HttpServer` for ``czar`` (not yet serving: call ``start()`` or ``serve_forever()``).
    The port is bound first: a port in use raises OSError before any job store starts."""
    sock = _bind(host, port)
    try:
        app = make_app(czar, job_dir, limits=limits, base_url=base_url, reap_interval=reap_interval,
                       state_dir=state_dir, auth=auth)
    except BaseException:
        sock.close()
        raise
    return HttpServer(app, sock=sock)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True,
                   help="cluster.yaml: metadata_root, workers, secret_file, http, tap (job_dir, base_url)")
    p.add_argument("--host", help="HTTP address (default from the config, else 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default from the config, else 8080)")
    p.add_argument("--mysql-port", type=int,
                   help="MySQL-protocol port (default from the config's mysql.port, else 4040; -1: none)")


def run(args: argparse.Namespace) -> int:
    cfg = load_cluster_config(args.config)
    czar = czar_from_config(cfg)
    http = cfg.get("http") or {}
    host = args.host or http.get("host", "127.0.0.1")
    port = args.port if args.port is not None else http.get("port", 8080)
    server = make_http_server(czar, host, port, job_dir=cfg["tap"]["job_dir"], base_url=cfg["tap"].get("base_url"),
                              limits=cfg["tap"]["limits"], state_dir=cfg["state_dir"],
                              reap_interval=float(cfg.get("reap_interval", 30.0)), auth=cfg["auth"])
    mycfg = cfg.get("mysql") or {}
    mysql_port = args.mysql_port if args.mysql_port is not None else mycfg.get("port", 4040)
    mysql = None
    if mysql_port >= 0:
        from czar.mysql import start_mysql_server

        options = {"result_ttl": cfg["results_ttl"]} if cfg.get("results_ttl") else {}
        mysql = start_mysql_server(czar, mycfg.get("host", host), mysql_port, state_dir=cfg["state_dir"],
                                   reap_interval=float(cfg.get("reap_interval", 30.0)), auth=cfg["auth"],
                                   **options)
    print(f"qengine czar on {server.url}/ (TAP at {server.url}/tap) with {len(czar.workers)} workers"
          + (f"; MySQL protocol on port {mysql.port}" if mysql is not None else ""), file=sys.stderr)
    try:
        server.serve_forever()  # uvicorn handles SIGINT/SIGTERM in the main thread
    finally:
        if mysql is not None:
            mysql.stop()
        czar.close()
    return 0
