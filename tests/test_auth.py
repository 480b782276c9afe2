"""Users, grants, class limits and the audit log over a real cluster (worker processes on
loopback) and its real front ends: the engine (Python), TAP over HTTP (httpx, pyvo), the HTTP API
(qengine.connect) and the MySQL protocol (pymysql).

Two databases: ``testdb`` (public) and ``secretdb`` (its own objects, ids >= SECRET_ID, and a
``Hidden`` table whose rows say TOPSECRET). alice (power) may read secretdb, bob (guest) only
secretdb.Hidden, carol (guest) nothing beyond the public database. A forbidden table must behave
exactly like one that does not exist: the differential oracle for errors is the metadata of a
store holding only testdb; for answers, the trusted caller's."""
from __future__ import annotations

import io
import re
import shutil
import threading
import time
import xml.etree.ElementTree as ET

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from czar.audit import AuditLog, read_audit
from czar.dialects import parse
from czar.engine import check_tables
from czar.local import LocalCluster
from czar.metadata import Metadata
from czar.server import make_http_server
from czar.tap import Limits
from qengine.catalog import Column, Table
from qengine.errors import QEngineError, QueryError
from qengine.users import AuthConfig, AuthError, ClassLimits, LimitError, Principal, UserStore
from tests.helpers import FILTER, OBJECT, PART, SOURCE, build_store, make_objects, make_sources

SECRET_ID = 10**7
HIDDEN = Table(name="Hidden", role="replicated", columns=(Column("k", "int"), Column("marker", "string")))
LIMITS = Limits(upload_bytes=256 * 1024, upload_rows=5000, max_wait=20, default_maxrec=5000)
CLASS_LIMITS = {"guest": ClassLimits(max_concurrent=2, max_rows=50, max_seconds=120.0),
                "power": ClassLimits(max_concurrent=4, max_rows=0, max_seconds=0.0),
                "science": ClassLimits(max_concurrent=8, max_rows=0, max_seconds=0.0)}
UWS = "{http://www.ivoa.net/xml/UWS/v1.0}"


# ---------------------------------------------------------------------- the world
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from partitioner.ingest import IngestOptions, ingest

    base = tmp_path_factory.mktemp("auth")
    root = base / "root"
    build_store(root, n_objects=600, rows_per_file=1000)
    opts = IngestOptions(progress=False, rows_per_file=1000, row_group_rows=500)
    objs = make_objects(300, seed=7, first_id=SECRET_ID)
    srcs = make_sources(objs, seed=8)
    srcs = srcs.set_column(0, "sourceId", pa.array(np.arange(srcs.num_rows, dtype=np.int64) + 5 * 10**9))
    hidden = pa.table({"k": pa.array([1, 2, 3], pa.int32()), "marker": ["TOPSECRET"] * 3})
    filt = pa.table({"filterId": pa.array([7], pa.int32()), "name": ["secret-z"]})
    for table, data in ((OBJECT, objs), (SOURCE, srcs), (FILTER, filt), (HIDDEN, hidden)):
        path = base / f"secret-{table.name}.parquet"
        pq.write_table(data, path)
        ingest(root, "secretdb", table, [path], partitioning=PART if table.role != "replicated" else None,
               options=opts)
    public_only = base / "public-only"
    shutil.copytree(root / "testdb", public_only / "testdb")

    store = UserStore(base / "users.json")
    tokens = {}
    for name, cls, grants in (("alice", "power", ["secretdb"]), ("bob", "guest", ["secretdb.Hidden"]),
                              ("carol", "guest", [])):
        store.add(name, cls, password=f"{name}-pw")
        for g in grants:
            store.grant(name, g)
        tokens[name] = store.new_token(name)
    store.add("tokenonly", "guest")   # no password: no MySQL login
    auth = AuthConfig(store, anonymous=True, public=frozenset({"testdb"}), limits=dict(CLASS_LIMITS))
    audit_path = base / "audit.jsonl"
    with LocalCluster(root, workers=2) as qe:
        qe.czar.audit = AuditLog(audit_path)
        qe.czar.class_limits = dict(CLASS_LIMITS)
        yield {"qe": qe, "auth": auth, "tokens": tokens, "audit": audit_path, "base": base,
               "public_meta": Metadata(public_only), "objs": objs}
        qe.czar.audit.close()


@pytest.fixture(scope="module")
def qe(world):
    return world["qe"]


def who(world, name: str) -> Principal:
    return world["auth"].principal(name)


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    srv = make_http_server(world["qe"].czar, "127.0.0.1", 0, job_dir=tmp_path_factory.mktemp("jobs"),
                           limits=LIMITS, reap_interval=0.5, auth=world["auth"]).start()
    try:
        yield srv
    finally:
        srv.shutdown()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=120, follow_redirects=False) as c:
        yield c


def bearer(world, name: str) -> dict:
    return {"Authorization": f"Bearer {world['tokens'][name]}"}


def rows(t: pa.Table) -> list[tuple]:
    return sorted(zip(*[c.to_pylist() for c in t.columns]), key=repr)


def resolve_error(world, sql: str, lang: str = "adql") -> str:
    """The error a cluster holding only testdb gives for ``sql`` (the oracle of 'no such table')."""
    try:
        check_tables(parse(sql, lang), world["public_meta"], None)
    except QueryError as exc:
        return str(exc)
    raise AssertionError(f"no table error for {sql}")


def hinted_names(message: str) -> list[str]:
    """Tables named in a "did you mean" or "known tables" hint."""
    out = []
    for m in re.finditer(r"did you mean ([^?]*)\?|known tables: ([^)]*)$", message):
        out += [n.strip() for n in (m.group(1) or m.group(2) or "").split(",") if n.strip()]
    return out


def assert_no_leak(message: str, user: Principal) -> None:
    assert "TOPSECRET" not in message and "secret-z" not in message
    for name in hinted_names(message):
        db, _, table = name.rpartition(".")
        assert (db and user.allows(db, table)) or (not db and any(
            user.allows(d, name) for d in ("testdb", "secretdb"))), (name, message)


# ---------------------------------------------------------------------- engine (Python)
GRANTED_QUERIES = [
    "SELECT objectId, ra, decl FROM secretdb.Object WHERE mag < 17",
    "SELECT o.objectId, COUNT(*) AS n FROM secretdb.Object AS o JOIN secretdb.Source AS s "
    "ON s.objectId = o.objectId GROUP BY o.objectId",
    "SELECT k, marker FROM secretdb.Hidden",
    "WITH b AS (SELECT objectId FROM secretdb.Object WHERE mag < 16) SELECT COUNT(*) AS n FROM b",
    "SELECT objectId FROM secretdb.Object WHERE mag < 15.5 UNION SELECT objectId FROM testdb.Object WHERE mag < 15.5",
    "SELECT objectId FROM testdb.Object WHERE objectId IN (SELECT objectId - 9999999 FROM secretdb.Object "
    "WHERE mag < 16)",
    "SELECT o1.objectId, o2.objectId AS other FROM secretdb.Object AS o1, secretdb.Object AS o2 WHERE "
    "DISTANCE(POINT('ICRS', o1.ra, o1.decl), POINT('ICRS', o2.ra, o2.decl)) < 0.2 AND o1.objectId <> o2.objectId",
    "SELECT a.objectId, b.objectId AS other FROM testdb.Object AS a JOIN secretdb.Object AS b ON "
    "DISTANCE(POINT('ICRS', a.ra, a.decl), POINT('ICRS', b.ra, b.decl)) < 0.01",
]


@pytest.mark.parametrize("sql", GRANTED_QUERIES)
def test_a_granted_user_gets_what_the_trusted_caller_gets(world, qe, sql):
    expected = qe.query(sql)
    assert expected.num_rows > 0
    assert rows(qe.query(sql, user=who(world, "alice"))) == rows(expected)


FORBIDDEN_FOR_CAROL = [
    "SELECT * FROM secretdb.Object",
    "SELECT k FROM secretdb.Hidden",
    'SELECT k FROM "secretdb"."Hidden"',
    "SELECT k FROM SECRETDB.hidden",
    "SELECT k FROM Hidden",                             # unqualified: exists only in secretdb
    "SELECT o.objectId FROM testdb.Object AS o JOIN secretdb.Source AS s ON s.objectId = o.objectId",
    "SELECT objectId FROM testdb.Object WHERE objectId IN (SELECT objectId FROM secretdb.Object)",
    "SELECT objectId FROM testdb.Object WHERE EXISTS (SELECT 1 FROM secretdb.Hidden)",
    "WITH h AS (SELECT * FROM secretdb.Hidden) SELECT * FROM h",
    "SELECT objectId FROM testdb.Object UNION SELECT objectId FROM secretdb.Object",
    "SELECT * FROM (SELECT k FROM secretdb.Hidden) AS sub",
    "SELECT o1.objectId FROM secretdb.Object AS o1, secretdb.Object AS o2 WHERE "
    "DISTANCE(POINT('ICRS', o1.ra, o1.decl), POINT('ICRS', o2.ra, o2.decl)) < 0.01",
    "SELECT a.objectId, b.objectId AS other FROM testdb.Object AS a JOIN secretdb.Object AS b ON "
    "DISTANCE(POINT('ICRS', a.ra, a.decl), POINT('ICRS', b.ra, b.decl)) < 0.01",
]


@pytest.mark.parametrize("sql", FORBIDDEN_FOR_CAROL)
def test_a_forbidden_table_is_indistinguishable_from_a_missing_one(world, qe, sql):
    carol = who(world, "carol")
    with pytest.raises(QueryError) as exc:
        qe.query(sql, user=carol)
    assert str(exc.value) == resolve_error(world, sql)
    assert_no_leak(str(exc.value), carol)
    if "UNION" not in sql and "IN (" not in sql and "WITH" not in sql and "EXISTS" not in sql \
            and "(SELECT" not in sql:
        with pytest.raises(QueryError) as exc2:
            qe.explain(sql, user=carol)
        assert str(exc2.value) == str(exc.value)


def test_grants_per_table_and_unqualified_names(world, qe):
    bob = who(world, "bob")
    assert rows(qe.query("SELECT k, marker FROM secretdb.Hidden", user=bob)) == \
        rows(qe.query("SELECT k, marker FROM secretdb.Hidden"))
    with pytest.raises(QueryError, match="unknown table secretdb.Object"):
        qe.query("SELECT objectId FROM secretdb.Object", user=bob)
    # the trusted caller finds "Object" in two databases; bob only in the one he may read
    with pytest.raises(QueryError, match="ambiguous"):
        qe.query("SELECT COUNT(*) AS n FROM Object")
    n = qe.query("SELECT COUNT(*) AS n FROM Object", user=bob).column(0)[0].as_py()
    assert n == qe.query("SELECT COUNT(*) AS n FROM testdb.Object").column(0)[0].as_py()


def test_crossmatch_uploads_follow_the_grants(world, qe):
    objs = world["objs"].slice(0, 20)
    mine = pa.table({"id": pa.array(range(20), pa.int64()), "ra": objs.column("ra"), "dec": objs.column("decl")})
    sql = ("SELECT t.id, o.objectId FROM TAP_UPLOAD.t AS t JOIN secretdb.Object AS o "
           "ON 1 = CONTAINS(POINT('ICRS', o.ra, o.decl), CIRCLE('ICRS', t.ra, t.dec, 1/3600.))")
    expected = qe.query(sql, uploads={"t": mine})
    assert expected.num_rows >= 20
    assert rows(qe.query(sql, uploads={"t": mine}, user=who(world, "alice"))) == rows(expected)
    with pytest.raises(QueryError) as exc:
        qe.query(sql, uploads={"t": mine}, user=who(world, "carol"))
    assert str(exc.value) == resolve_error(world, sql)
    # the upload itself is the user's own: carol may match it against the public catalogue
    pub = sql.replace("secretdb", "testdb")
    assert rows(qe.query(pub, uploads={"t": mine}, user=who(world, "carol"))) == rows(qe.query(pub, uploads={"t": mine}))


# hostile queries: forbidden tables in every position, spelled every way
_FORBIDDEN_REFS = ["secretdb.Object", "secretdb.Hidden", '"secretdb"."Hidden"', "SECRETDB.HIDDEN", "secretdb.source",
                   "Hidden", '"Hidden"', "secretdb.Filter", "SecretDB.Object", '"secretdb".Source']
_ALLOWED_REFS = ["testdb.Object", "testdb.Filter", '"testdb"."Object"', "TESTDB.object", "Object", "Filter"]
_TEMPLATES = [
    "SELECT * FROM {f}",
    "SELECT COUNT(*) AS n FROM {a} AS a JOIN {f} AS b ON a.objectId = b.objectId",
    "SELECT * FROM {a} AS a, {f} AS b",
    "SELECT * FROM {a} WHERE objectId IN (SELECT objectId FROM {f})",
    "SELECT * FROM {a} WHERE EXISTS (SELECT 1 FROM {f} AS x)",
    "SELECT * FROM {a} WHERE NOT EXISTS (SELECT * FROM {f})",
    "SELECT (SELECT MAX(k) FROM {f}) AS m FROM {a}",
    "SELECT * FROM (SELECT * FROM {f}) AS s",
    "WITH c AS (SELECT * FROM {f}) SELECT * FROM c",
    "WITH c AS (SELECT * FROM {a}), d AS (SELECT * FROM {f}) SELECT * FROM c, d",
    "SELECT objectId FROM {a} UNION SELECT objectId FROM {f}",
    "SELECT objectId FROM {f} UNION ALL SELECT objectId FROM {a}",
    "SELECT objectId FROM {a} EXCEPT SELECT objectId FROM {f}",
    "SELECT objectId FROM {a} INTERSECT SELECT objectId FROM {f}",
    "SELECT * FROM {a} AS a LEFT OUTER JOIN {f} AS b ON a.objectId = b.objectId",
]


@st.composite
def hostile_queries(draw) -> str:
    q = draw(st.sampled_from(_TEMPLATES)).format(f=draw(st.sampled_from(_FORBIDDEN_REFS)),
                                                  a=draw(st.sampled_from(_ALLOWED_REFS)))
    wrap = draw(st.sampled_from(["{q}", "SELECT * FROM ({q}) AS w", "WITH w AS ({q}) SELECT * FROM w",
                                 "SELECT * FROM testdb.Filter WHERE filterId IN (SELECT COUNT(*) FROM ({q}) AS z)"]))
    q = wrap.format(q=q)
    if draw(st.booleans()):   # keyword case and spacing do not matter
        q = re.sub(r"\b(SELECT|FROM|WHERE|JOIN|UNION|WITH)\b", lambda m: m.group(0).lower(), q)
        q = q.replace(" ", draw(st.sampled_from([" ", "  ", "\n", "\t "])))
    return q


@given(sql=hostile_queries(), user=st.sampled_from(["carol", "bob", "anonymous"]))
def test_hostile_queries_never_reach_forbidden_tables(world, qe, sql, user):
    p = who(world, user)
    if user == "bob" and all(ref in ("secretdb.Hidden", '"secretdb"."Hidden"', "SECRETDB.HIDDEN", "Hidden",
                                     '"Hidden"') for ref in _FORBIDDEN_REFS if ref in sql):
        return  # bob may read Hidden: not a forbidden reference for him
    try:
        got = qe.query(sql, user=p)
    except QueryError as exc:
        msg = str(exc)
        assert_no_leak(msg, p)
        if user != "bob":  # carol and anonymous see exactly the public-only cluster
            assert msg == resolve_error(world, sql)
        return
    raise AssertionError(f"{user} got {got.num_rows} rows for {sql!r}")


def test_class_limits_rows_time_and_concurrency(world, qe, monkeypatch):
    carol = who(world, "carol")
    with pytest.raises(QueryError, match=r"too large for user carol \(class guest\): at most 50 rows"):
        qe.query("SELECT objectId FROM testdb.Object", user=carol)
    # TAP MAXREC beyond the class limit: cut at the limit, flagged as overflow
    t = qe.query("SELECT objectId FROM testdb.Object", user=carol, maxrec=1000)
    assert t.num_rows == 50 and (t.schema.metadata or {}).get(b"qengine.overflow") == b"true"
    assert qe.query("SELECT objectId FROM testdb.Object", user=who(world, "alice")).num_rows > 50
    with qe.czar._limiter.slot("carol", "guest", 2), qe.czar._limiter.slot("carol", "guest", 2):
        with pytest.raises(LimitError, match=r"user carol \(class guest\) may run 2 concurrent queries"):
            qe.query("SELECT COUNT(*) AS n FROM testdb.Object", user=carol)
        assert qe.query("SELECT COUNT(*) AS n FROM testdb.Object", user=who(world, "bob")).num_rows == 1
    # the run-time limit is the class's when the caller asks for none or for more
    seen = []
    monkeypatch.setattr(qe.czar, "_query", lambda *a: seen.append(a[4]) or pa.table({"x": [1]}))
    qe.query("SELECT 1 AS x FROM testdb.Filter", user=carol)
    qe.query("SELECT 1 AS x FROM testdb.Filter", user=carol, timeout=5)
    qe.query("SELECT 1 AS x FROM testdb.Filter", user=who(world, "alice"))
    assert seen == [120.0, 5, 0.0]


def test_the_audit_log_records_who_ran_what(world, qe):
    marker = f"/* audit {time.time_ns()} */"
    qe.query(f"SELECT COUNT(*) AS n FROM testdb.Object {marker}", user=who(world, "carol"), client="10.0.0.1:5")
    with pytest.raises(QueryError):
        qe.query(f"SELECT * FROM secretdb.Hidden {marker}", user=who(world, "carol"))
    recs = [r for r in read_audit(world["audit"]) if marker in r["query"]]
    assert [(r["user"], r["user_class"], r["status"], r["rows"], r["frontend"]) for r in recs] == [
        ("carol", "guest", "COMPLETED", 1, "python"), ("carol", "guest", "ERROR", None, "python")]
    assert recs[0]["client"] == "10.0.0.1:5" and recs[0]["seconds"] >= 0
    assert "unknown table" in recs[1]["error"]


# ---------------------------------------------------------------------- TAP and the HTTP API
def sync(http, sql: str, headers: dict | None = None, **params) -> httpx.Response:
    return http.post("/tap/sync", data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": sql, **params},
                     headers=headers or {})


def votable_rows(body: bytes) -> list[tuple]:
    from astropy.io.votable import parse as parse_votable

    t = parse_votable(io.BytesIO(body), verify="ignore").get_first_table().to_table(use_names_over_ids=True)
    return sorted((tuple(x.item() if hasattr(x, "item") else x for x in r) for r in t), key=repr)


def test_tap_bearer_tokens(world, qe, http):
    sql = "SELECT k, marker FROM secretdb.Hidden"
    r = sync(http, sql, bearer(world, "alice"))
    assert r.status_code == 200 and votable_rows(r.content) == rows(qe.query(sql))
    # no token: anonymous, public data only, and the same error as for a missing table
    r = sync(http, "SELECT COUNT(*) AS n FROM testdb.Object")
    assert r.status_code == 200
    r = sync(http, sql)
    assert r.status_code == 400 and b"unknown table secretdb.Hidden" in r.content and b"TOPSECRET" not in r.content
    for headers in ({"Authorization": "Bearer qe_forged"}, {"Authorization": "Basic YWxpY2U6cHc="},
                    {"Authorization": "Bearer"}):
        r = sync(http, "SELECT COUNT(*) AS n FROM testdb.Object", headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert b"QUERY_STATUS" in r.content and (b"bearer token" in r.content or b"Authorization" in r.content)
    r = http.get("/tap/tables", headers={"Authorization": "Bearer qe_forged"})
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
    assert http.get("/tap/capabilities").status_code == 200


def test_tap_without_anonymous_access(world, tmp_path):
    closed = AuthConfig(world["auth"].store, anonymous=False, public=frozenset({"testdb"}),
                        limits=dict(CLASS_LIMITS))
    srv = make_http_server(world["qe"].czar, "127.0.0.1", 0, job_dir=tmp_path / "jobs", limits=LIMITS,
                           auth=closed).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            r = sync(c, "SELECT COUNT(*) AS n FROM testdb.Object")
            assert r.status_code == 401 and r.headers["www-authenticate"] == 'Bearer realm="qengine"'
            assert b"authentication required" in r.content
            assert c.get("/tap/tables").status_code == 401
            assert c.post("/api/v1/query", json={"sql": "SELECT 1 AS x FROM testdb.Filter"}).status_code == 401
            assert c.get("/tap/availability").status_code == 200
            assert sync(c, "SELECT COUNT(*) AS n FROM testdb.Object", bearer(world, "carol")).status_code == 200
    finally:
        srv.shutdown()


def tableset_names(body: bytes) -> set[str]:
    return {e.text for e in ET.fromstring(body).iter("name") if e.text and "." in e.text}


def test_tap_schema_and_tables_show_only_what_a_user_may_read(world, http):
    anon = tableset_names(http.get("/tap/tables").content)
    alice = tableset_names(http.get("/tap/tables", headers=bearer(world, "alice")).content)
    bob = tableset_names(http.get("/tap/tables", headers=bearer(world, "bob")).content)
    assert "testdb.Object" in anon and not any(n.lower().startswith("secretdb") for n in anon)
    assert {"secretdb.Object", "secretdb.Hidden", "testdb.Object"} <= alice
    assert {n for n in bob if n.startswith("secretdb")} == {"secretdb.Hidden"}
    assert http.get("/tap/tables/secretdb.Hidden").status_code == 404
    assert http.get("/tap/tables/secretdb.Hidden", headers=bearer(world, "bob")).status_code == 200
    assert b"secretdb" not in http.get("/tap/examples").content
    for sql in ("SELECT schema_name FROM TAP_SCHEMA.schemas",
                "SELECT table_name FROM TAP_SCHEMA.tables WHERE table_name LIKE '%idden%'",
                "SELECT table_name, column_name FROM TAP_SCHEMA.columns WHERE LOWER(table_name) LIKE 'secret%'",
                "SELECT from_table, target_table FROM TAP_SCHEMA.keys"):
        for headers in ({}, bearer(world, "carol")):
            body = sync(http, sql, headers).content
            assert b"<TR>" in body or "LIKE" in sql   # TAP_SCHEMA itself answers
            assert b"secretdb" not in body.lower() and b"Hidden" not in body
    got = votable_rows(sync(http, "SELECT table_name FROM TAP_SCHEMA.tables WHERE table_name LIKE '%idden%'",
                            bearer(world, "bob")).content)
    assert got == [("secretdb.Hidden",)]


def _job(http, sql: str, headers: dict) -> str:
    r = http.post("/tap/async", data={"REQUEST": "doQuery", "LANG": "ADQL", "QUERY": sql, "PHASE": "RUN"},
                  headers=headers)
    assert r.status_code == 303
    return r.headers["location"].rsplit("/", 1)[1]


def _wait(http, job_id: str, headers: dict) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        phase = http.get(f"/tap/async/{job_id}/phase", headers=headers).text
        if phase in ("COMPLETED", "ERROR", "ABORTED"):
            return phase
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_uws_jobs_belong_to_their_owner(world, qe, http):
    sql = "SELECT objectId, mag FROM secretdb.Object WHERE mag < 16"
    a, b = bearer(world, "alice"), bearer(world, "bob")
    job = _job(http, sql, a)
    assert _wait(http, job, a) == "COMPLETED"
    assert http.get(f"/tap/async/{job}/owner", headers=a).text == "alice"
    got = http.get(f"/tap/async/{job}/results/result", headers=a)
    assert votable_rows(got.content) == rows(qe.query(sql))
    for path in ("", "/phase", "/results/result", "/parameters", "/error"):
        assert http.get(f"/tap/async/{job}{path}", headers=b).status_code == 404, path
        assert http.get(f"/tap/async/{job}{path}").status_code == 404, path
    assert http.post(f"/tap/async/{job}", data={"ACTION": "DELETE"}, headers=b).status_code == 404
    listed = lambda h: {e.text for e in ET.fromstring(http.get("/tap/async", headers=h).content).iter(f"{UWS}jobref")} \
        | {e.get("id") for e in ET.fromstring(http.get("/tap/async", headers=h).content).iter(f"{UWS}jobref")}
    assert job in listed(a) and job not in listed(b) and job not in listed({})
    # an async job of a forbidden table fails like one of a missing table
    bad = _job(http, "SELECT * FROM secretdb.Hidden", bearer(world, "carol"))
    assert _wait(http, bad, bearer(world, "carol")) == "ERROR"
    err = http.get(f"/tap/async/{bad}/error", headers=bearer(world, "carol")).content
    assert b"unknown table secretdb.Hidden" in err and b"TOPSECRET" not in err
    # a job is run with its owner's grants as they are when it runs
    assert http.delete(f"/tap/async/{job}", headers=a).status_code == 303


def test_tap_uploads_are_the_users_own(world, http):
    from astropy.io.votable.tree import VOTableFile
    from astropy.table import Table as ATable

    mine = ATable({"oid": np.array([1, 2, 3], dtype=np.int64)})
    buf = io.BytesIO()
    VOTableFile.from_table(mine).to_xml(buf)
    files = {"mine": ("mine.xml", buf.getvalue(), "application/x-votable+xml")}
    data = {"REQUEST": "doQuery", "LANG": "ADQL", "UPLOAD": "mine,param:mine"}
    ok = http.post("/tap/sync", data={**data, "QUERY": "SELECT u.oid, o.mag FROM TAP_UPLOAD.mine AS u "
                                                      "JOIN testdb.Object AS o ON o.objectId = u.oid"},
                   files=files, headers=bearer(world, "carol"))
    assert ok.status_code == 200 and len(votable_rows(ok.content)) == 3
    bad = http.post("/tap/sync", data={**data, "QUERY": "SELECT u.oid, h.marker FROM TAP_UPLOAD.mine AS u, "
                                                       "secretdb.Hidden AS h"},
                    files=files, headers=bearer(world, "carol"))
    assert bad.status_code == 400 and b"unknown table secretdb.Hidden" in bad.content


def test_tap_class_limits_explain_themselves(world, qe, http):
    r = sync(http, "SELECT objectId FROM testdb.Object", bearer(world, "carol"))
    assert r.status_code == 200 and len(votable_rows(r.content)) == 50 and b"OVERFLOW" in r.content
    with qe.czar._limiter.slot("carol", "guest", 2), qe.czar._limiter.slot("carol", "guest", 2):
        r = sync(http, "SELECT COUNT(*) AS n FROM testdb.Object", bearer(world, "carol"))
        assert r.status_code == 400 and b"may run 2 concurrent queries" in r.content


def test_pyvo_with_a_token(world, qe, server):
    import pyvo
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {world['tokens']['alice']}"
    svc = pyvo.dal.TAPService(server.url + "/tap", session=session)
    sql = "SELECT objectId, mag FROM secretdb.Object WHERE mag < 16.5"
    expected = rows(qe.query(sql))
    for run in (svc.run_sync, svc.run_async):
        t = run(sql).to_table()
        assert sorted(zip(t["objectId"].tolist(), t["mag"].tolist()), key=repr) == \
            sorted([(a, pytest.approx(b)) for a, b in expected], key=repr)
    # names only: pyvo 1.9 fetches a table's details without the service's session
    assert "secretdb.Hidden" in list(svc.tables.keys())
    anon = pyvo.dal.TAPService(server.url + "/tap")
    assert "secretdb.Hidden" not in list(anon.tables.keys()) and "testdb.Object" in list(anon.tables.keys())
    with pytest.raises(pyvo.dal.DALQueryError, match="unknown table secretdb.Object"):
        anon.run_sync(sql)


def test_python_api_with_a_token(world, qe, server):
    import qengine

    sql = "SELECT k, marker FROM secretdb.Hidden"
    with qengine.connect(server.url, token=world["tokens"]["bob"]) as c:
        assert rows(c.query(sql)) == rows(qe.query(sql))
        with pytest.raises(QueryError, match="unknown table secretdb.Object"):
            c.query("SELECT objectId FROM secretdb.Object")
        with pytest.raises(QueryError, match="unknown table secretdb.Object"):
            c.explain("SELECT objectId FROM secretdb.Object")
    with pytest.raises(QueryError, match="unknown table secretdb.Hidden"):
        qengine.connect(server.url).query(sql)
    with pytest.raises(AuthError, match="invalid bearer token"):
        qengine.connect(server.url, token="qe_forged").query(sql)
    status = httpx.get(server.url + "/api/v1/status").json()
    assert not any(k.startswith("secretdb") for w in status["workers"] for k in w["tables"])
    recs = [r for r in read_audit(world["audit"]) if r["frontend"] == "http" and r["user"] == "bob"]
    assert recs and recs[-1]["client"].startswith("127.0.0.1:")
    assert not any(tok in world["audit"].read_text() for tok in world["tokens"].values())


# ---------------------------------------------------------------------- MySQL
@pytest.fixture(scope="module")
def mysql(world, tmp_path_factory):
    from czar.mysql import start_mysql_server

    with start_mysql_server(world["qe"].czar, "127.0.0.1", 0, auth=world["auth"],
                            state_dir=tmp_path_factory.mktemp("mysql-state")) as srv:
        yield srv


def my(mysql, user: str, password: str | None = None, database: str | None = None):
    import pymysql

    return pymysql.connect(host="127.0.0.1", port=mysql.port, user=user,
                           password=f"{user}-pw" if password is None else password, database=database,
                           connect_timeout=30, read_timeout=120, autocommit=True)


def fetch(conn, sql: str) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def mysql_code(conn, sql: str) -> tuple[int, str]:
    import pymysql

    with pytest.raises(pymysql.MySQLError) as exc:
        fetch(conn, sql)
    return exc.value.args[0], exc.value.args[1]


def test_mysql_logins(world, mysql):
    import pymysql

    for user, pw in (("alice", "wrong"), ("nobody", "x"), ("tokenonly", ""), ("alice", "")):
        with pytest.raises(pymysql.err.OperationalError) as exc:
            my(mysql, user, pw)
        assert exc.value.args[0] == 1045, (user, exc.value.args)
    with my(mysql, "anonymous", "") as c:
        assert fetch(c, "SELECT COUNT(*) FROM testdb.Object")[0][0] == 600 + 8 + 300
        code, msg = mysql_code(c, "SELECT * FROM secretdb.Hidden")
        assert code == 1146 and "TOPSECRET" not in msg


def test_mysql_grants_and_metadata_commands(world, qe, mysql):
    with my(mysql, "alice") as a, my(mysql, "carol") as c:
        assert {r[0] for r in fetch(a, "SHOW DATABASES")} >= {"testdb", "secretdb"}
        assert "secretdb" not in {r[0] for r in fetch(c, "SHOW DATABASES")}
        assert rows_equal(fetch(a, "SELECT k, marker FROM secretdb.Hidden"), qe.query("SELECT k, marker FROM secretdb.Hidden"))
        for sql in ("SELECT * FROM secretdb.Hidden", "DESCRIBE secretdb.Hidden", "SHOW COLUMNS FROM Hidden FROM secretdb",
                    "SELECT o.objectId FROM testdb.Object o JOIN secretdb.Source s ON s.objectId = o.objectId",
                    "EXPLAIN SELECT * FROM secretdb.Object", "SUBMIT SELECT * FROM secretdb.Hidden"):
            code, msg = mysql_code(c, sql)
            assert code == 1146 and "TOPSECRET" not in msg, (sql, code, msg)
            assert_no_leak(msg, who(world, "carol"))
        assert mysql_code(c, "USE secretdb")[0] == 1049
        assert mysql_code(c, "SHOW TABLES FROM secretdb")[0] == 1049
        names = {r[0] for r in fetch(c, "SELECT table_schema FROM information_schema.tables")}
        assert "secretdb" not in names and "testdb" in names
        assert "Hidden" in {r[0] for r in fetch(a, "SHOW TABLES FROM secretdb")}
        # async results and the process list are the owner's
        job = fetch(a, "SUBMIT SELECT k FROM secretdb.Hidden")[0][0]
        assert sorted(fetch(a, f"SELECT * FROM qserv_result({job})")) == [(1,), (2,), (3,)]
        assert mysql_code(c, f"SELECT * FROM qserv_result({job})")[0] == 1146
        assert mysql_code(c, f"CALL qserv_result_delete({job})")[0] == 1146
        assert job not in {r[0] for r in fetch(c, "SELECT ID FROM information_schema.queries")}
        assert job in {r[0] for r in fetch(a, "SELECT ID FROM information_schema.queries")}
        recs = [r for r in read_audit(world["audit"]) if r["frontend"] in ("mysql", "mysql-async")]
        assert {r["user"] for r in recs} >= {"alice", "anonymous"}


def rows_equal(got: list[tuple], expected: pa.Table) -> bool:
    return sorted(got, key=repr) == rows(expected)


def test_mysql_concurrency_counts_with_other_front_ends(world, qe, mysql):
    with my(mysql, "carol") as c:
        with qe.czar._limiter.slot("carol", "guest", 2), qe.czar._limiter.slot("carol", "guest", 2):
            code, msg = mysql_code(c, "SELECT COUNT(*) FROM testdb.Object")
            assert code == 1226 and "may run 2 concurrent queries" in msg
        assert fetch(c, "SELECT COUNT(*) FROM testdb.Object")[0][0] == 908


def test_job_owners_survive_a_restart(tmp_path):
    from czar.tap.uws import JobStore

    def store():
        return JobStore(tmp_path / "jobs", lambda job, d: (b"", "text/plain", "txt"), lambda qid: False, LIMITS)

    s = store()
    job = s.create([("QUERY", "SELECT 1")], {}, owner="alice", client="1.2.3.4:5")
    s.close()
    s = store()
    try:
        again = s.get(job.job_id)
        assert (again.owner, again.client) == ("alice", "1.2.3.4:5")
    finally:
        s.close()


def test_engine_refuses_misuse_clearly(world, qe):
    with pytest.raises(QEngineError):
        qe.query("SELECT * FROM secretdb.Hidden WHERE", user=who(world, "carol"))
    threads = []   # concurrent users do not see each other's grants (views are per query)
    errors: list[str] = []

    def run(name: str) -> None:
        try:
            qe.query("SELECT k FROM secretdb.Hidden", user=who(world, name))
            errors.append(f"{name}:ok")
        except QueryError:
            errors.append(f"{name}:refused")

    for name in ("alice", "carol", "bob", "carol"):
        threads.append(threading.Thread(target=run, args=(name,)))
        threads[-1].start()
    for t in threads:
        t.join()
    assert sorted(errors) == sorted(["alice:ok", "bob:ok", "carol:refused", "carol:refused"])


_TS_COLUMNS = {"schemas": ["schema_name", "description"], "tables": ["schema_name", "table_name", "description"],
               "columns": ["table_name", "column_name", "description"], "keys": ["from_table", "target_table"]}


@given(table=st.sampled_from(sorted(_TS_COLUMNS)), data=st.data(),
       pattern=st.sampled_from(["%secret%", "%Hidden%", "%idden", "secretdb.%", "%", "%ecre%", "SECRETDB%", "%.%"]),
       user=st.sampled_from(["carol", "anonymous", "bob"]))
def test_tap_schema_filtered_by_name_never_shows_a_forbidden_table(world, server, table, data, pattern, user):
    """TAP_SCHEMA searched by name, any column, any spelling: only tables the user may read."""
    column = data.draw(st.sampled_from(_TS_COLUMNS[table]))
    fn = data.draw(st.sampled_from(["{c}", "LOWER({c})", "UPPER({c})"]))
    sql = f"SELECT * FROM TAP_SCHEMA.{table} WHERE {fn.format(c=column)} LIKE '{pattern}'"
    p = who(world, user)
    got, _ = server.app.state.tap.schema_for(p).query(parse(sql, "adql"), 10_000)
    for r in got.to_pylist():
        for v in r.values():
            if isinstance(v, str) and v.lower().startswith("secretdb."):
                assert p.allows(*v.split(".", 1)[:2]) and v.split(".")[1].lower() == "hidden", (sql, r)
            if isinstance(v, str) and v.lower() == "secretdb":
                assert user == "bob", (sql, r)


def test_qengine_czar_with_auth_in_cluster_yaml(world, tmp_path):
    """`qengine czar --config cluster.yaml` with an auth section: tokens on TAP, passwords on MySQL,
    the audit log under the state directory; `qengine user --config` manages the same store."""
    import socket
    import subprocess
    import sys

    import pymysql

    from qengine.cli import main

    qe = world["qe"]
    (tmp_path / "secret").write_text((qe.workers[0].workdir / "secret").read_text())
    shutil.copy(world["auth"].store.path, tmp_path / "users.json")
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(f"metadata_root: {qe.root}\nworkers: {[w.address for w in qe.workers]}\nsecret_file: secret\n"
                   "tap: {job_dir: jobs}\nauth: {users: users.json, anonymous: false, public: [testdb]}\n")
    assert main(["user", "add", "erin", "--class", "guest", "--config", str(cfg)]) == 0
    assert main(["user", "grant", "erin", "secretdb.Hidden", "--config", str(cfg)]) == 0
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    proc = subprocess.Popen([sys.executable, "-m", "qengine.cli", "czar", "--config", str(cfg), "--port",
                             str(ports[0]), "--mysql-port", str(ports[1])], stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{ports[0]}"
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=base, timeout=60) as c:
            while True:
                try:
                    if c.get("/tap/availability").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, "qengine czar did not serve"
                time.sleep(0.2)
            sql = "SELECT k, marker FROM secretdb.Hidden"
            assert sync(c, sql).status_code == 401
            r = sync(c, sql, bearer(world, "bob"))
            assert r.status_code == 200 and votable_rows(r.content) == rows(qe.query(sql))
        conn = pymysql.connect(host="127.0.0.1", port=ports[1], user="alice", password="alice-pw",
                               connect_timeout=30, read_timeout=60)
        try:
            assert "secretdb" in {r[0] for r in fetch(conn, "SHOW DATABASES")}
            n = qe.query("SELECT COUNT(*) AS n FROM secretdb.Object").column(0)[0].as_py()
            assert len(fetch(conn, "SELECT objectId FROM secretdb.Object")) == n
        finally:
            conn.close()
        with pytest.raises(pymysql.err.OperationalError):
            pymysql.connect(host="127.0.0.1", port=ports[1], user="anonymous", password="", connect_timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    recs = read_audit(tmp_path / "jobs-state" / "audit.jsonl")
    assert [(r["user"], r["frontend"], r["status"], r["rows"]) for r in recs] == [
        ("bob", "tap-sync", "COMPLETED", 3), ("alice", "mysql", "COMPLETED", n)]


def test_qengine_query_url_takes_the_token_from_the_environment(world, qe, server, capsys, monkeypatch):
    from qengine.cli import main

    sql = "SELECT k, marker FROM secretdb.Hidden ORDER BY k"
    monkeypatch.delenv("QENGINE_TOKEN", raising=False)
    assert main(["query", "--url", server.url, "--format", "csv", sql]) == 1
    assert "unknown table secretdb.Hidden" in capsys.readouterr().err
    monkeypatch.setenv("QENGINE_TOKEN", world["tokens"]["bob"])
    assert main(["query", "--url", server.url, "--format", "csv", sql]) == 0
    assert capsys.readouterr().out.count("TOPSECRET") == 3
