"""`stilts taplint` (the IVOA validator) against the TAP service of `qengine demo`, a real
process on loopback with worker processes: no E (error) lines allowed. Its W (warning) lines are
printed (see them with `pytest -rA`)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time

import pytest

pytestmark = pytest.mark.skipif(shutil.which("stilts") is None,
                                reason="stilts is not installed (.ci/run installs the Debian package)")


@pytest.fixture(scope="module")
def demo_tap(tmp_path_factory):
    cache = tmp_path_factory.mktemp("demo-cache")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "qengine.cli", "demo", "--objects", "2000", "--port", "0", "--mysql-port", "0",
                             "--cache", str(cache)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    lines: list[str] = []
    found = threading.Event()
    url: list[str] = []

    def read() -> None:  # keep draining the pipe so the demo never blocks on output
        for line in proc.stdout:
            lines.append(line)
            m = re.match(r"TAP service: (\S+)", line)
            if m:
                url.append(m.group(1))
                found.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        deadline = time.monotonic() + 300
        while not found.wait(0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("qengine demo did not start serving:\n" + "".join(lines[-40:]))
        yield url[0]
    finally:
        proc.terminate()  # the demo stops its workers on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_taplint_reports_no_errors(demo_tap):
    r = subprocess.run(["stilts", "taplint", f"tapurl={demo_tap}", "maxrepeat=5"], check=False, capture_output=True,
                       text=True, timeout=600)
    out = r.stdout + r.stderr
    errors = [line for line in out.splitlines() if line.startswith("E-")]
    warnings = [line for line in out.splitlines() if line.startswith("W-")]
    totals = next((line for line in out.splitlines() if line.startswith("Totals:")), None)
    print(f"taplint {totals}\n" + "\n".join(warnings))
    assert totals is not None, out[-3000:]
    assert not errors, "\n".join(errors)
    # the stages that exercise the service all ran and succeeded
    for stage in ("Section TMV", "Section TMS", "Section CPV", "Section QGE", "Section QPO", "Section QAS",
                  "Section UWS", "Section MDQ", "Section UPL", "Section EXA"):
        assert stage in out, stage
    assert re.search(r"S-QAS-QNUM-1 Successful/submitted TAP queries: (\d+)/\1", out), out[-3000:]
