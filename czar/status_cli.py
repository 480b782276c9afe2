"""``qengine status --config cluster.yaml``: workers up or down, chunks and replicas per table,
queries running now.

Asks the workers directly (Health, Inventory) with short deadlines, so it works whether or not
the czar runs; running queries come from the czar's HTTP API when it answers (its TAP async
jobs in phase EXECUTING, and ``/api/v1/status`` where the czar serves it), else from the
workers' own counts of running parts.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import urllib.error
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from czar.metadata import Metadata
from qengine.workerclient import WorkerClient, WorkerError

log = logging.getLogger(__name__)


def _worker_report(address: str, secret: str | None, timeout: float) -> dict:
    with WorkerClient(address, secret) as c:
        try:
            h = c.health(timeout=timeout)
            inv = c.inventory()  # it answered its health check: no stall to guard against
        except WorkerError as exc:
            return {"address": address, "up": False, "error": f"{exc.code}: {exc}"}
        tables = {f"{t.database}.{t.table}": {"role": t.role, "chunks": list(t.chunk_ids), "rows": t.rows,
                                               "files": t.files} for t in inv.tables}
        return {"address": address, "up": True, "running": h.running, "version": h.version,
                "uptime_seconds": round(h.uptime_seconds, 1), "worker_id": inv.worker_id, "tables": tables}


def _get(url: str, token: str | None, timeout: float):
    """GET ``url``, with the bearer token when there is one (a czar with ``auth`` wants it)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _czar_queries(base: str, timeout: float, token: str | None = None) -> dict:
    """What the czar says is running (empty when it does not answer)."""
    out: dict = {"url": base, "reachable": False}
    try:
        with _get(f"{base}/api/v1/health", token, timeout) as r:
            out["reachable"] = r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return out
    try:
        with _get(f"{base}/api/v1/status", token, timeout) as r:
            out["status"] = json.loads(r.read())
    except (urllib.error.URLError, OSError, ValueError):
        pass  # not served by this czar
    try:
        with _get(f"{base}/tap/async?PHASE=EXECUTING&PHASE=QUEUED", token, timeout) as r:
            body = r.read().decode()
        out["tap_jobs"] = re.findall(r'<uws:jobref id="([^"]+)"[^>]*>\s*<uws:phase>([A-Z]+)</uws:phase>', body)
    except (urllib.error.URLError, OSError, ValueError):
        pass
    return out


def cluster_status(cfg: dict, timeout: float = 2.0, czar_url: str | None = None,
                   token: str | None = None) -> dict:
    """Workers, per-table replica counts and running queries for a loaded cluster config
    (``token``: the bearer token for a czar with authentication)."""
    addrs = [w if isinstance(w, str) else w["address"] for w in cfg["workers"]]
    with ThreadPoolExecutor(max_workers=min(16, len(addrs))) as pool:
        workers = list(pool.map(lambda a: _worker_report(a, cfg.get("secret"), timeout), addrs))
    meta = Metadata(cfg["metadata_root"])
    tables = {}
    for t in meta.tables.values():
        name = f"{t.database}.{t.name}"
        copies: dict[int, int] = defaultdict(int)
        for w in workers:
            if w["up"] and name in w["tables"]:
                for c in w["tables"][name]["chunks"]:
                    copies[c] += 1
        if not t.partitioned:
            held = sum(1 for w in workers if w["up"] and name in w["tables"] and w["tables"][name]["files"])
            tables[name] = {"role": t.role, "rows": t.rows, "workers": held}
            continue
        want = t.chunk_ids()
        counts = [copies.get(c, 0) for c in want]
        tables[name] = {"role": t.role, "rows": t.rows, "chunks": len(want),
                        "min_replicas": min(counts, default=0), "max_replicas": max(counts, default=0),
                        "unavailable": [c for c, n in zip(want, counts) if n == 0][:20],
                        "unavailable_count": sum(1 for n in counts if n == 0)}
    http = cfg.get("http") or {}
    host = http.get("host", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # a listen-everywhere address
    base = (czar_url or f"http://{host}:{http.get('port', 8080)}").rstrip("/")
    return {"workers": workers, "tables": tables, "czar": _czar_queries(base, timeout, token)}


def format_status(st: dict) -> str:
    lines = ["workers:"]
    for w in st["workers"]:
        if w["up"]:
            n = sum(len(t["chunks"]) for t in w["tables"].values())
            lines.append(f"  {w['address']}\tup\t{w['running']} running\t{len(w['tables'])} tables\t"
                         f"{n} table-chunks\tuptime {w['uptime_seconds']:.0f} s")
        else:
            lines.append(f"  {w['address']}\tDOWN\t{w['error'][:120]}")
    lines.append("tables:")
    for name, t in sorted(st["tables"].items()):
        if "chunks" in t:
            bad = (f"\t{t['unavailable_count']} chunk(s) with no live replica, e.g. {t['unavailable'][:10]}"
                   if t["unavailable_count"] else "")
            lines.append(f"  {name}\t{t['role']}\t{t['rows']:,} rows\t{t['chunks']} chunks\t"
                         f"replicas {t['min_replicas']}..{t['max_replicas']}{bad}")
        else:
            lines.append(f"  {name}\t{t['role']}\t{t['rows']:,} rows\ton {t['workers']} live worker(s)")
    cz = st["czar"]
    if not cz["reachable"]:
        running = sum(w.get("running", 0) for w in st["workers"] if w["up"])
        lines.append(f"czar: not reachable at {cz['url']}; workers report {running} query part(s) running")
    else:
        lines.append(f"czar: {cz['url']}")
        for q in (cz.get("status") or {}).get("running", []):
            lines.append(f"  query {q['query_id']}\ton {', '.join(q['workers'])}\tretries {q.get('retries', 0)}")
        for job, phase in cz.get("tap_jobs", []):
            lines.append(f"  TAP job {job}\t{phase}")
        if not (cz.get("status") or {}).get("running") and not cz.get("tap_jobs"):
            running = sum(w.get("running", 0) for w in st["workers"] if w["up"])
            lines.append(f"  no TAP job running; workers report {running} query part(s) running")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, required=True, help="cluster.yaml (workers, secret_file, metadata_root, http)")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each worker (default 2)")
    p.add_argument("--url", help="the czar's HTTP address (default: from the config's http host and port)")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.add_argument("--token", default=os.environ.get("QENGINE_TOKEN"),
                   help="bearer token for a czar with authentication (default: $QENGINE_TOKEN)")
    p.epilog = "exit status: 0 all workers up, 1 a worker down, 2 a chunk has no live replica"


def run(args: argparse.Namespace) -> int:
    from czar.server import load_cluster_config

    st = cluster_status(load_cluster_config(args.config), args.timeout, args.url, args.token)
    if args.json:
        for w in st["workers"]:  # chunk lists are long: counts only
            for t in w.get("tables", {}).values():
                t["chunks"] = len(t["chunks"])
        print(json.dumps(st, indent=2))
    else:
        print(format_status(st))
    down = sum(1 for w in st["workers"] if not w["up"])
    lost = sum(t.get("unavailable_count", 0) for t in st["tables"].values())
    return 0 if not down and not lost else (2 if lost else 1)
