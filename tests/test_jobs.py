"""Async jobs that survive a czar restart (czar/jobs): the job store itself (atomic results,
expiry, restart recovery, ids across restarts), the MySQL registry over it, and end to end: a real
``qengine czar`` process with finished and running MySQL SUBMIT and TAP async jobs, stopped with
SIGKILL and SIGTERM and started again on the same state directory. Answers are compared with one
DuckDB over the unpartitioned tables."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pymysql
import pytest
from mysql_mimic.errors import MysqlError

from czar.jobs import INTERRUPTED, JobDB, JobRow
from czar.local import LocalCluster
from czar.mysql.jobs import QueryRegistry
from qengine.errors import QueryError
from tests.helpers import DB, build_store, oracle_connection
from tests.test_tap import create_job, result_table, same, wait_done


# ---------------------------------------------------------------------- the store
def test_rows_counters_and_ids_survive_reopening(tmp_path):
    db = JobDB(tmp_path / "state")
    db.put(JobRow("mysql", "1", "EXECUTING", query="SELECT 1", database=DB, owner="u", created=1.0,
                  extra={"host": "h"}))
    db.update("mysql", "1", phase="COMPLETED", rows=3, ended=2.0)
    ids = [db.next_id("q") for _ in range(3)]
    db.close()
    db = JobDB(tmp_path / "state")
    try:
        row = db.get("mysql", "1")
        assert (row.phase, row.rows, row.query, row.extra, row.ended) == ("COMPLETED", 3, "SELECT 1", {"host": "h"}, 2.0)
        assert ids == [1, 2, 3] and db.next_id("q") == 4  # never reused after a restart
        assert db.get("tap", "1") is None and db.rows("tap") == []  # front ends have their own name spaces
        with pytest.raises(TypeError):
            db.update("mysql", "1", no_such_field=1)
    finally:
        db.close()


def test_results_are_written_atomically(tmp_path, monkeypatch):
    db = JobDB(tmp_path)
    t = pa.table({"a": [1, 2, 3], "b": ["x", None, "z"]})
    db.put(JobRow("mysql", "7", "EXECUTING"))
    path = db.write_result("mysql", "7", t)
    db.update("mysql", "7", phase="COMPLETED", result_path=path)
    assert db.read_result(db.get("mysql", "7")).equals(t)

    def crash(table, where, **kw):  # the disk fills up half-way through a write
        Path(where).write_bytes(b"PAR1 half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(pq, "write_table", crash)
    db.put(JobRow("mysql", "8", "EXECUTING"))
    with pytest.raises(OSError):
        db.write_result("mysql", "8", t)
    monkeypatch.undo()
    files = sorted(p.name for p in (tmp_path / "results" / "mysql").iterdir())
    assert files == ["7.parquet"]  # no half-written result, under either name

    # a crash between the rename and the row update leaves a file no job points at; a crash
    # inside the write leaves a temporary file: both are removed at the next start
    (tmp_path / "results" / "mysql" / "8.parquet").write_bytes(b"orphan")
    (tmp_path / "results" / "mysql" / ".9.parquet.abcd.tmp").write_bytes(b"partial")
    db.close()
    db = JobDB(tmp_path)
    try:
        assert sorted(p.name for p in (tmp_path / "results" / "mysql").iterdir()) == ["7.parquet"]
        assert db.read_result(db.get("mysql", "7")).equals(t)
    finally:
        db.close()


def test_expired_jobs_are_reaped_with_their_results(tmp_path):
    db = JobDB(tmp_path)
    try:
        now = time.time()
        for job_id, expires in (("old", now - 1), ("new", now + 3600), ("never", None)):
            db.put(JobRow("mysql", job_id, "COMPLETED", expires=expires))
            db.update("mysql", job_id, result_path=db.write_result("mysql", job_id, pa.table({"x": [1]})))
        db.put(JobRow("tap", "old", "COMPLETED", expires=now - 1))  # another front end: not reaped here
        assert db.reap("mysql") == ["old"]
        assert db.get("mysql", "old") is None and not db.result_file("mysql", "old").exists()
        assert {r.job_id for r in db.rows("mysql")} == {"new", "never"}
        assert db.result_file("mysql", "new").exists() and db.get("tap", "old") is not None
        assert db.reap("mysql", now=now + 7200) == ["new"]  # expiry is a time, not a count
    finally:
        db.close()


def test_recover_marks_interrupted_jobs(tmp_path):
    db = JobDB(tmp_path)
    try:
        db.put(JobRow("mysql", "1", "EXECUTING", created=1.0))
        db.put(JobRow("mysql", "2", "COMPLETED", created=2.0))
        stale = db.recover("mysql", ["EXECUTING"], "FAILED")
        assert [r.job_id for r in stale] == ["1"]
        row = db.get("mysql", "1")
        assert row.phase == "FAILED" and row.error == INTERRUPTED and row.ended is not None
        assert db.get("mysql", "2").phase == "COMPLETED" and db.get("mysql", "2").error is None
    finally:
        db.close()


def test_cluster_config_state_dir_and_results_ttl(tmp_path):
    from czar.server import load_cluster_config
    from qengine.errors import ConfigError

    cfg = tmp_path / "cluster.yaml"
    cfg.write_text("metadata_root: .\nworkers: [a:1]\ntap: {job_dir: j}\n")
    got = load_cluster_config(cfg)
    assert got["state_dir"] == str((tmp_path / "j-state").resolve())  # next to the TAP job directory
    assert got.get("results_ttl") is None and got["tap"]["limits"].retention == 7 * 86400
    cfg.write_text("metadata_root: .\nworkers: [a:1]\nstate_dir: st\nresults_ttl: 600\n")
    got = load_cluster_config(cfg)
    assert got["state_dir"] == str((tmp_path / "st").resolve())
    assert got["results_ttl"] == 600.0 and got["tap"]["limits"].retention == 600  # TAP's default destruction
    cfg.write_text("metadata_root: .\nworkers: [a:1]\nresults_ttl: soon\n")
    with pytest.raises(ConfigError, match="results_ttl must be a positive number"):
        load_cluster_config(cfg)


# ---------------------------------------------------------------------- the MySQL registry over it
class FakeCzar:
    """Answers every query with a fixed table; a query with 'slow' in it runs until cancelled."""

    def __init__(self) -> None:
        self.table = pa.table({"objectId": pa.array([3, 1, 2], pa.int64()), "mag": [15.5, None, 20.25]})
        self.cancelled = threading.Event()

    def query(self, sql: str, **kw) -> pa.Table:
        if "slow" in sql:
            self.cancelled.wait(30)
            raise QueryError("query cancelled")
        return self.table

    def cancel(self, query_id: str) -> bool:
        self.cancelled.set()
        return True


def _submit(reg: QueryRegistry, sql: str):
    rec = reg.new(sql, database=DB, user="u", host="h", connection_id=None, kind="ASYNC")
    reg.submit(rec)
    return rec


def test_registry_keeps_results_and_fails_interrupted_jobs_across_a_restart(tmp_path):
    czar = FakeCzar()
    reg = QueryRegistry(czar, state_dir=tmp_path)
    done = _submit(reg, "SELECT objectId, mag FROM Object")
    assert done.done.wait(10) and done.status == "COMPLETED"
    running = _submit(reg, "SELECT slow FROM Object")
    time.sleep(0.2)
    assert running.status == "EXECUTING"
    reg.close()  # as on SIGTERM: the running job is cancelled, but not recorded as finished
    reg.close_store()

    reg = QueryRegistry(FakeCzar(), state_dir=tmp_path)
    try:
        assert reg.fetch_result(done.id).equals(czar.table)
        rec = reg.get(running.id)
        assert rec.status == "FAILED"
        with pytest.raises(MysqlError, match="interrupted by a czar restart"):
            reg.fetch_result(running.id)
        later = reg.new("SELECT 1", database=DB, user="u", host="h", connection_id=None)
        reg.run(later)
        assert later.id > running.id > done.id  # ids keep increasing across restarts
        reg.delete_result(done.id)
        assert not (tmp_path / "results" / "mysql" / f"{done.id}.parquet").exists()
    finally:
        reg.close()
        reg.close_store()


def test_registry_results_expire(tmp_path):
    reg = QueryRegistry(FakeCzar(), state_dir=tmp_path, result_ttl=0.3, reap_interval=0.1)
    try:
        rec = _submit(reg, "SELECT objectId FROM Object")
        assert rec.done.wait(10)
        assert reg.fetch_result(rec.id).num_rows == 3
        deadline = time.monotonic() + 10
        while reg.get(rec.id).result_path is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(MysqlError, match="deleted or has expired"):
            reg.fetch_result(rec.id)
        assert JobDB(tmp_path).get("mysql", str(rec.id)) is None
        assert not list((tmp_path / "results" / "mysql").glob("*.parquet"))
    finally:
        reg.close()
        reg.close_store()


# ---------------------------------------------------------------------- end to end: real czar processes
# A full scan that lasts a few seconds (an edit distance between ~600-character strings per
# row): long enough to be caught running, short enough to be re-run. The condition always holds.
SLOW = (f"SELECT COUNT(*) AS n, SUM(mag) AS m FROM {DB}.Object "
        "WHERE LEVENSHTEIN(REPEAT(name, 90), REPEAT(CONCAT(name, 'x'), 90)) >= 0")
FAST_MYSQL = f"SELECT objectId, mag, name FROM {DB}.Object WHERE mag < 16"
FAST_TAP = f"SELECT objectId, ra, decl FROM {DB}.Object WHERE mag > 24.5"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs") / "root"
    tables = build_store(root, n_objects=3000, rows_per_file=2000)
    with LocalCluster(root, workers=2) as qe:
        yield qe, tables


@pytest.fixture(scope="module")
def oracle(cluster):
    _, tables = cluster
    con = oracle_connection(tables)
    return con


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class CzarProcess:
    """`qengine czar --config cluster.yaml` on fresh ephemeral ports; always stopped and reaped."""

    def __init__(self, cfg: Path, log: Path) -> None:
        self.http, self.mysql = _free_port(), _free_port()
        self.url = f"http://127.0.0.1:{self.http}/tap"
        self._log = open(log, "ab")  # noqa: SIM115 - the process writes to it until stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "qengine.cli", "czar", "--config", str(cfg),
                                      "--port", str(self.http), "--mysql-port", str(self.mysql)],
                                     stdout=self._log, stderr=self._log)
        try:
            self._wait_ready()
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        with httpx.Client(timeout=10) as c:
            while True:
                assert self.proc.poll() is None, "qengine czar exited"
                assert time.monotonic() < deadline, "qengine czar did not serve"
                try:
                    if c.get(f"{self.url}/availability").status_code == 200:
                        self.connect().close()
                        return
                except (httpx.TransportError, pymysql.err.OperationalError):
                    pass
                time.sleep(0.1)

    def connect(self) -> pymysql.Connection:
        return pymysql.connect(host="127.0.0.1", port=self.mysql, user="astro", password="", database=DB,
                               connect_timeout=10, read_timeout=60)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._log.close()


def _mysql_rows(cur, sql: str) -> pa.Table:
    cur.execute(sql)
    names = [d[0] for d in cur.description]
    rows = cur.fetchall()
    assert rows, f"{sql}: no rows"  # every query checked here has some
    return pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in rows])


def _want(oracle, sql: str) -> pa.Table:
    return oracle.sql(sql).to_arrow_table()


def _submit_sql(cur, sql: str) -> int:
    cur.execute(f"SUBMIT {sql}")
    return int(cur.fetchone()[0])


def _status(cur, qid: int) -> tuple[str, str | None]:
    cur.execute(f"SELECT STATUS, ERROR FROM information_schema.queries WHERE ID = {qid}")
    row = cur.fetchone()
    return (row[0], row[1]) if row else ("(none)", None)


def _tap_phase(c: httpx.Client, job: str) -> str:
    return c.get(f"{job}/phase").text


def test_czar_restart_keeps_finished_jobs_and_reports_running_ones(cluster, oracle, tmp_path):
    qe, _ = cluster
    (tmp_path / "secret").write_text((qe.workers[0].workdir / "secret").read_text())
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text(f"metadata_root: {qe.root}\nworkers: {[w.address for w in qe.workers]}\nsecret_file: secret\n"
                   "tap: {job_dir: jobs}\nstate_dir: state\nresults_ttl: 3600\nreap_interval: 0.3\n")
    log = tmp_path / "czar.log"
    want_fast_mysql, want_fast_tap, want_slow = (_want(oracle, s) for s in (FAST_MYSQL, FAST_TAP, SLOW))
    czars: list[CzarProcess] = []
    try:
        # ---- first czar: finished and running jobs on both front ends, then SIGKILL
        a = CzarProcess(cfg, log)
        czars.append(a)
        with a.connect() as conn, conn.cursor() as cur, httpx.Client(timeout=60) as c:
            fast_id = _submit_sql(cur, FAST_MYSQL)
            same(_mysql_rows(cur, f"SELECT * FROM qserv_result({fast_id})"), want_fast_mysql)
            tap_done = create_job(c, a.url, QUERY=FAST_TAP, PHASE="RUN")
            assert wait_done(c, tap_done) == "COMPLETED"
            soon = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            tap_expiring = create_job(c, a.url, QUERY=FAST_TAP, PHASE="RUN", DESTRUCTION=soon)
            assert wait_done(c, tap_expiring) == "COMPLETED"
            slow_id = _submit_sql(cur, SLOW)
            tap_slow = create_job(c, a.url, QUERY=SLOW, LANG="QSERV", PHASE="RUN")
            deadline = time.monotonic() + 20
            while _tap_phase(c, tap_slow) != "EXECUTING":
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert _status(cur, slow_id)[0] == "EXECUTING"
        a.stop(signal.SIGKILL)  # no chance to record anything: the store must tell the next czar

        # ---- second czar on the same state: finished results served, running ones reported
        b = CzarProcess(cfg, log)
        czars.append(b)
        with b.connect() as conn, conn.cursor() as cur, httpx.Client(timeout=60) as c:
            same(_mysql_rows(cur, f"SELECT * FROM qserv_result({fast_id})"), want_fast_mysql)
            status, error = _status(cur, slow_id)
            assert status == "FAILED" and "interrupted by a czar restart" in error
            with pytest.raises(pymysql.err.MySQLError, match="interrupted by a czar restart"):
                cur.execute(f"SELECT * FROM qserv_result({slow_id})")
            def tap(job: str) -> str:  # the same job on the new port
                return job.replace(a.url, b.url)

            same(result_table(c.get(f"{tap(tap_done)}/results/result").content), want_fast_tap)
            assert wait_done(c, tap(tap_slow)) == "COMPLETED"  # TAP re-runs the interrupted job
            same(result_table(c.get(f"{tap(tap_slow)}/results/result").content), want_slow)
            deadline = time.monotonic() + 15  # past its destruction time: reaped with its result
            while c.get(tap(tap_expiring)).status_code != 404:
                assert time.monotonic() < deadline, "the expired TAP job was not reaped"
                time.sleep(0.2)
            assert c.get(f"{tap(tap_expiring)}/results/result").status_code == 404
            assert not (tmp_path / "jobs" / tap_expiring.rsplit("/", 1)[1]).exists()
            running_id = _submit_sql(cur, SLOW)
            assert running_id > slow_id  # ids keep increasing across restarts
            assert _status(cur, running_id)[0] == "EXECUTING"
        b.stop(signal.SIGTERM)  # a clean stop with a job running

        # ---- third czar, results_ttl lowered: the job SIGTERM stopped is reported, old results expire
        c_ = CzarProcess(cfg, log)
        czars.append(c_)
        with c_.connect() as conn, conn.cursor() as cur:
            same(_mysql_rows(cur, f"SELECT * FROM qserv_result({fast_id})"), want_fast_mysql)
            status, error = _status(cur, running_id)
            assert status == "FAILED" and "interrupted by a czar restart" in error, (status, error)
        c_.stop(signal.SIGTERM)
        cfg.write_text(cfg.read_text().replace("results_ttl: 3600", "results_ttl: 1"))
        time.sleep(1.0)
        d = CzarProcess(cfg, log)
        czars.append(d)
        with d.connect() as conn, conn.cursor() as cur, \
                pytest.raises(pymysql.err.MySQLError, match="no async query with this id"):
            cur.execute(f"SELECT * FROM qserv_result({fast_id})")
        assert not list((tmp_path / "state" / "results" / "mysql").glob("*.parquet"))
    except BaseException:
        sys.stderr.write(log.read_text(errors="replace")[-4000:] if log.exists() else "")
        raise
    finally:
        for p in czars:
            p.stop(signal.SIGKILL)
    assert os.path.isfile(tmp_path / "state" / "jobs.sqlite")
