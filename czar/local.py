"""``qengine.LocalCluster``: real worker processes on loopback plus an in-process czar, for
tests and notebooks. By default every worker serves the same store root (as on shared storage)
and the czar gives each worker a disjoint run of chunks per query; with ``replicas=R`` the data
files are placed on the workers as ``qengine place`` does (R copies of every chunk, each worker a
directory of hard links, or copies across file systems), so that workers can be killed, paused and restarted to test failover."""
from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
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
    """One ``qengine worker`` process; ``kill``, ``pause``/``resume`` and ``restart`` inject faults."""

    def __init__(self, root: Path, secret: str, workdir: Path, index: int, threads: int) -> None:
        self.workdir = workdir / f"worker-{index}"
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "secret").write_text(secret)
        self.port_file = self.workdir / "port"
        self.data = root
        self.threads = threads
        self.log = open(self.workdir / "worker.log", "a")
        self.address = ""
        self._start(0)

    def _start(self, port: int) -> None:
        self.port_file.unlink(missing_ok=True)
        self.cmd = [sys.executable, "-m", "qengine.cli", "worker", "--data", str(self.data), "--port", str(port),
                    "--port-file", str(self.port_file), "--secret-file", str(self.workdir / "secret"),
                    "--threads", str(self.threads)]
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT)

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

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (kill -9): the process dies mid-call, as in a machine failure."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the process stalls (connections stay open, nothing answers)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)

    stop_signal = pause

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self, timeout: float = 60.0) -> None:
        """Start the worker again on the same port (kill it first if it still runs)."""
        port = int(self.address.rsplit(":", 1)[1]) if self.address else 0
        self.resume()
        self.kill()
        self._start(port)
        self.wait_ready(time.monotonic() + timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.resume()  # a paused process would hold SIGTERM until continued
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

    def __init__(self, root: str | os.PathLike, workers: int = 2, *, replicas: int | None = None,
                 threads: int = 1, health_interval: float = 1.0, health_timeout: float = 2.0) -> None:
        """``replicas``: place R copies of every chunk over per-worker directories (None: every
        worker serves the whole root). ``health_interval``/``health_timeout``: the czar's checks."""
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise QEngineError(f"{root}: no such store directory")
        self._tmp = Path(tempfile.mkdtemp(prefix="qengine-cluster-"))
        secret = secrets.token_hex(16)
        self.workers: list[_WorkerProc] = []
        self.czar: Czar | None = None
        self.placement = None
        atexit.register(self.close)
        try:
            roots = [self.root] * workers
            if replicas is not None:
                roots = self._place(workers, replicas)
            self.workers = [_WorkerProc(roots[i], secret, self._tmp, i, threads) for i in range(workers)]
            deadline = time.monotonic() + 60
            for w in self.workers:
                w.wait_ready(deadline)
            clients = [WorkerClient(w.address, secret) for w in self.workers]
            self.czar = Czar(Metadata(self.root), clients, health_interval=health_interval,
                             health_timeout=health_timeout)
        except BaseException:
            self.close()
            raise

    def _place(self, workers: int, replicas: int) -> list[Path]:
        """Per-worker directories of hard links, placed as ``qengine place`` does (symlinks
        would leave the workers' DuckDB sandbox, which checks the real path)."""
        from czar.place_cli import plan_for, write_worker_dirs

        dirs = {f"worker-{i}": self._tmp / f"worker-{i}" / "data" for i in range(workers)}
        self.placement, _ = plan_for(self.root, dirs, replicas)
        write_worker_dirs(self.root, self.placement, dirs, mode="hardlink")
        return list(dirs.values())

    def query(self, sql: str, *, lang: str = "adql", database: str | None = None, **kwargs) -> pa.Table:
        return self.czar.query(sql, lang=lang, database=database, **kwargs)

    def explain(self, sql: str, *, lang: str = "adql", database: str | None = None, user=None) -> Explain:
        return self.czar.explain(sql, lang=lang, database=database, user=user)

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
