"""The science query suite as a benchmark: every query through qengine and through one DuckDB
over the same (unpartitioned) data, side by side in one run, plus interactive latency while a
full scan runs.

Run as ``qengine bench --scale small|medium|large [--repeat N] [--cluster URL]`` (or
``python -m benchmarks.suite_bench ...``; ``qengine bench --suite queries`` runs the small scale). Data are generated and ingested once per scale
(cached under the bench cache directory). Results: a section of ``benchmarks/RESULTS.md`` and a
plot ``benchmarks/suite-<scale>.png``.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.suite import (
    SCALES,
    build,
    compare,
    footer_rows,
    load_queries,
    oracle_connection,
    run_oracle,
)

RESULTS_DIR = Path(__file__).resolve().parent
CONE_ID, SCAN_ID = "Q03", "Q13"


def cache_root() -> Path:
    env = os.environ.get("QENGINE_CACHE")
    return Path(env) / "bench" if env else Path.home() / ".cache" / "qengine" / "bench"


def add_run_options(g) -> None:
    """Options of a suite run shared by this module's command and `qengine bench` (``g``: a
    parser or an argument group)."""
    g.add_argument("--clients", type=int, default=4, help="concurrent cone-search clients in the load test")
    g.add_argument("--load-seconds", type=float, default=20.0, help="length of the load test (default 20 s)")
    g.add_argument("--budget", type=float, default=60.0,
                   help="timed seconds per suite query and engine after which repeats stop (at least one run; "
                        "default 60)")
    g.add_argument("--no-astropy", dest="astropy", action="store_false",
                   help="skip astropy side by side for the near-neighbour and crossmatch queries")
    g.add_argument("--only", help="comma-separated query ids to run; their rows replace those of the last "
                                   "saved run of the scale, the others are kept (e.g. to finish a stopped run)")
    g.add_argument("--not-run", action="append", default=[], metavar="ID=REASON",
                   help="record why a query has no row (with --render or --only)")
    g.add_argument("--render", action="store_true",
                   help="rewrite the table from the last run's saved raw results (no queries run)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", choices=sorted(SCALES), default="small", help="data scale (default small)")
    p.add_argument("--repeat", type=int, default=5, help="runs of every query per engine (default 5)")
    p.add_argument("--cluster", help="a running czar (http://host:port) instead of a LocalCluster "
                                     "(it must serve the suite's data; upload queries are skipped)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    add_run_options(p)
    p.add_argument("--results", type=Path, default=RESULTS_DIR / "RESULTS.md")
    p.add_argument("--no-write", action="store_true", help="print the results only")


def _log(msg: str) -> None:
    print(f"suite-bench: {msg}", file=sys.stderr, flush=True)


def _time(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _pct(v: list[float], p: float) -> float:
    return float(np.percentile(v, p)) if v else float("nan")


def run_suite(qe, con, ds, repeat: int, remote: bool, budget: float = 60.0, astropy: bool = True,
              save=None, only: set[str] | None = None) -> list[dict]:
    """Every query: checked once against the oracle, then timed ``repeat`` times per engine
    (interleaved, fewer when the timed runs of a query pass ``budget`` seconds per engine)."""
    from benchmarks.suite import scanned_bytes

    contenders = astropy_contenders(ds, con) if astropy else {}
    rows = []
    for q in load_queries():
        if only and q.id not in only:
            continue
        sql, _ = q.render(ds.params)
        ups = {n: ds.uploads[n] for n in q.uploads} or None
        rec = {"id": q.id, "qe": [], "duck": [], "astropy": [], "rows": None, "chunks": "-", "bytes": None,
               "check": "", "astropy_check": "", "error": ""}
        if ups and remote:
            rec["error"] = "skipped: uploads need the Python API"
            rows.append(rec)
            continue
        run_qe = (lambda: qe.query(sql, lang=q.lang, uploads=ups)) if ups else (lambda: qe.query(sql, lang=q.lang))
        try:
            t_qe, got = _time(run_qe)
            t_duck, want = _time(lambda: run_oracle(con, q, ds.params))
            _log(f"{q.id} first runs (not timed): qengine {t_qe:.2f} s, DuckDB {t_duck:.2f} s")
            rec["first"] = [t_qe, t_duck]
            problem = compare(got, want, q.ordered)
            rec["check"] = "equal" if problem is None else f"**differs**: {problem}"
            rec["rows"] = got.num_rows
            try:
                ex = qe.explain(sql, lang=q.lang)
                rec["chunks"] = f"{ex.num_chunks:,}"
                rec["bytes"] = scanned_bytes(ds.root, ex) if not remote else None
            except Exception:  # several-step queries (and uploads) have no single plan to show
                rec["chunks"] = "-"
            pair = [("qe", run_qe), ("duck", lambda: run_oracle(con, q, ds.params))]
            for i in range(repeat):       # interleaved: qengine then DuckDB, order alternating
                for key, fn in (pair if i % 2 == 0 else pair[::-1]):
                    if not (i and sum(rec[key]) > budget):  # each engine stops at its own budget
                        rec[key].append(_time(fn)[0])
            if q.id in contenders:
                prepare, fn, check = contenders[q.id]
                rec["astropy_load"], data = _time(prepare)
                fn(data)  # untimed warm-up: astropy's first call sets up (imports, caches)
                res = None
                for i in range(len(rec["qe"])):
                    dt, res = _time(lambda: fn(data))
                    rec["astropy"].append(dt)
                    if sum(rec["astropy"]) > budget:
                        break
                p2 = check(res, got)
                rec["astropy_check"] = "equal" if p2 is None else f"**differs**: {p2}"
        except Exception as exc:
            rec["error"] = f"{type(exc).__name__}: {exc}"[:200]
        _log(f"{q.id} {q.category}: " + (rec["error"] or
             f"qengine {statistics.median(rec['qe']) * 1e3:.1f} ms, DuckDB {statistics.median(rec['duck']) * 1e3:.1f} ms"
             + (f", astropy {statistics.median(rec['astropy']) * 1e3:.1f} ms ({rec['astropy_check']})" if rec["astropy"] else "")
             + f", {rec['rows']} rows, {rec['chunks']} chunks, {rec['check']}"))
        rows.append(rec)
        if save is not None:
            save(rows)
    return rows


# ---------------------------------------------------------------------------- astropy side by side
def astropy_contenders(ds, con) -> dict:
    """astropy ``search_around_sky`` for the near-neighbour (Q22, Q23) and crossmatch (Q24)
    queries: ``id -> (prepare, run, check)``. ``prepare`` loads the positions from the oracle
    (not timed, as in the neighbour and crossmatch benchmarks); ``run`` is the timed search
    (SkyCoord construction and the KD-tree build included, ``storekdtree=False``); ``check``
    compares its answer with qengine's."""
    import astropy.units as u
    from astropy.coordinates import SkyCoord, search_around_sky

    p = ds.params
    margin = 0.02  # degrees: more than the largest pair distance (50")

    def fetch(where: str, cols: str = "objectId, coord_ra, coord_dec") -> dict:
        return con.execute(f"SELECT {cols} FROM dp02.Object WHERE {where}").fetchnumpy()

    def sky(d: dict) -> SkyCoord:
        return SkyCoord(d["coord_ra"] * u.deg, d["coord_dec"] * u.deg)

    def box(lo_ra, lo_dec, hi_ra, hi_dec, m=0.0) -> str:
        mr = m / max(math.cos(math.radians(max(abs(lo_dec), abs(hi_dec)) + m)), 0.01)
        return (f"scisql_s2PtInBox(coord_ra, coord_dec, {(lo_ra - mr) % 360}, {lo_dec - m}, "
                f"{(hi_ra + mr) % 360}, {hi_dec + m}) = 1")

    # Q22: pairs < 5" with the first object in the 2 x 2 degree box
    def q22_prepare():
        a = fetch(box(p["ra_lo2"], p["dec_lo2"], p["ra_hi2"], p["dec_hi2"]))
        b = fetch(box(p["ra_lo2"], p["dec_lo2"], p["ra_hi2"], p["dec_hi2"], margin))
        return a, b

    def q22_run(data):
        a, b = data
        i, j, _, _ = search_around_sky(sky(a), sky(b), 5 * u.arcsec, storekdtree=False)
        return int(np.count_nonzero(a["objectId"][i] != b["objectId"][j]))

    def q22_check(n, got):
        want = got.column(0)[0].as_py()
        return None if n == want else f"astropy {n} pairs, qengine {want}"

    # Q23: pairs < 50" with the first object in a 1 degree circle, similar g-r colours
    def q23_prepare():
        cols = "objectId, coord_ra, coord_dec, g_psfFlux, r_psfFlux"
        pos = "g_psfFlux > 0 AND r_psfFlux > 0 AND "
        a = fetch(pos + f"scisql_angSep(coord_ra, coord_dec, {p['ra']}, {p['dec']}) <= 1.0", cols)
        b = fetch(pos + f"scisql_angSep(coord_ra, coord_dec, {p['ra']}, {p['dec']}) <= {1.0 + margin}", cols)
        return a, b

    def q23_run(data):
        a, b = data
        i, j, _, _ = search_around_sky(sky(a), sky(b), 50 * u.arcsec, storekdtree=False)
        ca = np.log10(a["g_psfFlux"][i] / a["r_psfFlux"][i])
        cb = np.log10(b["g_psfFlux"][j] / b["r_psfFlux"][j])
        keep = (a["objectId"][i] != b["objectId"][j]) & (np.abs(ca - cb) < 0.1)
        return set(zip(a["objectId"][i][keep].tolist(), b["objectId"][j][keep].tolist()))

    def q23_check(pairs, got):
        want = set(zip(got.column(0).to_pylist(), got.column(1).to_pylist()))
        return None if pairs == want else f"astropy {len(pairs)} pairs, qengine {len(want)} ({len(pairs ^ want)} differ)"

    # Q24: every catalogue object within 1" of each uploaded target (catalogue in memory)
    def q24_prepare():
        return ds.uploads["targets"], fetch("true")

    def q24_run(data):
        t, cat = data
        tc = SkyCoord(t.column("ra").to_numpy() * u.deg, t.column("dec").to_numpy() * u.deg)
        i, j, _, _ = search_around_sky(tc, sky(cat), 1 * u.arcsec, storekdtree=False)
        return set(zip(t.column("target").to_numpy(zero_copy_only=False)[i].tolist(), cat["objectId"][j].tolist()))

    def q24_check(pairs, got):
        want = set(zip(got.column("target").to_pylist(), got.column("objectId").to_pylist()))
        return None if pairs == want else f"astropy {len(pairs)} matches, qengine {len(want)} ({len(pairs ^ want)} differ)"

    return {"Q22": (q22_prepare, q22_run, q22_check), "Q23": (q23_prepare, q23_run, q23_check),
            "Q24": (q24_prepare, q24_run, q24_check)}


def load_test(qe, ds, clients: int, seconds: float) -> dict:
    """Cone searches from ``clients`` threads, alone and while full scans run back to back."""
    queries = {q.id: q for q in load_queries()}
    cone, scan = queries[CONE_ID], queries[SCAN_ID]
    cone_sql, _ = cone.render(ds.params)
    scan_sql, _ = scan.render(ds.params)

    def cones(stop: threading.Event, out: list[float]) -> None:
        while not stop.is_set():
            out.append(_time(lambda: qe.query(cone_sql, lang=cone.lang))[0])

    def phase(with_scan: bool) -> tuple[list[float], int]:
        stop = threading.Event()
        lat: list[float] = []
        scans = [0]

        def scanner() -> None:
            while not stop.is_set():
                qe.query(scan_sql, lang=scan.lang)
                scans[0] += 1
        threads = [threading.Thread(target=cones, args=(stop, lat), daemon=True) for _ in range(clients)]
        if with_scan:
            threads.append(threading.Thread(target=scanner, daemon=True))
        for t in threads:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in threads:
            t.join(timeout=120)
        return lat, scans[0]

    idle, _ = phase(False)
    busy, n_scans = phase(True)
    return {"idle": idle, "busy": busy, "scans": n_scans}


def _plot(rows: list[dict], path: Path, scale: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ok = [r for r in rows if r["qe"]]
    x = np.arange(len(ok))
    fig, ax = plt.subplots(figsize=(max(8, len(ok) * 0.5), 4.5))
    ax.bar(x - 0.27, [statistics.median(r["qe"]) * 1e3 for r in ok], 0.27, label="qengine")
    ax.bar(x, [statistics.median(r["duck"]) * 1e3 for r in ok], 0.27, label="one DuckDB, unpartitioned")
    ast = [(i, statistics.median(r["astropy"]) * 1e3) for i, r in enumerate(ok) if r.get("astropy")]
    if ast:
        ax.bar([i + 0.27 for i, _ in ast], [v for _, v in ast], 0.27, label="astropy search_around_sky")
    ax.set_yscale("log")
    ax.set_ylabel("median latency (ms, log)")
    ax.set_xticks(x, [r["id"] for r in ok], rotation=90)
    ax.set_title(f"qengine science query suite, scale {scale}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---------------------------------------------------------------------------- targets
CONE_MS, CONE_FACTOR, SCAN_RATIO = 20.0, 50.0, 1.15
#: categories held to the czar issue's full-scan aggregate target (<= 1.15x one DuckDB)
SCAN_CATEGORIES = {"full-scan aggregate", "full-scan colour cut", "Source scan", "variability"}
#: why qengine misses a target, per query id, from this machine's measurements (shown only when
#: the target is missed in the run being rendered)
WHY: dict[str, str] = {
    "Q03": "the 50x part. One DuckDB scans the positions of all Objects (the generated, sky-unordered "
           "files, 2 threads) in {duck_ms} ms, so 50x would need a {need_ms} ms cone; qengine's cone is a "
           "chain of serial steps, each measured in the czar benchmark above: ~5 ms of sqlglot parsing and "
           "planning in the czar, ~2 ms of fan-out, a gRPC round trip (~3 ms bare) and ~8 ms of CPU in the "
           "worker's DuckDB step (connection, macros, binding over the chunk's files and their footers): "
           "~18 ms before any wait for one of the 2 shared cores. A cone this fast needs that chain cut "
           "(cached plans for repeated query shapes, a prepared per-table statement in the worker), not a "
           "faster scan: the cone reads {mib} MiB.",
    "Q22": "the issue's target is set for all pairs < 5\" over a whole catalogue of >= 5M objects (the "
           "neighbour benchmark above); this query asks for a 2 x 2 degree field. astropy then searches "
           "the field's positions already in memory ({ast_ms} ms; loading them through DuckDB took another "
           "{ast_load_ms} ms, not counted), while "
           "qengine's {qe_ms} ms is the whole query: parsing and planning, two workers reading 24 chunks "
           "and their overlap ({mib} MiB est.) and zone-joining them in DuckDB, gRPC, the merge — fixed "
           "costs that dominate at this size. (DuckDB's column is the oracle's plain SQL, a nested-loop "
           "join over a declination band: no zones.)",
    "Q23": "as Q22, a field-sized query (pairs < 50\" around the objects of a 1 degree circle): astropy's "
           "{ast_ms} ms is the pair search over the field's positions and colours already in memory (their "
           "loading, {ast_load_ms} ms through DuckDB, is not counted, and is where the work is: selecting them "
           "from 10M Objects), qengine's "
           "{qe_ms} ms the whole query over 20 chunks and their overlap.",
    "Q27": "lasSource has 1M rows: one DuckDB scans them in {duck_ms} ms, so qengine's fixed cost per query "
           "(planning, fan-out to both workers, gRPC, merge: ~15-20 ms, see Q03) is a large share of it. "
           "The czar issue sets the target on a full scan of >= 10M rows, where the same queries meet it "
           "(Q10-Q15).",
    "Q19": "GROUP BY objectId ... HAVING over every Source (120M rows, ~10M groups). Source is a child "
           "table, placed in its Object's chunk, so objectId groups never span workers: since the planner's "
           "local-groups rule (czar/planner/aggregate.py) the workers compute whole groups, HAVING included, "
           "and the czar only concatenates the {rows} rows kept (before it, each worker shipped one partial "
           "group per Object and the czar regrouped them: 63.8 s against DuckDB's 35.5 s under load). What "
           "remains is each worker's own hash aggregation of half the rows into ~5M groups, on the worker's "
           "scan lane (its threads and memory limit), against one DuckDB aggregating all rows with both cores; "
           "not analysed further.",
}


def target(q, r: dict) -> tuple[str, bool | None]:
    """The issues' target for a query (czar #5, joins #6, crossmatch #8) and whether it was met."""
    if not r["qe"]:
        return "-", None
    a, b = statistics.median(r["qe"]), statistics.median(r["duck"])
    ast = statistics.median(r["astropy"]) if r.get("astropy") else None
    if q.id == CONE_ID:
        ok = a * 1e3 < CONE_MS and b / a >= CONE_FACTOR
        return f"p50 < {CONE_MS:g} ms and >= {CONE_FACTOR:g}x DuckDB's full scan: {a * 1e3:.1f} ms, {b / a:.1f}x", ok
    if q.category in SCAN_CATEGORIES:
        return f"<= {SCAN_RATIO}x DuckDB: {a / b:.2f}x", a / b <= SCAN_RATIO
    if q.category == "near-neighbour":
        if ast is None:
            return ">= 2x astropy: astropy not run", None
        return f">= 2x astropy: {ast / a:.2f}x", ast / a >= 2
    if q.category == "crossmatch":
        if ast is None:
            return ">= 5x astropy, < 1 s: astropy not run", None
        return (f">= 5x astropy: {ast / a:.2f}x; < 1 s for a small upload: {a:.2f} s; >= 2x LSDB: not run here",
                ast / a >= 5 and a < 1)
    return "none set (ratio to DuckDB only)", None


def _markdown(raw: dict, plot: Path | None) -> str:
    m = raw["meta"]
    queries = {q.id: q for q in load_queries()}
    rows = raw["rows"]
    sizes = ", ".join(f"{k} {v:,}" for k, v in SCALES[m["scale"]].items())
    out = [f"Scale `{m['scale']}` (objects per catalogue: {sizes}; table rows: "
           + ", ".join(f"{k} {v:,}" for k, v in m.get("table_rows", {}).items())
           + "; generated with `catalogs.generate`, ingested with each catalogue's partitioning). qengine: "
           + (f"the czar at {m['cluster']}" if m.get("cluster") else f"`LocalCluster` with {m['workers']} worker processes")
           + f"; DuckDB: one in-process connection (2 threads) with qengine's SQL macros over {m['oracle_data']}, "
           "running the same query (translated) — the oracle every answer is checked against (its "
           f"first run, not timed). Medians of up to {m['repeat']} interleaved timed runs per engine after "
           f"that first run (fewer once an engine's timed runs of a query passed {m['budget']:g} s: column runs, qengine/DuckDB where they differ). Load average "
           f"at the start: {m['load_start']:.1f}, at the end: {m.get('load_end', float('nan')):.1f}: the machine "
           "(2 cores) is shared, compare ratios." + (f" {m['note']}" if m.get("note") else ""), "",
           "| id | category | lang | qengine p50 ms | p95 ms | DuckDB p50 ms | qengine / DuckDB | runs | rows | "
           "chunks | MiB scanned (est.) | check | target (issue) | met |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
    missed = []
    ran = {r["id"]: r for r in rows}
    for q in queries.values():
        r = ran.get(q.id)
        if r is None:
            out.append(f"| {q.id} | {q.category} | {q.lang} | - | - | - | - | - | - | - | - | **not run**: "
                       f"{m.get('not_run', {}).get(q.id, 'the run was stopped before it')} | - | - |")
            continue
        if r["error"]:
            out.append(f"| {q.id} | {q.category} | {q.lang} | - | - | - | - | - | - | - | - | **{r['error']}** | - | - |")
            continue
        a, b = statistics.median(r["qe"]), statistics.median(r["duck"])
        text, ok = target(q, r)
        if m["scale"] == "small" and ok is not None:  # the issues set their targets at >= 10M objects
            text, ok = text + " (the target applies at >= 10M objects)", None
        mark = "-" if ok is None else ("met" if ok else "**missed**")
        if ok is False:
            missed.append(q.id)
            mark += f" ({len(missed)})"
        check = r["check"] + (f"; astropy {r['astropy_check']}" if r.get("astropy_check") else "")
        mib = "-" if r.get("bytes") is None else f"{r['bytes'] / 2**20:,.1f}"
        out.append(f"| {q.id} | {q.category} | {q.lang} | {a * 1e3:,.1f} | {_pct(r['qe'], 95) * 1e3:,.1f} | "
                   f"{b * 1e3:,.1f} | {a / b:.3g}x | {len(r['qe'])}{'' if len(r['duck']) == len(r['qe']) else '/' + str(len(r['duck']))} | {r['rows']:,} | {r['chunks']} | {mib} | "
                   f"{check} | {text} | {mark} |")
    if missed:
        out += ["", "Targets missed, and why:"]
        for k, i in enumerate(missed, 1):
            r = next(x for x in rows if x["id"] == i)
            a, b = statistics.median(r["qe"]), statistics.median(r["duck"])
            fields = {"qe_ms": f"{a * 1e3:,.0f}", "duck_ms": f"{b * 1e3:,.0f}", "ratio": f"{a / b:.2f}",
                      "need_ms": f"{b * 1e3 / CONE_FACTOR:.1f}", "mib": f"{(r.get('bytes') or 0) / 2**20:,.0f}",
                      "rows": f"{r['rows']:,}",
                      "ast_ms": f"{statistics.median(r['astropy']) * 1e3:,.1f}" if r.get("astropy") else "-",
                      "ast_load_ms": f"{r['astropy_load'] * 1e3:,.0f}" if r.get("astropy_load") is not None else "?"}
            out.append(f"{k}. {i}: {WHY.get(i, 'not analysed.').format(**fields)}")
    slow = [r for r in rows if r["qe"] and target(queries[r["id"]], r)[1] is None
            and statistics.median(r["qe"]) > SCAN_RATIO * statistics.median(r["duck"])]
    if slow:
        out += ["", "Slower than one DuckDB where no issue sets a target: " + "; ".join(
            f"{r['id']} ({queries[r['id']].category}) {statistics.median(r['qe']) / statistics.median(r['duck']):.2f}x "
            f"over {len(r['qe'])} timed run{'s' if len(r['qe']) > 1 else ''}" for r in slow)
            + ". Not analysed here; with one or two runs under this load, differences of tens of percent are "
            "within the run-to-run noise (compare p50 with p95)."]
    ast = [r for r in rows if r.get("astropy")]
    if ast:
        out += ["", "astropy (`search_around_sky`, `storekdtree=False`; positions loaded beforehand through the "
                "oracle, not timed: the field's objects for Q22/Q23 with a 0.02° margin, all objects for Q24) p50: "
                + "; ".join(f"{r['id']} {statistics.median(r['astropy']) * 1e3:,.1f} ms "
                            f"(astropy / qengine = {statistics.median(r['astropy']) / statistics.median(r['qe']):.2f}"
                            + (f"; loading its positions through DuckDB took {r['astropy_load'] * 1e3:,.0f} ms more"
                               if r.get("astropy_load") is not None else "") + ")"
                            for r in ast) + "."]
    out += ["", "Questions: " + " ".join(f"{r['id']}: {queries[r['id']].question}" for r in rows)]
    load = raw.get("load")
    if load:
        i, b = load["idle"], load["busy"]
        out += ["", f"Interactive queries during a full scan ({m['clients']} clients issuing {CONE_ID} cone "
                f"searches for {m['load_seconds']:g} s, alone and then while {SCAN_ID} full scans run back to "
                f"back: {load['scans']} scans):", "",
                "| phase | cone searches | p50 ms | p95 ms |", "|---|---:|---:|---:|",
                f"| alone | {len(i)} | {_pct(i, 50) * 1e3:.1f} | {_pct(i, 95) * 1e3:.1f} |",
                f"| during full scans | {len(b)} | {_pct(b, 50) * 1e3:.1f} | {_pct(b, 95) * 1e3:.1f} |"]
    if plot is not None:
        out += ["", f"Plot: `{plot.name}` (median latency per query, log scale)."]
    out += ["", "MiB scanned (est.) is an estimate from the Parquet footers, not a measurement (workers report "
            "rows, chunks and files, not bytes): the compressed size of the columns the czar asks each worker "
            "to read (every column for `SELECT *` and replicated tables; plus chunkId/subChunkId) in the row "
            "groups of the store files holding a chunk that worker visits (`benchmarks.suite.scanned_bytes`). "
            "It overstates what DuckDB reads when other columns' statistics prune row groups, and leaves out "
            "the director-index lookup of id queries; `-`: several-step or upload queries, which have no single "
            "plan to explain. LSDB is not run in this suite (it needs the catalogue imported with hats-import: "
            "~20 min for 10M objects on this machine); see the crossmatch benchmark for qengine vs LSDB."]
    return "\n".join(out) + "\n"


def _reasons(args) -> dict[str, str]:
    out = {}
    for item in getattr(args, "not_run", None) or []:
        qid, _, why = item.partition("=")
        out[qid.strip().upper()] = why.strip()
    return out


def _raw_path(scale: str) -> Path:
    return cache_root() / f"suite-{scale}" / "results.json"


def run(args: argparse.Namespace) -> tuple[str, str]:
    scale = args.scale
    raw_path = _raw_path(scale)
    plot = RESULTS_DIR / f"suite-{scale}.png"
    if getattr(args, "render", False):
        raw = json.loads(raw_path.read_text())
        raw["meta"].setdefault("not_run", {}).update(_reasons(args))
        if args.no_write or not _plot(raw["rows"], plot, scale):
            plot = None
        return f"Science query suite ({scale})", _markdown(raw, plot)
    directory = cache_root() / f"suite-{scale}"
    _log(f"data for scale {scale} in {directory} (generated and ingested once)")
    ds = build(scale, directory, progress=sys.stderr.isatty(), log=_log)
    con = oracle_connection(ds)
    gen = sorted(k for k in ds.inputs if k not in ds.stored)
    oracle_data = ("the generated, unpartitioned Parquet files" if not ds.stored else
                   f"the generated, unpartitioned Parquet files of {', '.join(gen) or 'no table'} and, for "
                   f"{', '.join(sorted(ds.stored))}, the store's data files read as one table each (every row "
                   "once, chunkId/subChunkId dropped, no overlap; rows sorted by chunk, so DuckDB can prune row "
                   "groups on position statistics there): their generated inputs were deleted after ingest to "
                   "save disk")
    table_rows = {k: footer_rows(f) for k, f in ds.inputs.items()
                  if k.split(".")[1] in ("Object", "Source", "ForcedSource", "PhotoObjAll", "lasSource")}
    meta = {"scale": scale, "repeat": args.repeat, "budget": getattr(args, "budget", 60.0),
            "workers": args.workers, "cluster": args.cluster, "clients": args.clients,
            "load_seconds": args.load_seconds, "load_start": os.getloadavg()[0], "oracle_data": oracle_data,
            "table_rows": table_rows}
    fs = "dp02.ForcedSource"
    if ds.objects.get(fs, 0) < ds.objects.get("dp02.Object", 0):
        meta["note"] = (f"ForcedSource holds the forced photometry of the first {ds.objects[fs]:,} Objects only "
                        "(disk: all would be ~180M rows, ~15 GB stored plus as much input while ingesting); "
                        "Q08's object is among them.")
    only = {x.strip().upper() for x in getattr(args, "only", None).split(",")} if getattr(args, "only", None) else None
    kept: list[dict] = []
    prev_load = None
    if only and raw_path.exists():  # finishing a stopped run: keep the other queries' rows and notes
        prev = json.loads(raw_path.read_text())
        kept = [r for r in prev["rows"] if r["id"] not in only]
        prev_load = prev.get("load")
        if args.load_seconds <= 0:  # the first run's load test stands, with its settings
            meta.update(clients=prev["meta"]["clients"], load_seconds=prev["meta"]["load_seconds"])
        meta["not_run"] = prev["meta"].get("not_run", {})
        meta["note"] = (meta.get("note", "") + f" Queries {', '.join(sorted(only))} ran in a second run "
                        f"(load average at its start {meta['load_start']:.1f}); the others in the first "
                        f"(load average {prev['meta']['load_start']:.1f} at its start).").strip()
    meta.setdefault("not_run", {}).update(_reasons(args))
    raw = {"meta": meta, "rows": [], "load": None}
    order = {q.id: k for k, q in enumerate(load_queries())}

    def save(rows: list[dict]) -> None:
        raw["rows"] = sorted(kept + rows, key=lambda r: order[r["id"]])
        raw_path.write_text(json.dumps(raw))

    if args.cluster:
        import qengine
        qe, closer = qengine.connect(args.cluster), None
    else:
        from czar.local import LocalCluster
        qe = closer = LocalCluster(ds.root, workers=args.workers)
    try:
        rows = run_suite(qe, con, ds, args.repeat, remote=bool(args.cluster), budget=meta["budget"],
                         astropy=getattr(args, "astropy", True), save=save, only=only)
        raw["load"] = (load_test(qe, ds, args.clients, args.load_seconds) if args.load_seconds > 0
                       else prev_load)
    finally:
        if closer is not None:
            closer.close()
    meta["load_end"] = os.getloadavg()[0]
    save(rows)
    if args.no_write or not _plot(raw["rows"], plot, scale):
        plot = None
    return f"Science query suite ({scale})", _markdown(raw, plot)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.suite_bench", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    from benchmarks.runner import machine_line

    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    title, body = run(args)
    body = f"_{stamp}; {machine_line()}_\n\n{body}"
    print(f"## {title}\n{body}")
    if not args.no_write:
        from benchmarks.runner import update_section
        update_section(args.results, title, body)
        _log(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
