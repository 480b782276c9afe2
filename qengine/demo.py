"""``qengine demo``: a sample LSST-DR-like catalogue, generated once and cached, ingested into a
chunked store, checked, and described.

Imported only by the CLI (it wires the generators, the chunker and the partitioner together);
later issues grow it into a local cluster answering example queries.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds

DEFAULT_CACHE = Path(os.environ.get("QENGINE_CACHE", Path.home() / ".cache" / "qengine"))


EXAMPLES = [
    ("cone search, 1 arcmin", "adql",
     "SELECT objectId, coord_ra, coord_dec, r_psfFlux FROM dp02.Object "
     "WHERE CONTAINS(POINT('ICRS', coord_ra, coord_dec), CIRCLE('ICRS', {ra}, {dec}, 1/60.)) = 1"),
    ("brightest objects in a 2-degree box (Qserv dialect)", "qserv",
     "SELECT objectId, scisql_nanojanskyToAbMag(r_psfFlux) AS r FROM dp02.Object "
     "WHERE qserv_areaspec_box(60, -40, 62, -38) AND r_psfFlux > 0 ORDER BY r_psfFlux DESC LIMIT 5"),
    ("object by id (director index)", "adql", "SELECT * FROM dp02.Object WHERE objectId = {oid}"),
    ("full-scan star counts per magnitude bin", "adql",
     "SELECT FLOOR(31.4 - 2.5 * LOG10(r_psfFlux)) AS rmag, COUNT(*) AS n FROM dp02.Object "
     "WHERE r_psfFlux > 0 AND refExtendedness = 0 GROUP BY FLOOR(31.4 - 2.5 * LOG10(r_psfFlux)) ORDER BY rmag"),
    ("light curve of one object (Source, by objectId)", "adql",
     "SELECT band, COUNT(*) AS n, AVG(psfFlux) AS mean_flux FROM dp02.Source WHERE objectId = {oid} GROUP BY band"),
    ("total rows (from table statistics)", "adql", "SELECT COUNT(*) FROM dp02.Source"),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objects", type=int, default=200_000, help="Objects in the sample (default 200000)")
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--port", type=int, default=8080,
                   help="czar HTTP port: /api/v1 and TAP at /tap (default 8080; 0: any free port)")
    p.add_argument("--mysql-port", type=int, default=4040,
                   help="MySQL-protocol port, like Qserv's (default 4040; 0: any free port; -1: none)")
    p.add_argument("--no-serve", action="store_true", help="run the examples and exit instead of serving")
    p.add_argument("--seed", type=int, default=1, help="generator seed (default 1)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"cache directory (default {DEFAULT_CACHE})")


def _sample(args: argparse.Namespace) -> Path:
    from catalogs.generate import generate

    out = args.cache / f"demo-lsst_dr-{args.objects}-{args.seed}"
    done = out / ".complete"
    if not done.exists():
        print(f"generating {args.objects:,} LSST-DR Objects with their Sources into {out} ...", file=sys.stderr)
        generate("lsst_dr", args.objects, out, seed=args.seed, progress=sys.stderr.isatty())
        done.write_text("ok\n")
    return out


def run(args: argparse.Namespace) -> int:
    from qengine.catalog import load_catalog
    from qengine.chunker import Chunker

    cat = load_catalog("lsst_dr")
    obj = cat.table("Object")
    p = cat.partitioning
    chunker = Chunker(p.num_stripes, p.num_sub_stripes, p.overlap)
    root = _sample(args)
    t0 = time.perf_counter()
    table = ds.dataset(root / obj.name, format="parquet").to_table(columns=[obj.id_column, obj.ra_column, obj.dec_column])
    ra = table[obj.ra_column].to_numpy()
    dec = table[obj.dec_column].to_numpy()
    cid, scid = chunker.locate(ra, dec)
    rows, ocid, _ = chunker.overlap_locations(ra, dec)
    dt = time.perf_counter() - t0
    chunks, counts = np.unique(cid, return_counts=True)
    print(f"catalogue {cat.name} (database {cat.database}), table {obj.name}: {ra.size:,} rows")
    print(f"chunking: {p.num_stripes} stripes x {p.num_sub_stripes} sub-stripes, overlap {p.overlap} deg "
          f"-> {chunker.all_chunks().size:,} chunks on the sky")
    print(f"occupied chunks: {chunks.size:,}; rows per occupied chunk: min {counts.min():,}, "
          f"median {int(np.median(counts)):,}, max {counts.max():,}")
    print(f"overlap copies: {rows.size:,} ({rows.size / max(ra.size, 1):.2%} of rows), "
          f"sub-chunks occupied: {np.unique(cid.astype(np.int64) * 100000 + scid).size:,}")
    top = np.argsort(counts)[::-1][:5]
    print("densest chunks: " + ", ".join(f"{chunks[i]} ({counts[i]:,})" for i in top))
    for child in cat.children_of(obj.name):
        path = root / child.name
        if path.exists():
            n = ds.dataset(path, format="parquet").count_rows()
            print(f"child table {child.name}: {n:,} rows ({n / max(ra.size, 1):.1f} per {obj.name})")
    print(f"located and overlapped {ra.size:,} rows in {dt:.2f} s")
    store = args.cache / f"store-lsst_dr-{args.objects}-{args.seed}"
    _ingest_sample(cat, root, store)
    first = {k: table[k][0].as_py() for k in (obj.id_column, obj.ra_column, obj.dec_column)}
    return _serve(store, args, first[obj.id_column], first[obj.ra_column], first[obj.dec_column])


def _serve(store: Path, args: argparse.Namespace, oid: int, ra: float, dec: float) -> int:
    """Start a czar with workers on loopback, run the examples with timings, then serve."""
    import signal
    import threading

    from czar.local import LocalCluster
    from czar.server import make_http_server

    with LocalCluster(store, workers=args.workers) as qe:
        print(f"\nlocal cluster: {args.workers} worker processes on "
              + ", ".join(w.address for w in qe.workers))
        for title, lang, sql in EXAMPLES:
            sql = sql.format(oid=oid, ra=ra, dec=dec)
            t0 = time.perf_counter()
            result = qe.query(sql, lang=lang)
            dt = time.perf_counter() - t0
            ex = qe.explain(sql, lang=lang)
            print(f"\n-- {title} [{lang}]: {result.num_rows} rows in {dt * 1000:.0f} ms, "
                  f"{ex.num_chunks} chunks\n{sql}")
            print(result.slice(0, 5).to_pandas().to_string(index=False))
        if args.no_serve:
            return 0
        job_dir = args.cache / "tap-jobs" / store.name
        state_dir = args.cache / "state" / store.name  # async jobs of TAP and MySQL: kept across runs
        try:
            server = make_http_server(qe.czar, "127.0.0.1", args.port, job_dir=job_dir, state_dir=state_dir)
        except OSError:
            server = make_http_server(qe.czar, "127.0.0.1", 0, job_dir=job_dir, state_dir=state_dir)
        server.start()
        mysql = _start_mysql(qe.czar, args.mysql_port, state_dir)
        url = server.url
        print(f"\nczar serving on {url}/ - in Python: qengine.connect('{url}').query(sql); "
              f"or: qengine query --url {url} \"SELECT ...\"")
        print(f"TAP service: {url}/tap (pyvo.dal.TAPService('{url}/tap'), TOPCAT, astroquery TapPlus)")
        if mysql is not None:
            print(f"MySQL protocol (Qserv dialect): mariadb -h 127.0.0.1 -P {mysql.port} -u qsmaster dp02")
        print("Ctrl-C to stop.", flush=True)
        stop = threading.Event()
        # SIGTERM too: the worker processes must be stopped, not orphaned
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        try:
            while not stop.wait(1.0):
                pass
        finally:
            if mysql is not None:
                mysql.stop()
            server.shutdown()
    return 0


def _start_mysql(czar, port: int, state_dir: Path):
    """The MySQL-protocol endpoint on ``port`` (another free port if taken; None if port < 0)."""
    if port < 0:
        return None
    from czar.mysql import start_mysql_server

    from qengine.errors import QEngineError

    try:
        return start_mysql_server(czar, "127.0.0.1", port, state_dir=state_dir)
    except (OSError, QEngineError):  # the port is taken (another demo, a real MySQL): any free one
        return start_mysql_server(czar, "127.0.0.1", 0, state_dir=state_dir)


def _ingest_sample(cat, sample: Path, store: Path) -> None:
    """Ingest every generated table (directors first) and verify the store."""
    from partitioner.ingest import IngestOptions, ingest
    from partitioner.verify import info, verify

    order = sorted(cat.tables.values(), key=lambda t: {"director": 0, "child": 1}.get(t.role, 2))
    for t in order:
        files = sorted((sample / t.name).glob("*.parquet"))
        if not files:
            continue
        res = ingest(store, cat.database, t, files, partitioning=cat.partitioning,
                     options=IngestOptions(progress=sys.stderr.isatty()))
        print(res.summary())
    rep = verify(store)
    print(f"store {store}: " + ("verified, every row in its chunk, overlap and index exact" if rep.ok
                                 else "PROBLEMS: " + "; ".join(rep.problems[:5])))
    for i in info(store):
        print(f"  {i.database}.{i.table:14} {i.role:10} {i.rows:>12,} rows {i.chunks:>7,} chunks "
              f"{i.files:>4} files {i.bytes / 2**20:8.1f} MiB")
