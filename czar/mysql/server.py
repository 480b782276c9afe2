"""The MySQL wire-protocol endpoint of a czar (Qserv's native interface, port 4040 by default).

``start_mysql_server(czar, host, port)`` serves in a background thread with its own asyncio
loop and returns a handle (``.port``, ``.stop()``); ``serve_mysql(...)`` blocks until stopped.
Without ``auth`` any user name is accepted without a password (every client trusted); with it,
users log in with the password of the user store (``mysql_native_password``: MySQL's own
challenge-response, the password never crosses the wire), and ``anonymous`` with an empty
password when the cluster allows anonymous access.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Self

from mysql_mimic import MysqlServer
import secrets

from mysql_mimic.auth import IdentityProvider, NativePasswordAuthPlugin, NoLoginAuthPlugin, User
from mysql_mimic.control import LocalControl
from mysql_mimic.variables import SYSTEM_VARIABLES, GlobalVariables, SessionVariables

from czar.engine import Czar
from czar.mysql.jobs import QueryRegistry
from czar.mysql.session import QservSession
from qengine.errors import QEngineError
from qengine.users import ANONYMOUS, AuthConfig

log = logging.getLogger(__name__)

__all__ = ["DEFAULT_PORT", "Frontend", "MySQLServerHandle", "serve_mysql", "start_mysql_server"]

DEFAULT_PORT = 4040
SERVER_VERSION = "8.0.29-qengine"


class _UserErrorsAtInfo(logging.Filter):
    """mysql-mimic logs every error it sends a client at ERROR level; a query with a typo is
    not a server error, so those records (the ones without a traceback) become INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and not record.exc_info:
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_MIMIC_LOG = logging.getLogger("mysql_mimic.connection")
if not any(isinstance(f, _UserErrorsAtInfo) for f in _MIMIC_LOG.filters):
    _MIMIC_LOG.addFilter(_UserErrorsAtInfo())


class StoreIdentityProvider(IdentityProvider):
    """Users of the user store, checked by ``mysql_native_password`` against SHA1(SHA1(password))."""

    def __init__(self, auth: AuthConfig) -> None:
        self.auth = auth
        self._decoy = secrets.token_hex(20)  # unknown users fail like a wrong password

    def get_plugins(self):
        return [NativePasswordAuthPlugin(), NoLoginAuthPlugin()]

    async def get_user(self, username: str) -> User | None:
        native = NativePasswordAuthPlugin.name
        if username in (ANONYMOUS, ""):
            if self.auth.anonymous:  # an empty password only (the plugin's empty-password path)
                return User(name=ANONYMOUS, auth_string=None, auth_plugin=native)
            return User(name=username or ANONYMOUS, auth_plugin=NoLoginAuthPlugin.name)
        try:
            stored = self.auth.store.mysql_auth_string(username)
        except QEngineError as exc:
            log.error("MySQL login: %s", exc)
            stored = None
        if stored is None:  # unknown, or no password (token only): never an empty-password login
            return User(name=username, auth_string=self._decoy, auth_plugin=native)
        return User(name=username, auth_string=stored, auth_plugin=native)


class Frontend:
    """What every connection of one endpoint shares: the czar, the query registry, the pool of
    threads that wait on the czar, and the live sessions by connection id (for KILL)."""

    def __init__(self, czar: Czar, *, query_threads: int = 8, async_workers: int = 2,
                 result_ttl: float = 3600.0, state_dir: str | Path | None = None,
                 reap_interval: float = 30.0, auth: AuthConfig | None = None) -> None:
        self.czar = czar
        self.auth = auth
        self.registry = QueryRegistry(czar, async_workers=async_workers, result_ttl=result_ttl,
                                      state_dir=state_dir, reap_interval=reap_interval)
        self.executor = ThreadPoolExecutor(max_workers=query_threads, thread_name_prefix="mysql-query")
        self.sessions: dict[int, QservSession] = {}
        schema = dict(SYSTEM_VARIABLES)
        schema["version"] = (str, SERVER_VERSION, False)
        schema["version_comment"] = (str, "qengine: Qserv-compatible query engine", False)
        schema["default_storage_engine"] = (str, "qengine", True)
        schema["default_tmp_storage_engine"] = (str, "qengine", True)
        self._globals = GlobalVariables(schema)

    def variables(self) -> SessionVariables:
        return SessionVariables(self._globals)

    def close(self) -> None:
        self.registry.close()
        self.executor.shutdown(wait=False, cancel_futures=True)
        self.registry.close_store()


class MySQLServerHandle:
    """A running endpoint: ``.host``, ``.port``; ``.stop()`` cancels running queries, closes every
    connection and joins the thread (idempotent)."""

    def __init__(self, czar: Czar, host: str, port: int, identity_provider: IdentityProvider | None,
                 **frontend_options) -> None:
        self.frontend = Frontend(czar, **frontend_options)
        auth = frontend_options.get("auth")
        if identity_provider is None and auth is not None:
            identity_provider = StoreIdentityProvider(auth)
        self.host = host
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._control = LocalControl(server_id=1)  # connection ids from 65537: never mistaken for query ids
        self._server = MysqlServer(session_factory=lambda: QservSession(self.frontend), control=self._control,
                                   identity_provider=identity_provider)
        self._thread = threading.Thread(target=self._run, args=(host, port), name=f"mysql-{port}", daemon=True)
        self._stopped = False
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self.frontend.close()
            raise QEngineError(f"cannot serve MySQL on {host}:{port}: {self._error}") from self._error

    def _run(self, host: str, port: int) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._server.start_server(host=host, port=port))
            self.port = self._server.sockets()[0].getsockname()[1]
        except BaseException as exc:  # noqa: BLE001 - reported to the caller of start_mysql_server
            self._error = exc
            self._ready.set()
            self._loop.close()
            return
        log.info("MySQL protocol endpoint on %s:%d", host, self.port)
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        for conn_id in list(self._control._connections):
            await self._control.kill(conn_id)
        await asyncio.sleep(0)  # let the killed connections write their error and close
        await self._server.wait_closed()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.frontend.registry.close(wait=0)  # cancel queries first: their threads then return quickly
        if self._loop.is_running():
            fut = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
            try:
                fut.result(timeout=10)
            except Exception as exc:  # noqa: BLE001 - stopping must not fail
                log.warning("MySQL endpoint shutdown: %r", exc)
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self.frontend.close()
        log.info("MySQL protocol endpoint on %s:%d stopped", self.host, self.port)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_mysql_server(czar: Czar, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                       identity_provider: IdentityProvider | None = None, **frontend_options) -> MySQLServerHandle:
    """Serve the MySQL protocol for ``czar`` on (host, port) in a background thread (port 0: any
    free port, see ``.port``). Options: ``query_threads`` (concurrent synchronous queries, 8),
    ``async_workers`` (concurrent SUBMIT-ted jobs, 2), ``result_ttl`` (seconds async results are
    kept, 3600), ``state_dir`` (the czar's job store: SUBMIT-ted jobs and their results survive a
    restart; None: a temporary one, deleted at ``stop()``), ``reap_interval`` (seconds between
    expiry checks, 30), ``auth`` (users and grants: :class:`qengine.users.AuthConfig`; None: any
    user name, trusted)."""
    return MySQLServerHandle(czar, host, port, identity_provider, **frontend_options)


def serve_mysql(czar: Czar, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                stop: threading.Event | None = None, **options) -> None:
    """Serve until ``stop`` is set (or forever); always stops the endpoint before returning."""
    handle = start_mysql_server(czar, host, port, **options)
    try:
        (stop or threading.Event()).wait()
    finally:
        handle.stop()
