"""Ingest throughput: ``qengine ingest`` vs hats-import (LSDB's importer) on the same Parquet input.

The input (an LSST-DR-like Object table and its Sources, from ``catalogs.generate``) is
generated once and cached. Each measured job runs in its own subprocess, so its wall time and
peak memory are its own: the parent polls the child's whole process tree (dask workers
included) every 0.2 s with psutil and records the peak of the summed RSS (and PSS), and takes
the exact ``ru_maxrss`` of the child from ``os.wait4``.

Run as ``qengine bench --suite ingest [--objects N] [--source-objects M] [--no-hats] ...``
(or ``python -m benchmarks.ingest_bench`` with the same options). Internal children:
``python -m benchmarks.ingest_bench qengine ARGS`` is exactly ``qengine ingest ARGS`` (without
importing the rest of the CLI), ``... hats ...`` one hats-import run on a dask LocalCluster.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CATALOG = "lsst_dr"
SEED = 42
GEN_BATCH = 200_000         # catalogs.generate's default batch size (row groups, child batches)
TARGET_RATIO = 2.0
TARGET_RSS = 2 << 30        # 2 GiB
POLL_SECONDS = 0.2


# ------------------------------------------------------------------------------ input cache
def cache_root() -> Path:
    env = os.environ.get("QENGINE_CACHE")
    return Path(env) / "bench" if env else Path.home() / ".cache" / "qengine" / "bench"


def _log(msg: str) -> None:
    print(f"ingest-bench: {msg}", file=sys.stderr, flush=True)


def _generate_into(final: Path, n: int, tables: list[str], progress: bool) -> dict:
    """Generate ``tables`` for ``n`` objects into ``final`` (atomically: a temp dir, then rename)."""
    from catalogs.generate import generate
    import pyarrow.parquet as pq

    marker = final / ".complete"
    if marker.exists():
        info = json.loads(marker.read_text())
        for name, t in info["tables"].items():  # the cache may have moved: list the files anew
            t["files"] = [str(p) for p in sorted((final / name).glob("part-*.parquet"))]
        return info
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    t0 = time.perf_counter()
    _log(f"generating {CATALOG} {', '.join(tables)} for {n:,} objects into {final} (once; cached)")
    paths = generate(CATALOG, n, tmp, seed=SEED, batch_size=GEN_BATCH, tables=tables, progress=progress)
    info = {"objects": n, "seed": SEED, "seconds": round(time.perf_counter() - t0, 1), "tables": {}}
    for name, files in paths.items():
        info["tables"][name] = {
            "files": [str(final / name / p.name) for p in files],
            "rows": sum(pq.read_metadata(p).num_rows for p in files),
            "bytes": sum(p.stat().st_size for p in files),
        }
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    (final / ".complete").write_text(json.dumps(info, indent=1))
    _log(f"generated in {info['seconds']:.0f} s: " + ", ".join(
        f"{k} {v['rows']:,} rows / {v['bytes'] / 2**30:.2f} GiB" for k, v in info["tables"].items()))
    return info


def prepare_input(n_objects: int, source_objects: int | None, progress: bool) -> dict:
    """Object files for ``n_objects``; Source files for the first ``source_objects`` of them.

    The generator is deterministic per batch of ``GEN_BATCH`` objects, so a run with fewer
    objects makes exactly the first objects of a larger one (same ids, same positions), and
    the Sources generated with it belong to Objects present in the big Object table.
    """
    base = cache_root() / f"ingest-{CATALOG}-s{SEED}"
    out = {"Object": _generate_into(base / f"objects-{n_objects}", n_objects, ["Object"], progress)
           ["tables"]["Object"]}
    if source_objects:
        src = _generate_into(base / f"sources-{source_objects}", source_objects, ["Source"], progress)
        out["Source"] = src["tables"]["Source"]
    return out


# ------------------------------------------------------------------------------ measuring
@dataclass
class Measured:
    label: str
    rc: int = 0
    wall: float = 0.0
    peak_rss_sum: int = 0       # peak over time of the summed RSS of the process tree
    peak_pss_sum: int = 0       # same with PSS (shared pages split between processes)
    peak_procs: int = 0         # most processes seen in the tree at once
    ru_maxrss: int = 0          # exact peak RSS of the largest single process (wait4), bytes
    load: tuple[float, float] = (0.0, 0.0)  # 1-min load average at start and end (shared machine)
    stderr_tail: str = ""
    extra: dict = field(default_factory=dict)


def measure(label: str, cmd: list[str], log_path: Path, env: dict | None = None) -> Measured:
    """Run ``cmd``; wall time, peak tree RSS/PSS (polled), exact ru_maxrss (wait4)."""
    import psutil

    m = Measured(label)
    _log(f"{label}: {' '.join(cmd[:6])}{' ...' if len(cmd) > 6 else ''}")
    load0 = os.getloadavg()[0]
    with open(log_path, "wb") as logf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
        stop = threading.Event()

        def poll() -> None:
            root = psutil.Process(proc.pid)
            while not stop.is_set():
                try:
                    procs = [root] + root.children(recursive=True)
                except psutil.Error:
                    return
                rss = pss = 0
                for p in procs:
                    try:
                        full = p.memory_full_info()
                        rss += full.rss
                        pss += getattr(full, "pss", full.rss)
                    except psutil.Error:
                        continue
                m.peak_rss_sum = max(m.peak_rss_sum, rss)
                m.peak_pss_sum = max(m.peak_pss_sum, pss)
                m.peak_procs = max(m.peak_procs, len(procs))
                stop.wait(POLL_SECONDS)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # interrupted: take the whole tree down (dask workers included)
            with contextlib.suppress(psutil.Error):
                tree = psutil.Process(proc.pid).children(recursive=True)
                for p in [psutil.Process(proc.pid)] + tree:
                    with contextlib.suppress(psutil.Error):
                        p.kill()
            raise
        finally:
            stop.set()
        m.wall = time.perf_counter() - t0
        proc.returncode = m.rc = os.waitstatus_to_exitcode(status)
        poller.join()
    m.load = (load0, os.getloadavg()[0])
    m.ru_maxrss = usage.ru_maxrss * 1024  # kilobytes on Linux
    m.peak_rss_sum = max(m.peak_rss_sum, m.ru_maxrss)
    text = log_path.read_text(errors="replace").strip().splitlines()
    m.stderr_tail = "\n".join(text[-15:])
    _log(f"{label}: rc={m.rc}, {m.wall:.1f} s, peak RSS {m.peak_rss_sum / 2**30:.2f} GiB "
         f"(tree sum), largest process {m.ru_maxrss / 2**30:.2f} GiB")
    if m.rc != 0:
        _log(f"{label} failed; last lines of {log_path}:\n{m.stderr_tail}")
    return m


def _qengine_cmd(root: Path, table: str, files: list[str], threads: int) -> list[str]:
    # `qengine ingest` without the rest of the CLI (its other subcommands import worker/czar code)
    return [sys.executable, "-m", "benchmarks.ingest_bench", "qengine", "--catalog", CATALOG,
            "--table", table, "--out", str(root), "--no-progress", "--threads", str(threads), *files]


def _hats_cmd(out: Path, tmp: Path, table: str, files: list[str], workers: int,
              catalog_type: str, pixel_threshold: int) -> list[str]:
    return [sys.executable, "-m", "benchmarks.ingest_bench", "hats", "--out", str(out), "--tmp", str(tmp),
            "--name", table, "--catalog-type", catalog_type, "--workers", str(workers),
            "--pixel-threshold", str(pixel_threshold), *files]


# ------------------------------------------------------------------------------ the children
def qengine_main(argv: list[str]) -> int:
    """Child process: exactly ``qengine ingest ARGS`` (partitioner.cli), logging as the CLI does."""
    import logging

    from partitioner import cli

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(prog="qengine ingest")
    cli.add_ingest_arguments(p)
    return cli.run_ingest(p.parse_args(argv))


def hats_main(argv: list[str]) -> int:
    """Child process: one hats-import catalogue import on a dask LocalCluster."""
    p = argparse.ArgumentParser(prog="ingest_bench hats")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tmp", type=Path, required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--catalog-type", default="object")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--pixel-threshold", type=int, default=1_000_000)
    p.add_argument("--ra", default="coord_ra")
    p.add_argument("--dec", default="coord_dec")
    p.add_argument("files", nargs="+")
    a = p.parse_args(argv)

    from dask.distributed import Client
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client

    args = ImportArguments(
        output_path=str(a.out), output_artifact_name=a.name, catalog_type=a.catalog_type,
        input_file_list=list(a.files), file_reader="parquet", ra_column=a.ra, dec_column=a.dec,
        pixel_threshold=a.pixel_threshold, tmp_dir=str(a.tmp), dask_tmp=str(a.tmp),
        resume=False, progress_bar=True, simple_progress_bar=True,   # stage times in the log
        tqdm_kwargs={"mininterval": 30.0, "file": sys.stdout},
    )
    with Client(n_workers=a.workers, threads_per_worker=1, processes=True,
                local_directory=str(a.tmp), dashboard_address=None) as client:
        pipeline_with_client(args, client)
    return 0


def _hats_rows(catalog: Path) -> int | None:
    props = catalog / "hats.properties"
    if not props.exists():
        return None
    for line in props.read_text().splitlines():
        k, _, v = line.partition("=")
        if k.strip() == "hats_nrows":
            return int(v.strip())
    return None


def _hats_stages(log_text: str) -> dict[str, float]:
    """Elapsed seconds per hats-import stage, from its tqdm bars ("Catalog: Reducing : 100%|..| [01:23<")."""
    import re

    out: dict[str, float] = {}
    for m in re.finditer(r"Catalog: (\w+)\s*: 100%\|[^\[]*\[(?:(\d+):)?(\d+):(\d+)<", log_text):
        out[m.group(1).lower()] = int(m.group(2) or 0) * 3600 + int(m.group(3)) * 60 + int(m.group(4))
    return out


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# ------------------------------------------------------------------------------ the suite
def _gib(b: int) -> str:
    return f"{b / 2**30:.2f}"


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("qengine", "hats-import", "hats", "lsdb", "dask", "pyarrow", "pandas"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            out.append(f"{pkg} (not installed)")
    return ", ".join(out)


def run(args: argparse.Namespace) -> tuple[str, str]:
    n = args.objects
    with_sources = getattr(args, "with_sources", True)
    src_objects = getattr(args, "source_objects", None) or n
    src_objects = min(src_objects, n)
    if src_objects < n and src_objects % GEN_BATCH and src_objects > GEN_BATCH:
        src_objects -= src_objects % GEN_BATCH  # whole generator batches: the very same Objects
    if not with_sources:
        src_objects = 0
    run_hats = getattr(args, "hats", True)
    threads = getattr(args, "ingest_threads", 2)
    workers = getattr(args, "hats_workers", 2)
    per_pixel = getattr(args, "rows_per_pixel", 1_000_000)

    import signal

    def _term(signum, frame):  # SIGTERM: unwind, so children are killed and the work dir removed
        raise KeyboardInterrupt(f"signal {signum}")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _term)
    data = prepare_input(n, src_objects, progress=sys.stderr.isatty())
    work_base = getattr(args, "work_dir", None) or cache_root()
    work_base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="ingest-run-", dir=work_base))
    _log(f"stores and temporary files under {work}")
    results: dict[str, Measured] = {}
    try:
        root = work / "qengine"
        env = dict(os.environ)
        tables = ["Object"] + (["Source"] if "Source" in data else [])
        for table in tables:
            files, rows = data[table]["files"], data[table]["rows"]
            # side by side: qengine, then hats-import, on the same files
            q = measure(f"qengine {table}", _qengine_cmd(root, table, files, threads),
                        work / f"qengine-{table}.log", env)
            q.extra["rows"] = rows
            if q.rc == 0:
                from qengine.store import load_manifest, table_dir

                man = load_manifest(table_dir(root, "dp02", table))
                q.extra["stored"] = man.rows
                q.extra["overlap"] = sum(f.rows for f in man.files_of("overlap"))
                q.extra["files"] = len(man.files)
                q.extra["bytes"] = sum(f.bytes for f in man.files)
                q.extra["chunks"] = len(man.chunk_ids())
            results[f"qengine {table}"] = q
            if run_hats:
                hout, htmp = work / "hats", work / f"hats-tmp-{table}"
                htmp.mkdir(parents=True, exist_ok=True)
                h = measure(f"hats-import {table}",
                            _hats_cmd(hout, htmp, table, files, workers,
                                      "object" if table == "Object" else "source", per_pixel),
                            work / f"hats-{table}.log", env)
                h.extra["rows"] = rows
                h.extra["stages"] = _hats_stages((work / f"hats-{table}.log").read_text(errors="replace"))
                if h.rc == 0:
                    h.extra["stored"] = _hats_rows(hout / table)
                    h.extra["bytes"] = _dir_bytes(hout / table)
                    h.extra["files"] = sum(1 for _ in (hout / table).rglob("Npix=*"))
                shutil.rmtree(htmp, ignore_errors=True)
                results[f"hats-import {table}"] = h
        verified = None
        if getattr(args, "verify", None) or (getattr(args, "verify", None) is None and n <= 1_000_000):
            from partitioner.verify import verify

            if all(results[f"qengine {t}"].rc == 0 for t in tables):
                t0 = time.perf_counter()
                rep = verify(root)
                verified = (rep.ok, rep.problems[:5], time.perf_counter() - t0)
    finally:
        if getattr(args, "keep_output", False):
            _log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    # ---------------------------------------------------------------- the report
    lines = ["| run | input rows | wall s | rows/s | peak RSS GiB (tree sum) | largest process GiB | "
             "processes | qengine/hats rows/s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    verdicts = []
    for table in ("Object", "Source"):
        q, h = results.get(f"qengine {table}"), results.get(f"hats-import {table}")
        if q is None:
            continue
        rows = q.extra["rows"]
        rate_q = rows / q.wall if q.rc == 0 else 0.0
        rate_h = rows / h.wall if h is not None and h.rc == 0 else 0.0
        ratio = f"**{rate_q / rate_h:.2f}x**" if rate_q and rate_h else "-"
        for m, rate, r in ((q, rate_q, ratio), (h, rate_h, "1.00x" if rate_h else "-")):
            if m is None:
                continue
            status = "" if m.rc == 0 else f" (FAILED rc={m.rc})"
            lines.append(f"| {m.label}{status} | {rows:,} | {m.wall:,.1f} | {rate:,.0f} | {_gib(m.peak_rss_sum)} | "
                         f"{_gib(m.ru_maxrss)} | {m.peak_procs} | {r} |")
        if q.rc == 0:
            ok_rss = q.peak_rss_sum < TARGET_RSS
            ok_rate = bool(rate_h) and rate_q / rate_h >= TARGET_RATIO
            verdicts.append(
                f"- {table}: rows/s "
                + ((f"{'**met**' if ok_rate else '**not met**'} ({rate_q / rate_h:.2f}x)") if rate_h
                   else "not measured (no hats-import run to compare)")
                + f"; peak RSS {'**met**' if ok_rss else '**not met**'} ({_gib(q.peak_rss_sum)} GiB)")
    body = ["\n".join(lines), ""]
    body.append(f"Target: qengine rows/s >= {TARGET_RATIO:.0f}x hats-import's, with peak RSS < 2 GiB.")
    body += verdicts
    body.append("")

    obj = data["Object"]
    size = [f"Input ({CATALOG}, seed {SEED}, zstd Parquet from `catalogs.generate`): "
            f"Object {obj['rows']:,} rows, {len(obj['files'])} files, {_gib(obj['bytes'])} GiB"]
    if "Source" in data:
        s = data["Source"]
        size.append(f"; Source {s['rows']:,} rows, {len(s['files'])} files, {_gib(s['bytes'])} GiB")
        if src_objects < n:
            size.append(f" — **Sources only for the first {src_objects:,} of the {n:,} Objects** "
                        f"(`--source-objects`; all {n:,} would be ~{s['rows'] * n / src_objects / 1e6:,.0f}M "
                        f"Source rows, too much disk for this machine alongside the intermediates)")
    body.append("".join(size) + ".")
    out_lines = []
    for key, m in results.items():
        if m.rc != 0 or "bytes" not in m.extra:
            continue
        stored = m.extra.get("stored")
        s = f"{key}: {stored:,} rows stored" if stored is not None else f"{key}: rows stored unknown"
        if stored is not None and stored != m.extra["rows"]:
            s += f" (**input had {m.extra['rows']:,}**)"
        if "overlap" in m.extra and m.extra["overlap"]:
            s += f" + {m.extra['overlap']:,} overlap copies"
        s += f", {m.extra['files']} files, {_gib(m.extra['bytes'])} GiB"
        if "chunks" in m.extra:
            s += f", {m.extra['chunks']:,} chunks"
        out_lines.append(s)
    body.append("Output: " + "; ".join(out_lines) + ".")
    if verified is not None:
        ok, problems, secs = verified
        body.append(f"`partitioner.verify.verify` on the qengine store: "
                    f"{'all checks passed' if ok else 'PROBLEMS: ' + '; '.join(problems)} ({secs:.0f} s).")
    body.append("")
    body.append(
        "What each side does. qengine (`qengine ingest`, one process, `--threads "
        f"{threads}`): Qserv chunk + sub-chunk of every row (340 stripes x 3 sub-stripes), 1' overlap "
        "copies, the director index (id -> chunk) with a duplicate-id check, per-stripe spill, sorted "
        "Parquet files of ~1M rows, manifest commit; Source rows are placed in their Object's chunk "
        f"through that index. hats-import (`pipeline_with_client`, dask LocalCluster {workers} worker "
        "processes x 1 thread): map (HEALPix order-10 histogram), binning, split, reduce (sort by "
        f"`_healpix_29`), finishing (metadata, skymap); `pixel_threshold={per_pixel:,}`, "
        "`catalog_type` object/source; it computes no margin (overlap) cache and no id index — those "
        "are separate hats-import pipelines — so it does less work than qengine here.")
    stages = [f"{k}: " + ", ".join(f"{st} {sec:.0f} s" for st, sec in m.extra["stages"].items())
              for k, m in results.items() if m.extra.get("stages")]
    if stages:
        body.append("hats-import stage times (from its progress bars): " + "; ".join(stages) + ".")
    body.append("")
    body.append(
        "Measured: wall time of the whole subprocess (interpreter start, imports and dask cluster "
        "start-up included), rows/s = input rows / wall s; peak RSS = the largest sum of RSS over the "
        f"job's process tree, sampled every {POLL_SECONDS} s with psutil (for hats-import: the client "
        "process plus its dask worker processes), never less than the exact `ru_maxrss` of the largest "
        "process from `os.wait4`, shown in its own column. Peak tree PSS (shared pages split): "
        + ", ".join(f"{k} {_gib(m.peak_pss_sum)} GiB" for k, m in results.items()) + ". "
        f"The machine ({os.cpu_count()} cores) is shared: 1-minute load average at the start/end of each "
        "job: " + ", ".join(f"{k} {m.load[0]:.1f}/{m.load[1]:.1f}" for k, m in results.items()) + ".")
    body.append("")
    body.append(f"Versions: {_versions()}.")
    return "Ingest throughput", "\n".join(body) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "hats":
        return hats_main(argv[1:])
    if argv and argv[0] == "qengine":
        return qengine_main(argv[1:])
    from benchmarks import runner

    p = argparse.ArgumentParser(prog="python -m benchmarks.ingest_bench")
    runner.add_arguments(p)
    a = p.parse_args(argv)
    a.suite = ["ingest"]
    return runner.run(a)


if __name__ == "__main__":
    sys.exit(main())
