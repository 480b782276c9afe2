"""The MySQL wire-protocol front end end to end: a LocalCluster (real worker processes), the
endpoint on an ephemeral port, and real clients (pymysql and the `mariadb`/`mysql` command-line
client). Answers are compared with one DuckDB over the unpartitioned tables (values and MySQL
column types); errors by MySQL code and qengine's message; Qserv's async commands and KILL."""
from __future__ import annotations

import math
import re
import shutil
import subprocess
import threading
import time
from decimal import Decimal

import numpy as np
import pyarrow as pa
import pymysql
import pytest
from pymysql.constants import FIELD_TYPE

from czar.dialects import parse, to_duckdb
from czar.local import LocalCluster
from czar.mysql import start_mysql_server
from qengine.errors import QEngineError
from tests.helpers import DB, build_store, oracle_connection

CLI = shutil.which("mariadb") or shutil.which("mysql")
needs_cli = pytest.mark.skipif(CLI is None, reason="no mariadb/mysql client: apt-get install mariadb-client")

# A full scan that would run for minutes: an edit distance between ~800-character strings per row
# (no cross product). Tests only ever kill or cancel it.
SLOW = ("SELECT COUNT(*) AS n FROM Object "
        "WHERE LEVENSHTEIN(REPEAT(name, 100), REPEAT(CONCAT(name, 'x'), 100)) >= 0")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("mysql") / "root"
    tables = build_store(root, n_objects=30000, rows_per_file=20000)
    with LocalCluster(root, workers=2) as qe:
        yield qe, tables


@pytest.fixture(scope="module")
def server(cluster):
    qe, _ = cluster
    handle = start_mysql_server(qe.czar, "127.0.0.1", 0)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def oracle(cluster):
    _, tables = cluster
    con = oracle_connection(tables)
    con.execute(f"SET schema = '{DB}'")  # unqualified names, as after USE testdb
    return con


def connect(server, database: str | None = DB, **kw) -> pymysql.Connection:
    return pymysql.connect(host="127.0.0.1", port=server.port, user="astro", password="", database=database,
                           connect_timeout=30, **kw)


def run_cli(server, *args: str, sql: str | None = None, database: str | None = DB, timeout: float = 120):
    cmd = [CLI, "--host=127.0.0.1", f"--port={server.port}", "--user=astro", "--protocol=TCP", *args]
    if sql is not None:
        cmd += ["-e", sql]
    if database:
        cmd.append(database)
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------- comparisons
_ARROW_TO_MYSQL = [  # what a MySQL server reports for a column of each kind
    (pa.types.is_boolean, FIELD_TYPE.TINY), (pa.types.is_int8, FIELD_TYPE.TINY),
    (pa.types.is_int16, FIELD_TYPE.SHORT), (pa.types.is_int32, FIELD_TYPE.LONG),
    (pa.types.is_int64, FIELD_TYPE.LONGLONG), (pa.types.is_float32, FIELD_TYPE.FLOAT),
    (pa.types.is_float64, FIELD_TYPE.DOUBLE), (pa.types.is_decimal, FIELD_TYPE.NEWDECIMAL),
    (pa.types.is_string, FIELD_TYPE.VAR_STRING),
]


def mysql_type_of(t: pa.DataType) -> int:
    return next(code for test, code in _ARROW_TO_MYSQL if test(t))


def _value_equal(got, want, t: pa.DataType) -> bool:
    if want is None or got is None:
        return got is None and want is None
    if pa.types.is_float32(t):  # MySQL prints FLOAT as its shortest float32 text: exact in float32
        return np.float32(got) == np.float32(want)
    if pa.types.is_floating(t):
        return (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, rel=1e-9, abs=1e-12)
    if pa.types.is_decimal(t):
        return Decimal(got) == Decimal(want)
    if pa.types.is_boolean(t):
        return int(got) == int(want)
    return got == want


def assert_rows_equal(got_rows, want: pa.Table, ordered: bool) -> None:
    types = [f.type for f in want.schema]
    want_rows = [tuple(r.values()) for r in want.to_pylist()]
    got_rows = [tuple(r) for r in got_rows]
    assert len(got_rows) == len(want_rows)
    if not ordered:
        key = lambda r: tuple((x is None, repr(x) if isinstance(x, str) else float(x) if x is not None else 0) for x in r)
        got_rows, want_rows = sorted(got_rows, key=key), sorted(want_rows, key=key)
    for g, w in zip(got_rows, want_rows):
        assert all(_value_equal(a, b, t) for a, b, t in zip(g, w, types)), (g, w)


def check(server, oracle, sql: str, *, ordered: bool = False, oracle_sql: str | None = None) -> pa.Table:
    """Run ``sql`` through pymysql; compare column names, MySQL types and values with the oracle."""
    want = oracle.sql(oracle_sql or to_duckdb(parse(sql, "qserv"))).to_arrow_table()
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
        desc = cur.description
    assert [d[0] for d in desc] == want.column_names
    assert [d[1] for d in desc] == [mysql_type_of(f.type) for f in want.schema]
    assert_rows_equal(rows, want, ordered)
    return want


def mysql_error(server, sql: str, database: str | None = DB) -> tuple[int, str]:
    with connect(server, database) as conn, conn.cursor() as cur:
        with pytest.raises(pymysql.MySQLError) as err:
            cur.execute(sql)
        cur.execute("SELECT 1")  # the connection survives the error
        assert cur.fetchall() == ((1,),)
    return err.value.args[0], err.value.args[1]


# ---------------------------------------------------------------------------- pure parts
@pytest.mark.parametrize("sql,kind,arg,option", [
    ("SUBMIT SELECT * FROM Object", "submit", "SELECT * FROM Object", ""),
    ("submit\n  select 1;", "submit", "select 1", ""),
    ("SELECT * FROM qserv_result(42)", "result", "42", ""),
    ("select *  from QSERV_RESULT ( 42 ) ;", "result", "42", ""),
    ("CALL qserv_result_delete(7)", "delete", "7", ""),
    ("KILL 12", "kill", "12", ""),
    ("KILL QUERY 12", "kill", "12", "QUERY"),
    ("kill connection 12", "kill", "12", "CONNECTION"),
    ("CANCEL 3", "cancel", "3", ""),
    ("SHOW PROCESSLIST", "processlist", None, ""),
    ("/* from a tool */ SHOW FULL PROCESSLIST", "processlist", None, "FULL"),
    ("CALL other(1)", "call", "other(1)", ""),
])
def test_qserv_commands_are_recognised_by_their_text(sql, kind, arg, option):
    from czar.mysql.commands import classify

    cmd = classify(sql)
    assert (cmd.kind, cmd.arg, cmd.option) == (kind, arg, option)


@pytest.mark.parametrize("sql", ["SELECT * FROM Object", "SELECT * FROM qserv_result(x)", "KILL QUERY abc",
                                 "SUBMITTED", "SHOW PROCESSLIST extra", "-- SUBMIT SELECT 1"])
def test_other_statements_are_not_qserv_commands(sql):
    from czar.mysql.commands import classify

    assert classify(sql) is None


def test_arrow_values_as_mysql_text():
    from czar.mysql.types import encode_batch

    batch = pa.record_batch({
        "b": pa.array([True, False, None]), "i": pa.array([2**62 + 1, -5, None], pa.int64()),
        "f": pa.array([0.1, 1e20, float("nan")], pa.float32()), "d": pa.array([0.1, 1 / 3, None]),
        "s": pa.array(["é", "", None]), "n": pa.array([None, None, None], pa.null()),
        "dec": pa.array([Decimal("12.50"), None, Decimal("-1.00")], pa.decimal128(10, 2)),
    })
    assert encode_batch(batch) == [
        (b"1", b"4611686018427387905", b"0.1", b"0.1", "é".encode(), None, b"12.50"),
        (b"0", b"-5", b"1e+20", b"0.3333333333333333", b"", None, None),
        (None, None, b"nan", None, None, None, b"-1.00"),
    ]


def test_qengine_errors_map_to_mysql_codes():
    from czar.mysql.errors import to_mysql_error
    from qengine.errors import QueryError, QuerySyntaxError

    err = to_mysql_error(QuerySyntaxError("unexpected token", line=2, column=5, token="FORM"))
    assert err.code == 1064 and "line 2, column 5: unexpected token (near 'FORM')" in err.msg
    assert to_mysql_error(QueryError("unknown column 'x' in table a.b")).code == 1054
    assert to_mysql_error(QueryError("unknown table a.b")).code == 1146
    assert to_mysql_error(QueryError("query cancelled")).code == 1317
    assert to_mysql_error(QueryError("subqueries are not supported yet")).code == 1235
    assert to_mysql_error(QEngineError("anything else")).code == 1105


# ---------------------------------------------------------------------------- connecting
def test_endpoint_on_an_ephemeral_port_and_a_busy_port(server, cluster):
    assert server.port > 0
    with pytest.raises(QEngineError, match="cannot serve MySQL"):
        start_mysql_server(cluster[0].czar, "127.0.0.1", server.port)


def test_statements_clients_send_when_connecting(server):
    with connect(server, database=None) as conn, conn.cursor() as cur:
        cur.execute("SET NAMES utf8mb4")
        cur.execute("SET autocommit = 1")
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        cur.execute("SELECT @@version, @@version_comment, @@session.autocommit, @@max_allowed_packet")
        version, comment, autocommit, packet = cur.fetchone()
        assert version.startswith("8.0") and "qengine" in version and "Qserv" in comment
        assert autocommit == 1 and packet > 0
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == (None,)
        cur.execute("SELECT CONNECTION_ID()")
        assert cur.fetchone() == (conn.thread_id(),)
        cur.execute("SHOW DATABASES")
        assert (DB,) in cur.fetchall()
        with pytest.raises(pymysql.MySQLError) as err:
            cur.execute("SHOW TABLES")
        assert err.value.args[0] == 1046
        cur.execute(f"USE {DB}")
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == (DB,)
        cur.execute("SHOW TABLES")
        assert sorted(r[0] for r in cur.fetchall()) == ["Filter", "Object", "Source"]
        cur.execute("SHOW VARIABLES LIKE 'version%'")
        assert dict(cur.fetchall())["version"] == version
        cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'testdb' ORDER BY 1")
        assert [r[0] for r in cur.fetchall()] == ["Filter", "Object", "Source"]
        conn.select_db(DB)  # COM_INIT_DB
        conn.ping()


def test_show_tables_from_a_database_leaves_the_default_alone(server):
    with connect(server, database=None) as conn, conn.cursor() as cur:
        cur.execute(f"SHOW TABLES FROM {DB}")
        assert ("Object",) in cur.fetchall()
        cur.execute("SELECT DATABASE()")
        assert cur.fetchone() == (None,)
        with pytest.raises(pymysql.MySQLError) as err:
            cur.execute("SHOW TABLES FROM nosuchdb")
        assert err.value.args[0] == 1049
        cur.execute("SELECT 1 FROM DUAL")
        assert cur.fetchall() == ((1,),)


def test_describe_and_show_columns_follow_the_catalogue(server, cluster):
    qe, _ = cluster
    meta = qe.czar.metadata.resolve(DB, "Object")
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("DESCRIBE Object")
        rows = cur.fetchall()
        assert [r[0] for r in rows] == meta.column_names()
        assert {r[0]: r[1] for r in rows} == {"objectId": "bigint", "ra": "double", "decl": "double",
                                              "mag": "float", "name": "text"}
        assert {r[0]: r[3] for r in rows}["objectId"] == "PRI"
        assert {r[0]: r[2] for r in rows}["objectId"] == "NO"
        cur.execute(f"SHOW FULL COLUMNS FROM Object FROM {DB} LIKE 'r%'")
        rows = cur.fetchall()
        assert [d[0] for d in cur.description][-1] == "Comment"
        assert [(r[0], r[-1]) for r in rows] == [("ra", "[deg]")]
        cur.execute(f"DESC {DB}.Source")
        assert [r[0] for r in cur.fetchall()] == qe.czar.metadata.resolve(DB, "Source").column_names()


# ---------------------------------------------------------------------------- queries vs the oracle
QUERIES = [
    ("SELECT objectId, ra, decl, mag, name FROM Object", False, None),
    ("SELECT objectId, mag FROM Object WHERE mag > 24.5 ORDER BY mag DESC, objectId LIMIT 25", True, None),
    ("SELECT objectId, ra, decl FROM Object WHERE qserv_areaspec_box(350, -10, 10, 10) AND mag < 22", False,
     "SELECT objectId, ra, decl FROM Object WHERE scisql_s2PtInBox(ra, decl, 350, -10, 10, 10) = 1 AND mag < 22"),
    ("SELECT COUNT(*) AS n FROM Object WHERE qserv_areaspec_circle(0, 90, 5)", False,
     "SELECT COUNT(*) AS n FROM Object WHERE scisql_s2PtInCircle(ra, decl, 0, 90, 5) = 1"),
    (("SELECT objectId, scisql_angSep(ra, decl, 10, 10) AS d FROM Object "
     "WHERE scisql_s2PtInCircle(ra, decl, 10, 10, 3) = 1 ORDER BY d, objectId LIMIT 7"), True, None),
    (("SELECT COUNT(*) AS n, SUM(objectId) AS s, AVG(mag) AS a, MIN(ra) AS lo, MAX(decl) AS hi, STD(mag) AS sd "
     "FROM Object"), False, None),
    ("SELECT FLOOR(mag) AS m, COUNT(*) AS n, AVG(decl) AS d FROM Object GROUP BY FLOOR(mag)", False, None),
    ("SELECT DISTINCT FLOOR(decl / 10) AS band FROM Object", False, None),
    (("SELECT o.objectId, s.sourceId, s.flux FROM Object o JOIN Source s ON o.objectId = s.objectId "
     "WHERE o.objectId IN (5, 77, 12345, 40000)"), False, None),
    ("SELECT filterId, name FROM Filter ORDER BY filterId", True, None),
    ("SELECT objectId, name FROM Object WHERE name LIKE 'obj1234%' ORDER BY objectId LIMIT 5, 3", True, None),
    ("SELECT objectId, mag FROM Object WHERE objectId = -1", False, None),  # empty, typed
    (f"SELECT COUNT(*) AS n, SUM(flux) AS f FROM {DB}.Source WHERE flux > 1000", False, None),
]


@pytest.mark.parametrize("sql,ordered,oracle_sql", QUERIES)
def test_queries_equal_single_duckdb_with_mysql_types(server, oracle, sql, ordered, oracle_sql):
    check(server, oracle, sql, ordered=ordered, oracle_sql=oracle_sql)


def test_doubles_and_64_bit_ids_cross_the_wire_exactly(server, cluster):
    _, tables = cluster
    obj = tables["Object"]
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("SELECT objectId, ra, decl FROM Object ORDER BY objectId")
        rows = cur.fetchall()
    assert [r[0] for r in rows] == obj.column("objectId").to_pylist()
    assert [r[1] for r in rows] == obj.column("ra").to_pylist()  # shortest round-trip text: bit-exact
    assert [r[2] for r in rows] == obj.column("decl").to_pylist()


def test_large_ids_beyond_2_53(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("SELECT MAX(objectId) * 1000000000000 AS big FROM Object")
        (big,), = cur.fetchall()
    assert int(big) > 2**53 and int(big) % 1000000000000 == 0


def test_explain_shows_the_plan(server, cluster):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("EXPLAIN SELECT objectId FROM Object WHERE qserv_areaspec_circle(100, 20, 0.5)")
        text = "\n".join(r[0] for r in cur.fetchall())
    ex = cluster[0].explain("SELECT objectId FROM Object WHERE qserv_areaspec_circle(100, 20, 0.5)",
                            lang="qserv", database=DB)
    # small queries go to one worker, the workers taking turns: compare the plans, not who runs them
    anyone = lambda t: re.sub(r"127\.0\.0\.1:\d+", "<worker>", t)  # noqa: E731
    assert anyone(text) == anyone(str(ex)) and f"chunks visited: {ex.num_chunks}" in text


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("sql,code,pattern", [
    ("SELECT magg FROM Object", 1054, r"unknown column 'magg'.*did you mean mag"),
    ("SELECT * FROM Objekt", 1146, r"unknown table Objekt.*did you mean.*Object"),
    (f"SELECT * FROM {DB}.Nope", 1146, r"unknown table testdb\.Nope"),
    ("SELECT x.objectId FROM Object o", 1109, r"unknown table or alias 'x'"),
    ("SELECT objectId FROM Object o JOIN Source s ON o.objectId = s.objectId", 1052,
     r"ambiguous: qualify it as o\.objectId or s\.objectId"),
    ("SELECT objectId FORM Object", 1064, r"syntax.*line 1, column \d+"),
    ("SELECT objectId,\n  FROM Object", 1064, r"syntax.*line 2, column 3: unexpected token.*near .FROM"),
    ("SELEC objectId FROM Object", 1064, r"syntax"),
    ("DESCRIBE Nope", 1146, r"unknown table Nope"),
    ("INSERT INTO Object (objectId) VALUES (1)", 1235, r"INSERT is not supported"),
    ("SELECT objectId FROM Object WHERE qserv_areaspec_box(1, 2)", 1064, r"qserv_areaspec_box takes 4 arguments"),
    ("USE nosuchdb", 1049, r"Unknown database 'nosuchdb'"),
    ("CANCEL 987654", 1094, r"Unknown query id: 987654"),
    ("KILL QUERY 987654", 1094, r"Unknown thread id: 987654"),
    ("SELECT * FROM qserv_result(987654)", 1146, r"no result for query 987654"),
    ("CALL qserv_result_delete(987654)", 1146, r"no async query with id 987654"),
    ("CALL some_procedure(1)", 1235, r"some_procedure does not exist"),
])
def test_errors_have_mysql_codes_and_qengine_messages(server, sql, code, pattern):
    got_code, message = mysql_error(server, sql)
    assert got_code == code, message
    assert re.search(pattern, message, re.DOTALL), message


def test_syntax_error_position_points_at_the_token(server):
    code, message = mysql_error(server, "SELECT objectId\nFROM Object\nWHERE mag >> 3 AND AND 1")
    assert code == 1064
    m = re.search(r"line (\d+), column (\d+)", message)
    assert m and int(m.group(1)) == 3, message


# ---------------------------------------------------------------------------- async jobs
def test_submit_fetch_delete(server, oracle):
    sql = "SELECT objectId, mag FROM Object WHERE qserv_areaspec_circle(100, 20, 8)"
    want = oracle.sql("SELECT objectId, mag FROM Object WHERE scisql_s2PtInCircle(ra, decl, 100, 20, 8) = 1") \
        .to_arrow_table()
    assert want.num_rows > 0
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(f"SUBMIT {sql}")
        assert [d[0] for d in cur.description] == ["jobId", "resultLocation"]
        (job, location), = cur.fetchall()
        assert isinstance(job, int) and location == f"table:result_{job}"
        for _ in range(2):  # a result can be fetched until it is deleted
            cur.execute(f"SELECT * FROM qserv_result({job})")
            assert [d[0] for d in cur.description] == ["objectId", "mag"]
            assert [d[1] for d in cur.description] == [FIELD_TYPE.LONGLONG, FIELD_TYPE.FLOAT]
            assert_rows_equal(cur.fetchall(), want, ordered=False)
        cur.execute(f"SELECT ID, TYPE, STATUS, ROWS, QUERY FROM information_schema.queries WHERE ID = {job}")
        assert cur.fetchall() == ((job, "ASYNC", "COMPLETED", want.num_rows, sql),)
        cur.execute(f"CALL qserv_result_delete({job})")
        with pytest.raises(pymysql.MySQLError) as err:
            cur.execute(f"SELECT * FROM qserv_result({job})")
        assert err.value.args[0] == 1146
        with pytest.raises(pymysql.MySQLError):
            cur.execute(f"CALL qserv_result_delete({job})")


def test_submit_checks_the_query_before_accepting_it(server):
    code, message = mysql_error(server, "SUBMIT SELECT nosuch FROM Object")
    assert code == 1054 and "unknown column 'nosuch'" in message
    code, message = mysql_error(server, "SUBMIT SELECT * FROM Nope")
    assert code == 1146


def test_submit_then_fetch_from_another_connection_waits_for_the_result(server, oracle):
    sql = "SELECT FLOOR(mag) AS m, COUNT(*) AS n FROM Object GROUP BY FLOOR(mag)"
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(f"SUBMIT {sql}")
        job = cur.fetchone()[0]
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT * FROM qserv_result({job})")
        assert_rows_equal(cur.fetchall(), oracle.sql(to_duckdb(parse(sql, "qserv"))).to_arrow_table(), False)
        cur.execute(f"CALL qserv_result_delete({job})")


# ---------------------------------------------------------------------------- KILL / CANCEL
def _run_in_thread(server, sql: str):
    conn = connect(server)
    out: dict = {}

    def run():
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                out["rows"] = cur.fetchall()
        except pymysql.MySQLError as exc:
            out["error"] = exc.args

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return conn, th, out


def _wait_executing(cur, sql: str, deadline: float = 120) -> tuple:
    """The SHOW FULL PROCESSLIST row of ``sql`` once it runs."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        cur.execute("SHOW FULL PROCESSLIST")
        names = [d[0] for d in cur.description]
        for row in cur.fetchall():
            r = dict(zip(names, row))
            if r["Info"] == sql and r["State"] == "EXECUTING":
                return r
        time.sleep(0.05)
    raise AssertionError(f"{sql} never showed up in the process list")


def _final_status(cur, qid: int, deadline: float = 120) -> str:
    """The status of query ``qid`` once it is no longer executing (the workers have stopped)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        cur.execute(f"SELECT STATUS FROM information_schema.queries WHERE ID = {qid}")
        (status,), = cur.fetchall()
        if status != "EXECUTING":
            return status
        time.sleep(0.05)
    raise AssertionError(f"query {qid} still executing")


def test_kill_query_stops_a_running_full_scan(server):
    conn, th, out = _run_in_thread(server, SLOW)
    try:
        with connect(server) as admin, admin.cursor() as cur:
            row = _wait_executing(cur, SLOW)
            assert row["Command"] == "SYNC" and row["ConnectionId"] == conn.thread_id() and row["User"] == "astro"
            cur.execute("SELECT ID, INFO FROM information_schema.processlist")
            assert (row["Id"], SLOW) in cur.fetchall()
            cur.execute(f"KILL QUERY {conn.thread_id()}")
            th.join(300)
            assert not th.is_alive(), "the killed scan did not stop"
            assert out.get("error") == (1317, "Query execution was interrupted"), out
            cur.execute(f"SELECT STATUS FROM information_schema.queries WHERE ID = {row['Id']}")
            assert cur.fetchall() == (("ABORTED",),)
            cur.execute("SHOW PROCESSLIST")
            assert all(r[0] != row["Id"] for r in cur.fetchall())
        with conn.cursor() as cur:  # KILL QUERY leaves the connection usable
            cur.execute("SELECT COUNT(*) FROM Object WHERE mag < 16")
            assert cur.fetchone()[0] > 0
    finally:
        conn.close()


def test_processlist_tables_after_use_information_schema(server):
    with connect(server, database="information_schema") as conn, conn.cursor() as cur:
        cur.execute("SELECT COUNT(*) FROM processlist")
        assert cur.fetchone()[0] >= 0
        cur.execute("SELECT ID, STATUS FROM queries ORDER BY ID DESC LIMIT 1")
        assert len(cur.fetchall()) == 1


def test_kill_connection_ends_the_session_and_its_scan(server):
    conn, th, out = _run_in_thread(server, SLOW)
    try:
        with connect(server) as admin, admin.cursor() as cur:
            row = _wait_executing(cur, SLOW)
            cur.execute(f"KILL {row['ConnectionId']}")
            th.join(300)
            assert not th.is_alive()
            assert out["error"][0] in (1317, 3169, 2013), out  # interrupted, killed, or connection lost
            assert _final_status(cur, row["Id"]) == "ABORTED"
    finally:
        conn.close()


def test_max_execution_time_stops_a_scan(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("SET max_execution_time = 300")  # milliseconds, as in MySQL
        with pytest.raises(pymysql.MySQLError) as err:
            cur.execute(SLOW)
        assert err.value.args[0] == 3024 and "time limit" in err.value.args[1], err.value.args
        cur.execute("SET max_execution_time = 0")
        cur.execute("SELECT COUNT(*) AS n FROM Filter")
        assert cur.fetchall() == ((3,),)


def test_stopping_the_endpoint_stops_running_scans_and_connections(cluster):
    handle = start_mysql_server(cluster[0].czar, "127.0.0.1", 0)
    try:
        conn, th, out = _run_in_thread(handle, SLOW)
        with connect(handle) as admin, admin.cursor() as cur:
            row = _wait_executing(cur, SLOW)
    finally:
        handle.stop()
    th.join(300)
    assert not th.is_alive() and "error" in out, out
    conn.close()
    rec = handle.frontend.registry.get(row["Id"])
    assert rec.status == "ABORTED"
    with pytest.raises(pymysql.err.OperationalError):
        connect(handle)
    handle.stop()  # idempotent


@needs_cli
def test_cancel_a_submitted_scan_from_the_command_line_client(server):
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute(f"SUBMIT {SLOW}")
        job = cur.fetchone()[0]
        _wait_executing(cur, SLOW)
        r = run_cli(server, sql=f"CANCEL {job}")
        assert r.returncode == 0, r.stderr
        with pytest.raises(pymysql.MySQLError) as err:
            cur.execute(f"SELECT * FROM qserv_result({job})")
        assert err.value.args[0] == 1317 and "interrupted" in err.value.args[1]
        cur.execute(f"SELECT STATUS FROM information_schema.queries WHERE ID = {job}")
        assert cur.fetchall() == (("ABORTED",),)
        cur.execute(f"CALL qserv_result_delete({job})")
        r = run_cli(server, sql=f"CANCEL {job}")
        assert r.returncode == 1 and "ERROR 1094" in r.stderr


# ---------------------------------------------------------------------------- the command-line client
def _parse_batch(text: str, types: list[pa.DataType]) -> list[tuple]:
    rows = []
    for line in text.splitlines()[1:]:  # first line: column names
        cells = line.split("\t")
        row = []
        for cell, t in zip(cells, types):
            if cell == "NULL":
                row.append(None)
            elif pa.types.is_integer(t):
                row.append(int(cell))
            elif pa.types.is_floating(t):
                row.append(float(cell))
            elif pa.types.is_decimal(t):
                row.append(Decimal(cell))
            else:
                row.append(cell)
        rows.append(tuple(row))
    return rows


@needs_cli
@pytest.mark.parametrize("sql,ordered,oracle_sql", [QUERIES[1], QUERIES[2], QUERIES[5], QUERIES[8]])
def test_command_line_client_queries_equal_single_duckdb(server, oracle, sql, ordered, oracle_sql):
    want = oracle.sql(oracle_sql or to_duckdb(parse(sql, "qserv"))).to_arrow_table()
    r = run_cli(server, "--batch", "--raw", sql=sql)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split("\t") == want.column_names
    assert_rows_equal(_parse_batch(r.stdout, [f.type for f in want.schema]), want, ordered)


@needs_cli
def test_command_line_client_sees_mysql_column_types(server):
    r = run_cli(server, "--table", "--column-type-info",
                sql="SELECT objectId, ra, mag, name, SUM(objectId) AS s FROM Object GROUP BY objectId, ra, mag, name "
                    "ORDER BY objectId LIMIT 1")
    assert r.returncode == 0, r.stderr
    types = re.findall(r"^Type:\s+(\w+)", r.stdout, re.MULTILINE)
    assert types == ["LONGLONG", "DOUBLE", "FLOAT", "VAR_STRING", "NEWDECIMAL"], r.stdout
    assert "| objectId |" in r.stdout


@needs_cli
def test_command_line_client_errors_and_session_commands(server):
    r = run_cli(server, sql="SELECT magg FROM Object")
    assert r.returncode == 1
    assert re.search(r"ERROR 1054 \(42S22\) at line 1: unknown column 'magg'", r.stderr), r.stderr
    r = run_cli(server, sql="SELECT * FROM Nope")
    assert re.search(r"ERROR 1146 \(42S02\) at line 1: unknown table Nope", r.stderr), r.stderr
    r = run_cli(server, sql="SELECT objectId FORM Object")
    assert re.search(r"ERROR 1064 \(42000\) at line 1: You have an error in your SQL syntax.*line 1, column",
                     r.stderr), r.stderr
    r = run_cli(server, "--batch", sql=f"SHOW DATABASES; USE {DB}; SHOW TABLES; DESCRIBE Filter; SELECT DATABASE()",
                database=None)
    assert r.returncode == 0, r.stderr
    for expected in (DB, "Object", "filterId\tint", "name\ttext"):
        assert expected in r.stdout
    assert r.stdout.rstrip().endswith(DB)
    r = run_cli(server, "--batch", sql="SUBMIT SELECT COUNT(*) AS n FROM Filter")
    job = int(r.stdout.splitlines()[1].split("\t")[0])
    r = run_cli(server, "--batch", sql=f"SELECT * FROM qserv_result({job}); CALL qserv_result_delete({job})")
    assert r.returncode == 0 and r.stdout.splitlines() == ["n", "3"], (r.stdout, r.stderr)
