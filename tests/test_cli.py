"""The `qengine` command: every sub-command has --help, `chunk` and `catalogs` answer, and the
demo runs end to end (generate, ingest, verify, local cluster, example queries)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from qengine.cli import build_parser

QENGINE = [sys.executable, "-m", "qengine.cli"]
COMMANDS = sorted(build_parser("")._subparsers._group_actions[0].choices)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    r = subprocess.run(QENGINE + [command, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "usage: qengine " + command in r.stdout


def test_chunk_command_matches_the_chunker():
    from qengine.chunker import Chunker

    r = subprocess.run(QENGINE + ["chunk", "10.5,-3.25", "0,90"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    cid, scid = Chunker().locate([10.5, 0.0], [-3.25, 90.0])
    rows = [line.split("\t") for line in r.stdout.strip().splitlines()[1:]]
    assert [(int(x[2]), int(x[3])) for x in rows] == list(zip(cid.tolist(), scid.tolist()))
    bad = subprocess.run(QENGINE + ["chunk", "10.5,95"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "dec in [-90, 90]" in bad.stderr


def test_catalogs_command_lists_the_shipped_catalogues():
    r = subprocess.run(QENGINE + ["catalogs"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    for name in ("lsst_dr", "sdss", "ukidss", "gaia"):
        assert name in r.stdout


def test_demo_runs_end_to_end(tmp_path):
    r = subprocess.run(QENGINE + ["demo", "--objects", "3000", "--workers", "1", "--no-serve",
                                  "--cache", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "verified, every row in its chunk" in r.stdout
    assert "object by id (director index) [adql]: 1 rows" in r.stdout
    assert "light curve of one object (Source, by objectId) [adql]" in r.stdout
