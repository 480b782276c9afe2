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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--objects", type=int, default=200_000, help="Objects in the sample (default 200000)")
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
    _ingest_sample(cat, root, args.cache / f"store-lsst_dr-{args.objects}-{args.seed}")
    return 0


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
