"""Partitioner: every row exactly once in its chunk, exact overlap, children with their director,
transactions (abort, crash, idempotent re-run, append), bad input reported by file/line/column."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings, strategies as st

from partitioner.ingest import IngestOptions, ingest
from partitioner.readers import InputSpec
from partitioner.verify import info, verify
from qengine.chunker import Chunker
from qengine.errors import IngestError
from qengine.store import MANIFEST, load_manifest, table_dir
from tests.helpers import DB, FILTER, OBJECT, PART, SOURCE, make_objects, make_sources

def _ingest(root, table, files, **opts):
    opts.setdefault("progress", False)
    spec = opts.pop("spec", None)
    return ingest(root, DB, table, files, partitioning=PART, spec=spec, options=IngestOptions(**opts))


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every visible byte of the store: manifests and the files they list."""
    out = {}
    for p in sorted(root.rglob(MANIFEST)):
        out[str(p)] = p.read_bytes()
        for f in load_manifest(p.parent).files:
            out[str(p.parent / f.path)] = (p.parent / f.path).read_bytes()
    return out


def _stored(root: Path, table: str, kind: str = "data") -> pa.Table:
    d = table_dir(root, DB, table)
    m = load_manifest(d)
    return pq.read_table([str(d / f.path) for f in m.files_of(kind)])


@pytest.fixture()
def objects_file(tmp_path) -> tuple[Path, pa.Table]:
    t = make_objects(3000)
    p = tmp_path / "objects.parquet"
    pq.write_table(t, p)
    return p, t


# ------------------------------------------------------------------------------ placement
def test_every_row_once_in_its_chunk_with_exact_overlap_and_index(tmp_path, objects_file):
    path, t = objects_file
    root = tmp_path / "store"
    res = _ingest(root, OBJECT, [path], rows_per_file=700, row_group_rows=100)
    assert res.rows == t.num_rows and res.txn == 1
    data = _stored(root, "Object")
    # every input row exactly once, unchanged
    assert sorted(data.column("objectId").to_pylist()) == sorted(t.column("objectId").to_pylist())
    joined = data.sort_by("objectId")
    src = t.sort_by("objectId")
    for c in ("ra", "decl", "mag", "name"):
        assert joined.column(c).equals(src.column(c))
    ch = Chunker(PART.num_stripes, PART.num_sub_stripes, PART.overlap)
    cid, scid = ch.locate(joined.column("ra").to_numpy(), joined.column("decl").to_numpy())
    assert np.array_equal(joined.column("chunkId").to_numpy(), cid)
    assert np.array_equal(joined.column("subChunkId").to_numpy(), scid)
    # overlap equals the chunker's computation over the input ...
    ov = _stored(root, "Object", "overlap")
    rows, oc, _ = ch.overlap_locations(src.column("ra").to_numpy(), src.column("decl").to_numpy())
    ids = src.column("objectId").to_numpy()
    assert sorted(zip(ov.column("objectId").to_pylist(), ov.column("chunkId").to_pylist())) == \
        sorted(zip(ids[rows].tolist(), oc.tolist()))
    # ... and holds every row within the overlap distance of another chunk (brute force)
    have = set(zip(ov.column("objectId").to_pylist(), ov.column("chunkId").to_pylist()))
    all_b = ch.chunk_bounds(ch.all_chunks())
    ra_s, dec_s = src.column("ra").to_numpy(), src.column("decl").to_numpy()
    home = dict(zip(ids.tolist(), cid_of(ch, ra_s, dec_s).tolist()))
    for k in range(0, ids.size, 23):
        for j in np.flatnonzero(_near_boxes(ra_s[k], dec_s[k], all_b, PART.overlap)):
            c = int(ch.all_chunks()[j])
            if c != home[int(ids[k])]:
                assert (int(ids[k]), c) in have
    # files: runs of chunks, sorted, sized as asked, never one file per chunk
    m = load_manifest(table_dir(root, DB, "Object"))
    assert len(m.files_of("data")) < len(m.chunk_ids())
    assert all(f.rows <= 700 or f.first_chunk == f.last_chunk for f in m.files_of("data"))
    assert verify(root).ok, verify(root).problems
    [i] = info(root)
    assert (i.rows, i.overlap_rows) == (t.num_rows, ov.num_rows)


def cid_of(ch, ra, dec):
    return ch.locate(ra, dec)[0]


def _near_boxes(ra, dec, b, r):
    """Chunks whose box lies within r of the point, from densely sampled box edges (one-sided)."""
    out = np.zeros(b.ra_min.size, dtype=bool)
    cand = np.flatnonzero((b.dec_min - r <= dec) & (dec <= b.dec_max + r))
    t = np.linspace(0, 1, 400)
    for j in cand:
        lon = b.ra_min[j] + t * (b.ra_max[j] - b.ra_min[j])
        lat = b.dec_min[j] + t * (b.dec_max[j] - b.dec_min[j])
        e_ra = np.concatenate([lon, lon, np.full(t.size, b.ra_min[j]), np.full(t.size, b.ra_max[j])])
        e_dec = np.concatenate([np.full(t.size, b.dec_min[j]), np.full(t.size, b.dec_max[j]), lat, lat])
        p1, p2, dl = np.radians(dec), np.radians(e_dec), np.radians(e_ra - ra)
        d = np.degrees(np.arctan2(
            np.hypot(np.cos(p2) * np.sin(dl), np.cos(p1) * np.sin(p2) - np.sin(p1) * np.cos(p2) * np.cos(dl)),
            np.sin(p1) * np.sin(p2) + np.cos(p1) * np.cos(p2) * np.cos(dl)))
        out[j] = d.min() < r * 0.98
    return out


def test_children_sit_with_their_director_and_orphans_are_refused(tmp_path, objects_file):
    path, objs = objects_file
    root = tmp_path / "store"
    _ingest(root, OBJECT, [path])
    src = make_sources(objs)
    sp = tmp_path / "sources.parquet"
    pq.write_table(src, sp)
    res = _ingest(root, SOURCE, [sp], rows_per_file=2000)
    assert res.rows == src.num_rows
    s = _stored(root, "Source")
    o = _stored(root, "Object")
    chunk_of = dict(zip(o.column("objectId").to_pylist(), o.column("chunkId").to_pylist()))
    assert all(chunk_of[a] == c for a, c in zip(s.column("objectId").to_pylist(), s.column("chunkId").to_pylist()))
    assert sorted(s.column("sourceId").to_pylist()) == sorted(src.column("sourceId").to_pylist())
    assert verify(root).ok
    # a source whose object does not exist: refused naming the row, or rejected with --skip-bad-rows
    bad = pa.table({"sourceId": [1, 2], "objectId": [int(objs.column("objectId")[0].as_py()), 999_999_999],
                    "ra": [1.0, 2.0], "decl": [0.0, 0.0], "flux": [1.0, 2.0]})
    bp = tmp_path / "bad_sources.parquet"
    pq.write_table(bad, bp)
    before = _snapshot(root)
    with pytest.raises(IngestError, match=r"bad_sources.parquet:2: column 'objectId'.*999999999.*no row"):
        _ingest(root, SOURCE, [bp])
    assert _snapshot(root) == before
    res = _ingest(root, SOURCE, [bp], skip_bad_rows=5)
    assert res.rows == 1 and res.rejected == 1
    assert "999999999" in Path(res.reject_file).read_text()


def test_child_before_director_is_a_clear_error(tmp_path):
    sp = tmp_path / "s.parquet"
    pq.write_table(make_sources(make_objects(10)), sp)
    with pytest.raises(IngestError, match="director table testdb.Object has not been ingested"):
        _ingest(tmp_path / "store", SOURCE, [sp])


def test_replicated_table(tmp_path):
    p = tmp_path / "filter.csv"
    p.write_text("filterId,name\n0,u\n1,g\n2,r\n")
    res = _ingest(tmp_path / "store", FILTER, [p])
    assert res.rows == 3
    t = _stored(tmp_path / "store", "Filter", "replicated")
    assert t.column("name").to_pylist() == ["u", "g", "r"]
    assert verify(tmp_path / "store").ok


@settings(max_examples=30, deadline=None)
@given(pts=st.lists(st.tuples(
    st.one_of(st.floats(0, 360, exclude_max=True), st.sampled_from([0.0, 360 - 1e-12, 20.0, 340.0])),
    st.one_of(st.floats(-90, 90), st.sampled_from([-90.0, 90.0, -80.0, 80.0, 0.0]))), min_size=1, max_size=60))
def test_hypothesis_positions_round_trip(tmp_path_factory, pts):
    root = tmp_path_factory.mktemp("h")
    ra, dec = map(np.array, zip(*pts))
    t = pa.table({"objectId": np.arange(len(pts), dtype=np.int64), "ra": ra, "decl": dec,
                  "mag": pa.array(np.zeros(len(pts), np.float32)), "name": [None] * len(pts)},
                 schema=OBJECT.arrow_schema())
    p = root / "in.parquet"
    pq.write_table(t, p)
    _ingest(root / "s", OBJECT, [p], rows_per_file=7)
    data = _stored(root / "s", "Object")
    assert sorted(data.column("objectId").to_pylist()) == list(range(len(pts)))
    assert verify(root / "s").ok


# ------------------------------------------------------------------------------ transactions
def test_reingest_is_idempotent_and_append_keeps_index_and_stats(tmp_path, objects_file):
    path, t = objects_file
    root = tmp_path / "store"
    _ingest(root, OBJECT, [path])
    snap = _snapshot(root)
    again = _ingest(root, OBJECT, [path])
    assert again.already_ingested and again.txn == 1
    assert _snapshot(root) == snap
    more = make_objects(500, seed=9, first_id=10**7)
    p2 = tmp_path / "night2.parquet"
    pq.write_table(more, p2)
    res = _ingest(root, OBJECT, [p2])
    assert res.txn == 2
    m = load_manifest(table_dir(root, DB, "Object"))
    assert m.rows == t.num_rows + more.num_rows
    assert sum(s.rows for s in m.chunks.values()) == m.rows
    assert verify(root).ok


def test_duplicates_across_files_and_index_batches_are_located(tmp_path):
    """Duplicates are found in the id-sorted index stream, also across its batch boundaries
    (rows_per_file=3 makes 3-row batches), and each copy is located by file and row/line."""
    import pyarrow.csv as pa_csv

    t = make_objects(40)
    a, b = tmp_path / "a.parquet", tmp_path / "b.csv"
    pq.write_table(t.slice(0, 20), a)
    pa_csv.write_csv(t.slice(10, 10), b)
    with pytest.raises(IngestError, match="duplicate objectId") as e:
        _ingest(tmp_path / "store", OBJECT, [a, b], rows_per_file=3)
    ids = t.column("objectId").to_pylist()
    msg = str(e.value)
    # the first five duplicate ids (of ten), each in both files: parquet rows, CSV lines
    for j in range(5):
        assert f"{ids[10 + j]} (2 times: {a} row {11 + j}, {b} line {2 + j})" in msg
    assert str(ids[15]) + " (" not in msg
    assert (e.value.file, e.value.line) == (str(b), 2)
    assert not (table_dir(tmp_path / "store", DB, "Object") / MANIFEST).exists()


def test_duplicate_ids_are_refused_within_and_across_transactions(tmp_path, objects_file):
    path, t = objects_file
    root = tmp_path / "store"
    dup = pa.concat_tables([t.slice(0, 5), t.slice(3, 1)])
    dp = tmp_path / "dup.parquet"
    pq.write_table(dup, dp)
    with pytest.raises(IngestError, match="duplicate objectId") as e:
        _ingest(root, OBJECT, [dp])
    # the duplicate is located: file and row of each copy
    dup_id = t.column("objectId")[3].as_py()
    assert f"{dup_id} (2 times: {dp} row 4, {dp} row 6)" in str(e.value)
    assert (e.value.file, e.value.line, e.value.column) == (str(dp), 6, "objectId")
    assert not (table_dir(root, DB, "Object") / MANIFEST).exists()
    _ingest(root, OBJECT, [path])
    snap = _snapshot(root)
    clash = t.slice(10, 3)
    cp = tmp_path / "clash.parquet"
    pq.write_table(clash.set_column(4, "name", pa.array(["x", "y", "z"])), cp)
    with pytest.raises(IngestError, match="already stored by an earlier transaction"):
        _ingest(root, OBJECT, [cp])
    assert _snapshot(root) == snap


def test_abort_leaves_the_store_unchanged(tmp_path, objects_file):
    path, _ = objects_file
    root = tmp_path / "store"
    res = _ingest(root, OBJECT, [path], abort=True)
    assert res.aborted and res.rows > 0
    assert _snapshot(root) == {}
    assert not (table_dir(root, DB, "Object") / "data").exists() or not any((table_dir(root, DB, "Object") / "data").iterdir())


_KILL_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from tests.helpers import OBJECT, PART, DB
    from partitioner.ingest import ingest, IngestOptions
    ingest({root!r}, DB, OBJECT, [{path!r}], partitioning=PART,
           options=IngestOptions(progress=False, rows_per_file=500))
""")


@pytest.mark.parametrize("how", ["crash-before-manifest", "sigkill"])
def test_killed_ingest_leaves_the_store_unchanged(tmp_path, objects_file, how):
    path, t = objects_file
    root = tmp_path / "store"
    first = tmp_path / "first.parquet"
    pq.write_table(t.slice(0, 1000), first)
    _ingest(root, OBJECT, [first])
    snap = _snapshot(root)
    big = make_objects(150_000, seed=5, first_id=10**8) if how == "sigkill" else t.slice(1000)
    bp = tmp_path / "big.parquet"
    pq.write_table(big, bp, row_group_size=5000)
    script = _KILL_SCRIPT.format(repo=str(Path(__file__).resolve().parents[1]), root=str(root), path=str(bp))
    env = dict(os.environ)
    if how == "crash-before-manifest":
        env["QENGINE_INGEST_CRASH_AT"] = "before-manifest"
        proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, timeout=120)
        assert proc.returncode != 0
        # the moved files are there, but invisible: the manifest was not replaced
        assert any(p.name.endswith("-2.parquet") for p in (table_dir(root, DB, "Object") / "data").iterdir())
    else:
        proc = subprocess.Popen([sys.executable, "-c", script], env=env)
        spill = table_dir(root, DB, "Object") / "_staging" / "txn-2" / "spill-data"
        deadline = time.monotonic() + 60
        # kill as soon as the ingest has spilled its first rows: mid-way through the work
        while time.monotonic() < deadline and proc.poll() is None and not (spill.exists() and any(spill.iterdir())):
            time.sleep(0.005)
        assert proc.poll() is None, "the ingest finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert _snapshot(root) == snap
    assert verify(root).ok
    # the next ingest cleans up and succeeds
    res = _ingest(root, OBJECT, [bp])
    assert res.txn == 2 and verify(root).ok


# ------------------------------------------------------------------------------ bad input
def test_bad_values_name_file_line_and_column(tmp_path):
    p = tmp_path / "objects.csv.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("objectId,ra,decl,mag,name\n1,10.0,5.0,20.5,a\n2,11.0,abc,20.5,b\n")
    root = tmp_path / "store"
    with pytest.raises(IngestError) as err:
        _ingest(root, OBJECT, [p])
    msg = str(err.value)
    assert "objects.csv.gz:3" in msg and "decl" in msg
    assert _snapshot(root) == {}


def test_invalid_positions_rejected_by_row(tmp_path):
    p = tmp_path / "pos.csv"
    p.write_text("objectId,ra,decl,mag,name\n1,10.0,5.0,1,a\n2,11.0,95.0,1,b\n3,nan,5.0,1,c\n4,12.0,-5.0,1,d\n")
    root = tmp_path / "store"
    with pytest.raises(IngestError, match=r"pos.csv:3: column 'ra'.*95"):
        _ingest(root, OBJECT, [p])
    res = _ingest(root, OBJECT, [p], skip_bad_rows=2)
    assert res.rows == 2 and res.rejected == 2
    rej = Path(res.reject_file).read_text().splitlines()
    assert [r.split("\t")[1] for r in rej[1:]] == ["3", "4"]
    assert sorted(_stored(root, "Object").column("objectId").to_pylist()) == [1, 4]
    with pytest.raises(IngestError, match="more than 1 bad rows"):
        _ingest(tmp_path / "store2", OBJECT, [p], skip_bad_rows=1)


def test_qserv_style_headerless_tsv_with_null(tmp_path):
    p = tmp_path / "Object.tsv"
    p.write_text("1\t10.0\t5.0\t\\N\tx\n2\t350.0\t-5.0\t19.5\t\\N\n")
    root = tmp_path / "store"
    _ingest(root, OBJECT, [p], spec=InputSpec(format="tsv", header=False))
    t = _stored(root, "Object").sort_by("objectId")
    assert t.column("mag").to_pylist() == [None, 19.5]
    assert t.column("name").to_pylist() == ["x", None]


def test_missing_input_file(tmp_path):
    with pytest.raises(IngestError, match="input file not found"):
        _ingest(tmp_path / "store", OBJECT, [tmp_path / "nope.csv"])


def test_cli_ingest_info_verify(tmp_path, objects_file):
    path, t = objects_file
    root = tmp_path / "store"
    yaml_def = tmp_path / "cat.yaml"
    yaml_def.write_text(textwrap.dedent("""
        name: test
        database: testdb
        partitioning: {num_stripes: 18, num_sub_stripes: 10, overlap: 0.5}
        tables:
          Object:
            role: director
            id_column: objectId
            ra_column: ra
            dec_column: decl
            columns:
              - {name: objectId, datatype: long, nullable: false}
              - {name: ra, datatype: double, unit: deg}
              - {name: decl, datatype: double, unit: deg}
              - {name: mag, datatype: float, unit: mag}
              - {name: name, datatype: string}
    """))
    q = [sys.executable, "-m", "qengine.cli"]
    r = subprocess.run(q + ["ingest", "--catalog", str(yaml_def), "--table", "Object", "--out", str(root),
                            "--no-progress", str(path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"{t.num_rows:,} rows" in r.stderr
    r = subprocess.run(q + ["catalog", "info", str(root)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "testdb.Object" in r.stdout and f"{t.num_rows:,}" in r.stdout
    r = subprocess.run(q + ["catalog", "verify", str(root)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # a corrupted store is caught
    m = json.loads((table_dir(root, DB, "Object") / MANIFEST).read_text())
    m["chunks"]["rows"][0] += 1
    (table_dir(root, DB, "Object") / MANIFEST).write_text(json.dumps(m))
    r = subprocess.run(q + ["catalog", "verify", str(root)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "BAD" in r.stdout


def test_generated_sdss_neighbors_ingest_as_a_match_table(tmp_path):
    """The SDSS generator's Neighbors (ordered pairs < 30", dense at the edge cases) ingests
    with its director: every pair stored with its objID row (once, or twice when the neighbour
    lies in another chunk), flags that `catalog verify` recomputes, nothing lost."""
    from catalogs.generate import generate
    from qengine.catalog import load_catalog

    cat = load_catalog("sdss")
    paths = generate(cat, 4000, tmp_path / "gen", seed=2, edge_cases=True, progress=False,
                     tables=["PhotoObjAll", "Neighbors"])
    root = tmp_path / "root"
    for name in ("PhotoObjAll", "Neighbors"):
        res = ingest(root, cat.database, cat.table(name), paths[name], partitioning=cat.partitioning,
                     options=IngestOptions(progress=False))
    src = pq.read_table(paths["Neighbors"])
    assert res.rows == src.num_rows > 0
    d = table_dir(root, cat.database, "Neighbors")
    got = pq.read_table([str(d / f.path) for f in load_manifest(d).files_of("data")])
    once = got.filter(pa.compute.not_equal(got.column("partitioningFlags"), 2))  # Qserv's duplicate filter
    key = lambda t: sorted(zip(t.column("objID").to_pylist(), t.column("neighborObjID").to_pylist()))
    assert key(once) == key(src)
    assert got.num_rows - once.num_rows == res.match_copies
    assert verify(root).ok


def test_qserv_match_config_names_the_flag_column(tmp_path):
    """sph-partition-matches configs: ``part.flags`` names the flag column (default
    partitioningFlags); a schema listing it (Qserv's) does not make it an input column."""
    from partitioner.qserv_config import load_qserv_table

    (tmp_path / "M.sql").write_text("CREATE TABLE M (a BIGINT NULL, b BIGINT NULL, ra1 DOUBLE, dec1 DOUBLE, "
                                    "ra2 DOUBLE, dec2 DOUBLE, qflags INT NOT NULL, partitioningFlags INT);")
    conf = {"part": {"pos1": "ra1, dec1", "pos2": "ra2, dec2", "num-stripes": 85, "num-sub-stripes": 12,
                     "default-overlap": 0.01667},
            "dirTable1": "A", "dirColName1": "a", "dirTable2": "B", "dirColName2": "b"}
    (tmp_path / "M.json").write_text(json.dumps(conf))
    t = load_qserv_table("db", "M", tmp_path / "M.sql", [tmp_path / "M.json"]).to_table()
    assert t.flag_name == "partitioningFlags" and not t.has_column("partitioningFlags") and t.has_column("qflags")
    conf["part"]["flags"] = "qflags"
    (tmp_path / "M.json").write_text(json.dumps(conf))
    t = load_qserv_table("db", "M", tmp_path / "M.sql", [tmp_path / "M.json"]).to_table()
    assert t.flag_name == "qflags" and not t.has_column("qflags") and t.has_column("partitioningFlags")
