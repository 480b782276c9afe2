"""``qengine.LocalCluster``: real worker processes on loopback plus an in-process czar, for
tests and notebooks. Every worker serves the same store root (as on shared storage); the czar
gives each worker a disjoint run of chunks per query."""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

from czar.engine import Czar, Explain
from czar.metadata import Metadata
from qengine.errors import QEngineError
from qengine.workerclient import WorkerClient

__all__ = ["LocalCluster"]


class _WorkerProc:
    def __init__(self, root: Path, secret: str, workdir: Path, index: int, threads: int) -> None:
        self.workdir = workdir / f"worker-{index}"
        self.workdir.mkdir(parents=True)
        (self.workdir / "secret").write_text(secret)
        self.port_file = self.workdir / "port"
        self.cmd = [sys.executable, "-m", "qengine.cli", "worker", "--data", str(root), "--port", "0",
                    "--port-file", str(self.port_file), "--secret-file", str(self.workdir / "secret"),
                    "--threads", str(threads)]
        self.log = open(self.workdir / "worker.log", "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT)
        self.address = ""

    def wait_ready(self, deadline: float) -> None:
        while not self.port_file.exists():
            if self.proc.poll() is not None:
                raise QEngineError(f"worker exited with {self.proc.returncode}: "
                                   f"{(self.workdir / 'worker.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise QEngineError("worker did not start in time")
            time.sleep(0.02)
        self.address = f"127.0.0.1:{int(self.port_file.read_text())}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


class LocalCluster:
    """A czar with ``workers`` worker processes over the store at ``root``.

    >>> with LocalCluster("store", workers=2) as qe:
    ...     qe.query("SELECT TOP 5 * FROM dp02.Object")
    """

    def __init__(self, root: str | os.PathLike, workers: int = 2, *, threads: int = 1) -> None:
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise QEngineError(f"{root}: no such store directory")
        self._tmp = Path(tempfile.mkdtemp(prefix="qengine-cluster-"))
        secret = secrets.token_hex(16)
        self.workers: list[_WorkerProc] = []
        self.czar: Czar | None = None
        atexit.register(self.close)
        try:
            self.workers = [_WorkerProc(self.root, secret, self._tmp, i, threads) for i in range(workers)]
            deadline = time.monotonic() + 60
            for w in self.workers:
                w.wait_ready(deadline)
            clients = [WorkerClient(w.address, secret) for w in self.workers]
            self.czar = Czar(Metadata(self.root), clients)
        except BaseException:
            self.close()
            raise

    def query(self, sql: str, *, lang: str = "adql", database: str | None = None, **kwargs) -> pa.Table:
        return self.czar.query(sql, lang=lang, database=database, **kwargs)

    def explain(self, sql: str, *, lang: str = "adql", database: str | None = None) -> Explain:
        return self.czar.explain(sql, lang=lang, database=database)

    def refresh(self) -> None:
        self.czar.refresh()

    def close(self) -> None:
        if self.czar is not None:
            self.czar.close()
            self.czar = None
        for w in self.workers:
            w.stop()
        self.workers = []
        shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
