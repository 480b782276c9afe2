"""Small catalogues for tests: a director/child/replicated trio dense at chunk edges and poles."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from qengine.catalog import Column, Partitioning, Table
from qengine.chunker import Chunker

PART = Partitioning(num_stripes=18, num_sub_stripes=10, overlap=0.5)
DB = "testdb"

OBJECT = Table(
    name="Object", role="director", id_column="objectId", ra_column="ra", dec_column="decl",
    columns=(
        Column("objectId", "long", nullable=False), Column("ra", "double", unit="deg", nullable=False),
        Column("decl", "double", unit="deg", nullable=False), Column("mag", "float", unit="mag"),
        Column("name", "string"),
    ),
)
SOURCE = Table(
    name="Source", role="child", id_column="sourceId", director="Object", foreign_key="objectId",
    ra_column="ra", dec_column="decl",
    columns=(
        Column("sourceId", "long", nullable=False), Column("objectId", "long", nullable=False),
        Column("ra", "double"), Column("decl", "double"), Column("flux", "double"),
    ),
)
FILTER = Table(name="Filter", role="replicated", columns=(Column("filterId", "int"), Column("name", "string")))


def edge_positions(ch: Chunker, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Uniform points plus points at the poles, RA 0/360 and on/near chunk edges and corners."""
    ra = list(rng.uniform(0, 360, n))
    dec = list(np.degrees(np.arcsin(rng.uniform(-1, 1, n))))
    ra += [0.0, 360.0 - 1e-12, 0.0, 180.0, 359.9999, 0.0001, 45.0, 90.0]
    dec += [90.0, -90.0, -90.0, 90.0, 0.0, 0.0, 89.99, -89.99]
    chunks = rng.choice(ch.all_chunks(), n // 2)
    b = ch.chunk_bounds(chunks)
    eps = rng.choice([0.0, 1e-9, -1e-9, 0.2, -0.2, 0.45, -0.45], chunks.size)
    corner = rng.integers(0, 2, chunks.size).astype(bool)
    ra += list(np.mod(np.where(corner, b.ra_min, b.ra_max) + eps, 360.0))
    dec += list(np.clip(np.where(corner, b.dec_min, b.dec_max) + eps[::-1], -90, 90))
    return np.array(ra), np.array(dec)


def make_objects(n: int, seed: int = 1, first_id: int = 1) -> pa.Table:
    rng = np.random.default_rng(seed)
    ra, dec = edge_positions(Chunker(PART.num_stripes, PART.num_sub_stripes, PART.overlap), rng, n)
    m = ra.size
    return pa.table({
        "objectId": pa.array(np.arange(first_id, first_id + m, dtype=np.int64)),
        "ra": ra, "decl": dec,
        "mag": pa.array(rng.uniform(15, 25, m).astype(np.float32)),
        "name": pa.array([f"obj{i}" for i in range(m)]),
    })


def make_sources(objects: pa.Table, seed: int = 2) -> pa.Table:
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 6, objects.num_rows)
    oid = np.repeat(objects.column("objectId").to_numpy(), per)
    ra = np.repeat(objects.column("ra").to_numpy(), per)
    dec = np.repeat(objects.column("decl").to_numpy(), per)
    return pa.table({
        "sourceId": pa.array(np.arange(oid.size, dtype=np.int64) + 10**9),
        "objectId": oid, "ra": ra, "decl": dec, "flux": rng.normal(1000, 50, oid.size),
    })


def build_store(root, n_objects: int = 2000, seed: int = 1, rows_per_file: int = 1500,
                first_id: int = 1) -> dict[str, pa.Table]:
    """Ingest Object, Source and Filter into ``root``; returns the unpartitioned input tables."""
    import pyarrow.parquet as pq

    from partitioner.ingest import IngestOptions, ingest

    root.mkdir(parents=True, exist_ok=True)
    objs = make_objects(n_objects, seed=seed, first_id=first_id)
    srcs = make_sources(objs, seed=seed + 1)
    filt = pa.table({"filterId": pa.array([0, 1, 2], pa.int32()), "name": ["u", "g", "r"]})
    opts = IngestOptions(progress=False, rows_per_file=rows_per_file, row_group_rows=500)
    for table, data in ((OBJECT, objs), (SOURCE, srcs), (FILTER, filt)):
        path = root.parent / f"{root.name}-{table.name}.parquet"
        pq.write_table(data, path)
        ingest(root, DB, table, [path], partitioning=PART, options=opts)
    return {"Object": objs, "Source": srcs, "Filter": filt}


class WorkerProcess:
    """A real `qengine worker` process on an ephemeral loopback port; always stopped."""

    def __init__(self, data, secret: str | None = "s3cret", extra: list[str] | None = None) -> None:
        import subprocess
        import sys
        import tempfile
        import time
        from pathlib import Path

        self.dir = Path(tempfile.mkdtemp(prefix="qe-worker-"))
        port_file = self.dir / "port"
        cmd = [sys.executable, "-m", "qengine.cli", "worker", "--data", str(data), "--port", "0",
               "--port-file", str(port_file)] + (extra or [])
        self.secret = secret
        if secret:
            (self.dir / "secret").write_text(secret)
            cmd += ["--secret-file", str(self.dir / "secret")]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited: {self.proc.stderr.read()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("worker did not start within 60 s")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        self.address = f"127.0.0.1:{self.port}"

    def client(self, secret: str | None = "__same__"):
        from qengine.workerclient import WorkerClient

        return WorkerClient(self.address, self.secret if secret == "__same__" else secret)

    def stop(self) -> None:
        import shutil

        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except Exception:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stderr:
            self.proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def oracle_connection(tables: dict):
    """The differential tests' oracle: one DuckDB over the unpartitioned tables, as ``testdb.T``
    views, with qengine's SQL macros."""
    import duckdb

    from qengine.sqlfuncs import register

    con = duckdb.connect()
    register(con)
    con.execute(f'CREATE SCHEMA "{DB}"')
    for name, t in tables.items():
        con.register(f"__{name}", t)
        con.execute(f'CREATE VIEW "{DB}"."{name}" AS SELECT * FROM "__{name}"')
    return con


def table_rows(t: pa.Table) -> list[tuple]:
    """The rows of ``t`` as tuples, NaN as None (DuckDB and the czar may differ there)."""
    def norm(v):
        return None if isinstance(v, float) and v != v else v
    return [tuple(norm(x) for x in r) for r in zip(*[c.to_pylist() for c in t.columns])]


def assert_same_rows(got: pa.Table, want: pa.Table, ordered: bool = False, context: object = None) -> None:
    """The differential check: same column names, same rows (in order when ``ordered``), floats
    equal to 1e-9 relative."""
    import pytest

    assert got.column_names == want.column_names
    g, w = table_rows(got), table_rows(want)
    if not ordered:
        g, w = sorted(g, key=repr), sorted(w, key=repr)
    assert len(g) == len(w), (len(g), len(w), context)
    for a, b in zip(g, w):
        for x, y in zip(a, b):
            if isinstance(x, float) and isinstance(y, float):
                assert x == pytest.approx(y, rel=1e-9, abs=1e-12)
            else:
                assert x == y
