"""qengine.alloc: glibc's thresholds are fixed once, and large buffers are then reused."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_message_buffers_are_reused_not_refaulted():
    # In a fresh process: three 4 MiB messages in flight, then freed, again and again (as a
    # worker's prefetch queue does). By default glibc trims the freed top of its heap and the
    # next messages fault the pages in again; with the settings they stay.
    code = r"""
import resource, sys
from qengine.alloc import tune_for_large_messages
if sys.argv[1] == "tuned":
    assert tune_for_large_messages() and tune_for_large_messages()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    bs = [bytes(4 << 20) for _ in range(3)]; del bs
f0 = faults()
for _ in range(20):
    bs = [bytes(4 << 20) for _ in range(3)]; del bs
print(faults() - f0)
"""
    out = {}
    for mode in ("default", "tuned"):
        env = {"PATH": "/usr/bin:/bin"}
        res = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, env=env,
                             timeout=60, check=True)
        out[mode] = int(res.stdout.strip())
    assert out["tuned"] < 100 and out["default"] > out["tuned"] + 300, out
