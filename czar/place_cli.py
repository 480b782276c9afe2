"""``qengine place --config cluster.yaml ROOT``: write each worker's data directory.

Each worker directory gets every table's manifest, the data and overlap files placement gives
it (:mod:`czar.placement`), and every index and replicated file; files are copied (local disks),
hard-linked (same file system; copied where a link is impossible) or symlinked (shared storage
such as CephFS or NFS). A worker's DuckDB sandbox reads only its data root, plus the
directories its symlinks point to when it starts (and any ``--allow-dir``): place symlinks
before starting the worker, or restart it after. Running it again after adding
a worker to cluster.yaml moves only what the new placement needs and removes files a worker no
longer holds. Workers notice on their next inventory (the czar reads it on start, and when a
worker comes back up); a running czar routes by the inventories it read, so place while the
czar is stopped or restart it afterwards.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from czar.placement import FileKey, Placement, place, store_files
from qengine.errors import ConfigError
from qengine.store import MANIFEST, atomic_write_text, list_tables, table_dir

log = logging.getLogger(__name__)

MODES = ("copy", "hardlink", "symlink")


@dataclass
class WriteStats:
    added: int = 0
    removed: int = 0
    bytes_added: int = 0


def current_holdings(root: Path, dirs: dict[str, Path]) -> dict[FileKey, set[str]]:
    """Which worker directories hold each data/overlap file of the store now."""
    out: dict[FileKey, set[str]] = {}
    for f in store_files(root):
        if not f.chunked:
            continue
        for w, d in dirs.items():
            if os.path.lexists(table_dir(d, f.database, f.table) / f.path):
                out.setdefault(f.key, set()).add(w)
    return out


def _put(src: Path, dst: Path, mode: str) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.placing")
    if os.path.lexists(tmp):
        tmp.unlink()
    if mode == "symlink":
        os.symlink(src.resolve(), tmp)
    elif mode == "hardlink":
        try:
            os.link(src, tmp)
        except OSError as exc:  # another file system: a copy is the next best thing
            log.debug("cannot hard-link %s (%s): copying", src, exc)
            shutil.copyfile(src, tmp)
    else:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)  # a reader sees the whole file or none


def write_worker_dirs(root: str | os.PathLike, placement: Placement, dirs: dict[str, Path],
                      mode: str = "copy", prune: bool = True) -> dict[str, WriteStats]:
    """Make each worker directory hold what ``placement`` gives it (and, with ``prune``, nothing
    else of the store's data/overlap files). The manifest is rewritten last, so a worker that
    refreshes its inventory meanwhile sees the old or the new set of files."""
    if mode not in MODES:
        raise ConfigError(f"unknown placement mode {mode!r}; one of {', '.join(MODES)}")
    root = Path(root)
    files = {f.key: f for f in store_files(root)}
    stats = {w: WriteStats() for w in dirs}
    for w, d in dirs.items():
        mine = placement.files_of(w)
        for db, name in list_tables(root):
            src_dir, dst_dir = table_dir(root, db, name), table_dir(d, db, name)
            dst_dir.mkdir(parents=True, exist_ok=True)
            changed = False
            for key, f in files.items():
                if key[:2] != (db, name):
                    continue
                dst = dst_dir / f.path
                if key in mine and not os.path.lexists(dst):
                    _put(src_dir / f.path, dst, mode)
                    stats[w].added += 1
                    stats[w].bytes_added += f.bytes
                    changed = True
                elif key not in mine and prune and f.chunked and os.path.lexists(dst):
                    dst.unlink()
                    stats[w].removed += 1
                    changed = True
            manifest = (src_dir / MANIFEST).read_text()
            target = dst_dir / MANIFEST
            if changed or not target.exists() or target.read_text() != manifest:
                atomic_write_text(target, manifest)
    return stats


def plan_for(root: Path, dirs: dict[str, Path], replicas: int) -> tuple[Placement, dict[FileKey, set[str]]]:
    """The placement for ``dirs`` starting from what they hold now (fewest moves)."""
    previous = current_holdings(root, dirs)
    return place(store_files(root), list(dirs), replicas, previous), previous


def worker_dirs(config: Path) -> tuple[dict[str, Path], int]:
    """(address -> data directory, replicas) from cluster.yaml's ``workers`` and ``replicas``."""
    try:
        cfg = yaml.safe_load(config.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{config}: {exc}") from None
    workers = cfg.get("workers")
    if not isinstance(workers, list) or not workers:
        raise ConfigError(f"{config}: 'workers' must be a non-empty list")
    dirs: dict[str, Path] = {}
    for i, w in enumerate(workers):
        if not isinstance(w, dict) or not w.get("address") or not w.get("data"):
            raise ConfigError(f"{config}: workers[{i}] needs 'address' (host:port) and 'data' (its data "
                              f"directory) for placement, e.g. {{address: w1:7001, data: /data/w1}}")
        dirs[str(w["address"])] = (config.parent / str(w["data"])).resolve()
    try:
        replicas = int(cfg.get("replicas", 2))
    except (TypeError, ValueError):
        raise ConfigError(f"{config}: 'replicas' must be an integer") from None
    return dirs, replicas


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", type=Path, help="the complete store (as written by qengine ingest)")
    p.add_argument("--config", type=Path, required=True,
                   help="cluster.yaml: workers as {address, data} and replicas (default 2)")
    p.add_argument("--replicas", type=int, help="copies of every chunk (default: the config's replicas)")
    p.add_argument("--mode", choices=MODES, default="copy",
                   help="copy files (local disks, default), hard-link them, or symlink them (shared storage; "
                        "a worker allows the directories its symlinks point to when it starts)")
    p.add_argument("--no-prune", dest="prune", action="store_false", default=True,
                   help="keep files a worker no longer needs (remove them in a later run)")
    p.add_argument("--dry-run", action="store_true", help="print the placement, write nothing")


def run(args: argparse.Namespace) -> int:
    root = args.root.resolve()
    if not list_tables(root):
        raise ConfigError(f"{args.root}: no tables (not a store written by qengine ingest?)")
    dirs, replicas = worker_dirs(args.config)
    if args.replicas is not None:
        replicas = args.replicas
    placement, previous = plan_for(root, dirs, replicas)
    moved = placement.moved(previous)
    per = placement.bytes_per_worker()
    for w, d in dirs.items():
        n = len(placement.files_of(w))
        print(f"{w}\t{d}\t{n} files\t{per[w] / 2**20:.1f} MiB")
    print(f"{len(placement.segments)} segments, {placement.replicas} replicas each; "
          f"{moved} file copies to add")
    if args.dry_run:
        return 0
    stats = write_worker_dirs(root, placement, dirs, args.mode, args.prune)
    for w, s in stats.items():
        print(f"{w}: {s.added} files added ({s.bytes_added / 2**20:.1f} MiB), {s.removed} removed")
    return 0
