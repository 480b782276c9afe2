"""The user store (hashed secrets, grants, atomic writes), its command line, cluster.yaml's
``auth`` section, per-class limits and the audit log writer. Unit tests: no cluster."""
from __future__ import annotations

import hashlib
import json
import threading

import pytest

from czar.audit import FIELDS, AuditLog, read_audit
from qengine.cli import main
from qengine.errors import ConfigError, QEngineError
from qengine.users import (DEFAULT_LIMITS, AuthConfig, AuthError, LimitError, Limiter, UserStore,
                           mysql_native_hash, parse_auth_config, parse_grant)


@pytest.fixture
def store(tmp_path):
    return UserStore(tmp_path / "users.json")


def test_secrets_are_stored_only_as_hashes(store):
    store.add("alice", "power", password="s3cret-pw")
    token = store.new_token("alice")
    text = store.path.read_text()
    assert "s3cret-pw" not in text and token not in text
    assert hashlib.sha256(token.encode()).hexdigest() in text
    # the MySQL handshake needs SHA1(SHA1(password)), as MySQL stores it
    assert json.loads(text)["users"]["alice"]["mysql_native"] == \
        hashlib.sha1(hashlib.sha1(b"s3cret-pw").digest()).hexdigest() == mysql_native_hash("s3cret-pw")
    assert store.path.stat().st_mode & 0o077 == 0  # owner-only
    assert store.check_password("alice", "s3cret-pw") and not store.check_password("alice", "s3cret-pX")
    assert not store.check_password("nobody", "s3cret-pw")


def test_tokens_identify_their_user_and_can_be_revoked(store):
    store.add("alice", "power")
    store.add("bob", "guest")
    ta, tb = store.new_token("alice"), store.new_token("bob")
    assert ta != tb and len(ta) > 40
    assert store.by_token(ta) == "alice" and store.by_token(tb) == "bob"
    assert store.by_token(ta + "x") is None and store.by_token("") is None
    assert store.revoke_tokens("alice") == 1
    assert store.by_token(ta) is None and store.by_token(tb) == "bob"


def test_grants_and_principals(store):
    store.add("alice", "science")
    store.grant("alice", "secretdb")
    store.grant("alice", "otherdb.Hidden")
    store.grant("alice", "SECRETDB")   # the same grant: kept once
    auth = AuthConfig(store, anonymous=True, public=frozenset({"pub"}))
    p = auth.principal("alice")
    assert p.user_class == "science"
    assert p.allows("SecretDB", "anything") and p.allows("otherdb", "hidden") and p.allows("pub", "x")
    assert not p.allows("otherdb", "Object") and not p.allows("elsewhere", "x")
    assert p.allows_database("otherdb") and not p.allows_database("elsewhere")
    assert store.users()["alice"]["grants"] == ["secretdb", "otherdb.Hidden"]
    assert store.revoke("alice", "secretdb") and not store.revoke("alice", "secretdb")
    assert not auth.principal("alice").allows("secretdb", "x")
    anon = auth.anonymous_principal()
    assert anon.anonymous and anon.allows("pub", "t") and not anon.allows("otherdb", "hidden")
    assert AuthConfig(store).anonymous_principal() is None


@pytest.mark.parametrize("bad", ["", "a.b.c", "db;drop", "db.", ".t", "a b"])
def test_bad_grants_are_refused(bad):
    with pytest.raises(QEngineError, match="bad grant"):
        parse_grant(bad)


def test_bad_names_classes_and_duplicates_are_refused(store):
    with pytest.raises(QEngineError, match="bad user name"):
        store.add("anonymous", "guest")
    with pytest.raises(QEngineError, match="bad user name"):
        store.add("has space", "guest")
    with pytest.raises(QEngineError, match="unknown user class 'admin'"):
        store.add("x", "admin")
    store.add("x", "guest")
    with pytest.raises(QEngineError, match="exists already"):
        store.add("x", "guest")
    with pytest.raises(QEngineError, match="no user 'y'"):
        store.grant("y", "db")
    with pytest.raises(QEngineError, match="must not be empty"):
        store.set_password("x", "")


def test_from_token_errors_explain(store):
    store.add("alice", "guest")
    token = store.new_token("alice")
    closed = AuthConfig(store)
    assert closed.from_token(token).name == "alice"
    with pytest.raises(AuthError, match="authentication required.*Authorization: Bearer"):
        closed.from_token(None)
    with pytest.raises(AuthError, match="invalid bearer token"):
        closed.from_token("qe_forged")
    store.remove("alice")
    with pytest.raises(AuthError, match="invalid bearer token"):
        closed.from_token(token)


def test_concurrent_writers_lose_no_change(tmp_path):
    """Several processes' worth of writers (threads here, each with its own store object) under the
    file lock: every grant is kept."""
    path = tmp_path / "users.json"
    UserStore(path).add("u", "guest")

    def grant(i: int) -> None:
        UserStore(path).grant("u", f"db{i}")

    threads = [threading.Thread(target=grant, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(UserStore(path).users()["u"]["grants"]) == sorted(f"db{i}" for i in range(12))
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_corrupt_store_is_a_clear_error(tmp_path):
    path = tmp_path / "users.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="user store .*users.json"):
        UserStore(path).users()


def test_auth_config_parsing(tmp_path):
    cfg = parse_auth_config({"users": "u.json", "anonymous": True, "public": ["DP02"],
                             "limits": {"guest": {"max_rows": 10}}}, tmp_path)
    assert cfg.store.path == tmp_path / "u.json" and cfg.anonymous and cfg.public == {"dp02"}
    assert cfg.limits["guest"].max_rows == 10
    assert cfg.limits["guest"].max_concurrent == DEFAULT_LIMITS["guest"].max_concurrent
    assert parse_auth_config(None, tmp_path) is None
    for raw, msg in (({"anonymous": True}, "at least 'users"), ({"users": "u", "bogus": 1}, "unknown auth key"),
                     ({"users": "u", "public": "db"}, "list of database names"),
                     ({"users": "u", "limits": {"admin": {}}}, "classes are guest"),
                     ({"users": "u", "limits": {"guest": {"rows": 1}}}, "unknown key"),
                     ({"users": "u", "limits": {"guest": {"max_rows": "many"}}}, "auth.limits.guest")):
        with pytest.raises(ConfigError, match=msg):
            parse_auth_config(raw, tmp_path)


def test_cluster_yaml_auth_and_audit(tmp_path):
    from czar.server import load_cluster_config

    (tmp_path / "c.yaml").write_text("metadata_root: store\nworkers: ['127.0.0.1:1']\n"
                                     "auth: {users: users.json, anonymous: false}\n")
    cfg = load_cluster_config(tmp_path / "c.yaml")
    assert cfg["auth"].store.path == tmp_path / "users.json" and not cfg["auth"].anonymous
    assert cfg["audit"].endswith("audit.jsonl") and cfg["audit"].startswith(cfg["state_dir"])
    (tmp_path / "d.yaml").write_text("metadata_root: store\nworkers: ['127.0.0.1:1']\naudit: false\n")
    cfg = load_cluster_config(tmp_path / "d.yaml")
    assert cfg["auth"] is None and cfg["audit"] is None


def test_limiter_counts_per_user_and_explains():
    lim = Limiter()
    with lim.slot("carol", "guest", 2), lim.slot("carol", "guest", 2):
        with lim.slot("dave", "guest", 2):   # another user: its own count
            assert lim.running("dave") == 1
        with pytest.raises(LimitError, match=r"user carol \(class guest\) may run 2 concurrent queries.*wait"):
            with lim.slot("carol", "guest", 2):
                pass
        assert lim.running("carol") == 2
    assert lim.running("carol") == 0
    with lim.slot("x", "science", 0):   # 0: no limit
        pass


def test_audit_log_lines(tmp_path):
    log = AuditLog(tmp_path / "a" / "audit.jsonl")
    log.write(user="alice", user_class="power", frontend="tap-sync", client="1.2.3.4:5", query_id="q1",
              query="SELECT 1", status="COMPLETED", rows=1, seconds=0.5, error=None)
    log.write(user=None, user_class=None, frontend="python", client=None, query_id="q2",
              query="SELECT x", status="ERROR", rows=None, seconds=0.1, error="unknown column x")
    log.close()
    recs = read_audit(tmp_path / "a" / "audit.jsonl")
    assert [tuple(r) for r in recs] == [FIELDS, FIELDS]
    assert recs[0]["user"] == "alice" and recs[0]["rows"] == 1 and recs[0]["time"].endswith("Z")
    assert recs[1]["status"] == "ERROR" and recs[1]["error"] == "unknown column x"
    assert (tmp_path / "a" / "audit.jsonl").stat().st_mode & 0o077 == 0


def test_user_command_line(tmp_path, capsys, monkeypatch):
    path = str(tmp_path / "users.json")
    monkeypatch.setattr("sys.stdin", __import__("io").StringIO("pw one\n"))
    assert main(["user", "add", "alice", "--class", "power", "--password-stdin", "--token", "--store", path]) == 0
    token = capsys.readouterr().out.strip()
    assert UserStore(path).by_token(token) == "alice" and UserStore(path).check_password("alice", "pw one")
    assert main(["user", "grant", "alice", "dp02.Object", "--store", path]) == 0
    assert main(["user", "grant", "alice", "sdss", "--store", path]) == 0
    assert main(["user", "revoke", "alice", "sdss", "--store", path]) == 0
    assert main(["user", "revoke", "alice", "sdss", "--store", path]) == 1
    assert "has no grant 'sdss'" in capsys.readouterr().err
    assert main(["user", "token", "alice", "--store", path]) == 0
    t2 = capsys.readouterr().out.strip()
    assert t2 != token and UserStore(path).by_token(t2) == "alice"
    assert main(["user", "class", "alice", "science", "--store", path]) == 0
    assert main(["user", "list", "--store", path]) == 0
    out = capsys.readouterr().out
    assert "alice\tscience\tdp02.Object\t2\tyes" in out and token not in out
    assert main(["user", "token", "alice", "--revoke-all", "--store", path]) == 0
    assert UserStore(path).by_token(t2) is None
    assert main(["user", "grant", "nobody", "db", "--store", path]) == 1
    assert "no user 'nobody'" in capsys.readouterr().err
    monkeypatch.delenv("QENGINE_USERS", raising=False)
    assert main(["user", "list"]) == 1
    assert "which user store" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["user", "add", "--help"])
    assert exc.value.code == 0
    assert "--password-stdin" in capsys.readouterr().out
