"""Users, their class, secrets and grants; the per-class resource limits; who a request is.

The store is one JSON file (its path comes from cluster.yaml's ``auth.users``), written under an
exclusive lock (``<path>.lock``) to a temporary name and renamed into place, so readers never see
half a file. Secrets are never stored in clear:

- a TAP bearer token is random (``secrets.token_urlsafe``), shown once, stored as its SHA-256
  (tokens carry 256 random bits: a slow hash adds nothing, and lookup stays O(1));
- a password is stored twice, both one-way: scrypt (salted) to check a clear-text password, and
  SHA1(SHA1(password)) — what MySQL itself stores — for the ``mysql_native_password`` handshake,
  in which the client proves it knows SHA1(password) without sending it.

A grant is a database (``dp02``: every table of it) or one table (``dp02.Object``). Public
databases (``auth.public``) are readable by everyone, anonymous clients included.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from qengine.errors import ConfigError, QEngineError

__all__ = ["ANONYMOUS", "USER_CLASSES", "AuthConfig", "AuthError", "ClassLimits", "LimitError", "Limiter",
           "Principal", "UserStore", "parse_auth_config"]

USER_CLASSES = ("guest", "power", "science")
ANONYMOUS = "anonymous"
TOKEN_PREFIX = "qe_"
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$")
_IDENT = re.compile(r"^[A-Za-z0-9_$-]{1,64}$")
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


class AuthError(QEngineError):
    """A request whose credentials are missing, unknown or wrong (HTTP 401, MySQL 1045)."""


class LimitError(QEngineError):
    """A query refused by its user class's limits (concurrency); the message names the limit."""


# ---------------------------------------------------------------------- limits per class
@dataclass(frozen=True)
class ClassLimits:
    """Resource limits of a user class; 0 means no limit."""

    max_concurrent: int
    max_rows: int
    max_seconds: float


DEFAULT_LIMITS = {
    "guest": ClassLimits(max_concurrent=2, max_rows=100_000, max_seconds=60.0),
    "power": ClassLimits(max_concurrent=8, max_rows=10_000_000, max_seconds=3600.0),
    "science": ClassLimits(max_concurrent=32, max_rows=0, max_seconds=0.0),
}


# ---------------------------------------------------------------------- who asks
@dataclass(frozen=True)
class Principal:
    """An authenticated (or anonymous) user as the czar sees it: name, class and what it may read."""

    name: str
    user_class: str
    databases: frozenset[str] = frozenset()                 # lower-case: whole databases
    tables: frozenset[tuple[str, str]] = frozenset()        # lower-case (database, table)
    anonymous: bool = False

    def allows(self, database: str, table: str) -> bool:
        db = database.lower()
        return db in self.databases or (db, table.lower()) in self.tables

    def allows_database(self, database: str) -> bool:
        """Whether any table of ``database`` may be read (it then shows in SHOW DATABASES)."""
        db = database.lower()
        return db in self.databases or any(d == db for d, _ in self.tables)

    @property
    def key(self) -> tuple:
        """What identifies this principal's view of the metadata (for caches)."""
        return (self.databases, self.tables)


def parse_grant(text: str) -> tuple[str, str | None]:
    """``db`` or ``db.table`` -> (db, table or None); a clear error otherwise."""
    parts = text.strip().split(".")
    if len(parts) not in (1, 2) or not all(_IDENT.match(p) for p in parts):
        raise QEngineError(f"bad grant {text!r}: write DATABASE or DATABASE.TABLE (letters, digits, _ $ -)")
    return parts[0], (parts[1] if len(parts) == 2 else None)


def _principal(name: str, user_class: str, grants: list[str], public: frozenset[str],
               anonymous: bool = False) -> Principal:
    dbs, tables = set(public), set()
    for g in grants:
        db, table = parse_grant(g)
        if table is None:
            dbs.add(db.lower())
        else:
            tables.add((db.lower(), table.lower()))
    return Principal(name, user_class, frozenset(dbs), frozenset(tables), anonymous)


# ---------------------------------------------------------------------- secrets
def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _scrypt(password: str, salt: bytes) -> str:
    return hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT).hex()


def mysql_native_hash(password: str) -> str:
    """SHA1(SHA1(password)) in hex: MySQL's stored form for ``mysql_native_password``."""
    return hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest()


# ---------------------------------------------------------------------- the store
class UserStore:
    """The users of a cluster in one JSON file (created on first write)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._cache: tuple[tuple, dict] | None = None
        self._mutex = threading.Lock()

    # -- file access
    @contextlib.contextmanager
    def _locked(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict:
        """The file's content (cached while the file does not change)."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {"version": 1, "users": {}}
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._mutex:
            if self._cache is not None and self._cache[0] == stamp:
                return self._cache[1]
        try:
            data = json.loads(self.path.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("users"), dict):
                raise ValueError("not a qengine user store")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"user store {self.path}: {exc}") from None
        # token hash -> user, built once per version of the file (a lookup per HTTP request)
        data["_by_token"] = {h: n for n, u in data["users"].items() for h in u.get("tokens", {})}
        with self._mutex:
            self._cache = (stamp, data)
        return data

    def _write(self, data: dict) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # secrets' hashes: owner only
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    @contextlib.contextmanager
    def _change(self):
        """Read-modify-write under the lock."""
        with self._locked():
            with self._mutex:
                self._cache = None
            data = json.loads(json.dumps({k: v for k, v in self._read().items() if k != "_by_token"}))
            yield data
            self._write(data)

    def _user(self, data: dict, name: str) -> dict:
        u = data["users"].get(name)
        if u is None:
            raise QEngineError(f"no user {name!r} in {self.path} (qengine user list shows them)")
        return u

    # -- changes
    def add(self, name: str, user_class: str, password: str | None = None) -> None:
        if not _NAME.match(name) or name.lower() == ANONYMOUS:
            raise QEngineError(f"bad user name {name!r}: 1-64 letters, digits and _ . @ - "
                               f"(not starting with . @ -), and not {ANONYMOUS!r}")
        _check_class(user_class)
        with self._change() as data:
            if name in data["users"]:
                raise QEngineError(f"user {name!r} exists already")
            data["users"][name] = {"class": user_class, "grants": [], "tokens": {}, "created": time.time()}
            if password is not None:
                data["users"][name].update(_password_fields(password))

    def set_password(self, name: str, password: str) -> None:
        with self._change() as data:
            self._user(data, name).update(_password_fields(password))

    def set_class(self, name: str, user_class: str) -> None:
        _check_class(user_class)
        with self._change() as data:
            self._user(data, name)["class"] = user_class

    def remove(self, name: str) -> None:
        with self._change() as data:
            self._user(data, name)
            del data["users"][name]

    def grant(self, name: str, what: str) -> None:
        db, table = parse_grant(what)
        key = db if table is None else f"{db}.{table}"
        with self._change() as data:
            u = self._user(data, name)
            if key.lower() not in (g.lower() for g in u["grants"]):
                u["grants"].append(key)

    def revoke(self, name: str, what: str) -> bool:
        """Remove a grant; False if the user did not have it."""
        parse_grant(what)
        with self._change() as data:
            u = self._user(data, name)
            kept = [g for g in u["grants"] if g.lower() != what.strip().lower()]
            changed = len(kept) != len(u["grants"])
            u["grants"] = kept
        return changed

    def new_token(self, name: str, label: str = "") -> str:
        """A new bearer token for ``name``: returned once, only its hash is kept."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with self._change() as data:
            self._user(data, name)["tokens"][_sha256(token)] = {"created": time.time(), "label": label}
        return token

    def revoke_tokens(self, name: str) -> int:
        with self._change() as data:
            u = self._user(data, name)
            n = len(u["tokens"])
            u["tokens"] = {}
        return n

    # -- reading
    def users(self) -> dict[str, dict]:
        """Every user: class, grants, token count, has_password (no secret, not even hashed)."""
        return {n: {"class": u["class"], "grants": list(u["grants"]), "tokens": len(u.get("tokens", {})),
                    "password": "scrypt" in u}
                for n, u in sorted(self._read()["users"].items())}

    def get(self, name: str) -> dict | None:
        return self._read()["users"].get(name)

    def by_token(self, token: str) -> str | None:
        """The user holding ``token``, or None."""
        return self._read().get("_by_token", {}).get(_sha256(token))

    def check_password(self, name: str, password: str) -> bool:
        u = self.get(name)
        if u is None or "scrypt" not in u:
            return False
        salt, want = u["scrypt"].split("$", 1)
        return hmac.compare_digest(_scrypt(password, bytes.fromhex(salt)), want)

    def mysql_auth_string(self, name: str) -> str | None:
        u = self.get(name)
        return None if u is None else u.get("mysql_native")


def _check_class(user_class: str) -> None:
    if user_class not in USER_CLASSES:
        raise QEngineError(f"unknown user class {user_class!r}: one of {', '.join(USER_CLASSES)}")


def _password_fields(password: str) -> dict:
    if not password:
        raise QEngineError("the password must not be empty")
    salt = secrets.token_bytes(16)
    return {"scrypt": f"{salt.hex()}${_scrypt(password, salt)}", "mysql_native": mysql_native_hash(password)}


# ---------------------------------------------------------------------- the configuration
@dataclass
class AuthConfig:
    """cluster.yaml's ``auth``: the user store, anonymous access, public databases, limits."""

    store: UserStore
    anonymous: bool = False
    public: frozenset[str] = frozenset()
    limits: dict[str, ClassLimits] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    anonymous_class: str = "guest"

    def principal(self, name: str) -> Principal | None:
        """The principal of a stored user (grants as they are now), or the anonymous one."""
        if name == ANONYMOUS:
            return self.anonymous_principal()
        u = self.store.get(name)
        if u is None:
            return None
        return _principal(name, u["class"], u.get("grants", []), self.public)

    def anonymous_principal(self) -> Principal | None:
        if not self.anonymous:
            return None
        return Principal(ANONYMOUS, self.anonymous_class, self.public, frozenset(), anonymous=True)

    def from_token(self, token: str | None) -> Principal:
        """Who presents ``token`` (None: no token); AuthError when refused."""
        if token is None:
            p = self.anonymous_principal()
            if p is None:
                raise AuthError("authentication required: send 'Authorization: Bearer <token>' "
                                "(qengine user token NAME issues one)")
            return p
        name = self.store.by_token(token)
        p = self.principal(name) if name is not None else None
        if p is None:
            raise AuthError("invalid bearer token: unknown or revoked (qengine user token NAME issues a new one)")
        return p

    def limits_of(self, p: Principal) -> ClassLimits:
        return self.limits.get(p.user_class, DEFAULT_LIMITS["guest"])


def parse_auth_config(raw, base: Path, source: str = "cluster.yaml") -> AuthConfig | None:
    """``auth: {users: PATH, anonymous: BOOL, public: [db, ...], anonymous_class: guest,
    limits: {guest: {max_concurrent, max_rows, max_seconds}, ...}}``; None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or "users" not in raw:
        raise ConfigError(f"{source}: 'auth' must be a mapping with at least 'users: PATH' (the user store)")
    known = {"users", "anonymous", "public", "limits", "anonymous_class"}
    bad = sorted(set(raw) - known)
    if bad:
        raise ConfigError(f"{source}: unknown auth key(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
    public = raw.get("public") or []
    if not isinstance(public, list) or not all(isinstance(d, str) for d in public):
        raise ConfigError(f"{source}: auth.public must be a list of database names")
    limits = dict(DEFAULT_LIMITS)
    for cls, values in (raw.get("limits") or {}).items():
        if cls not in USER_CLASSES or not isinstance(values, dict):
            raise ConfigError(f"{source}: auth.limits.{cls}: classes are {', '.join(USER_CLASSES)}, "
                              "each a mapping of max_concurrent, max_rows, max_seconds")
        fields_ = set(ClassLimits.__dataclass_fields__)
        if set(values) - fields_:
            raise ConfigError(f"{source}: auth.limits.{cls}: unknown key(s) {sorted(set(values) - fields_)}; "
                              f"known: {', '.join(sorted(fields_))}")
        try:
            cur = limits[cls]
            limits[cls] = ClassLimits(int(values.get("max_concurrent", cur.max_concurrent)),
                                      int(values.get("max_rows", cur.max_rows)),
                                      float(values.get("max_seconds", cur.max_seconds)))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: auth.limits.{cls}: {exc}") from None
    anon_cls = raw.get("anonymous_class", "guest")
    if anon_cls not in USER_CLASSES:
        raise ConfigError(f"{source}: auth.anonymous_class must be one of {', '.join(USER_CLASSES)}")
    return AuthConfig(UserStore(base / raw["users"]), bool(raw.get("anonymous", False)),
                      frozenset(d.lower() for d in public), limits, anon_cls)


# ---------------------------------------------------------------------- concurrency
class Limiter:
    """Queries running per user, against the class's ``max_concurrent`` (all front ends share it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, int] = {}

    @contextlib.contextmanager
    def slot(self, key: str, user_class: str, limit: int):
        with self._lock:
            n = self._running.get(key, 0)
            if limit and n >= limit:
                raise LimitError(
                    f"too many queries at once: user {key} (class {user_class}) may run {limit} "
                    f"concurrent quer{'y' if limit == 1 else 'ies'} and has {n} running; wait for one to "
                    "finish (or cancel it) and try again, or ask the operators for a larger class")
            self._running[key] = n + 1
        try:
            yield
        finally:
            with self._lock:
                left = self._running[key] - 1
                if left:
                    self._running[key] = left
                else:
                    del self._running[key]

    def running(self, key: str) -> int:
        with self._lock:
            return self._running.get(key, 0)
