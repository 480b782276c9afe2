"""Bounded-memory spilling of placed rows, and the sorted files made from the spill.

Placed batches (sorted by chunkId) are cut by stripe and appended to one Arrow IPC stream per
stripe, so memory holds one input batch at a time whatever the input size. At the end, runs
of consecutive chunks are read back (memory-mapped, zero-copy slices of the sorted pieces),
sorted by (chunkId, subChunkId) and written as Parquet files of about ``rows_per_file`` rows.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from partitioner.place import CHUNK_COL, SUB_CHUNK_COL


class StripeSpill:
    """IPC spill files of batches sorted by chunkId, one per band of stripes.

    Bands of several stripes (about 64 bands over the sky) keep the pieces written per input
    batch large enough that per-piece overhead stays small.
    """

    def __init__(self, directory: Path, schema: pa.Schema, num_stripes: int, bands: int = 64) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        # chunk ids of one stripe lie in [s * 2 * num_stripes, (s + 1) * 2 * num_stripes)
        self.per_stripe = 2 * num_stripes * max(1, -(-num_stripes // bands))
        self._writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
        self._sinks: dict[int, pa.OSFile] = {}
        self.rows = 0

    def _path(self, stripe: int) -> Path:
        return self.directory / f"stripe-{stripe:06d}.arrows"

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        cid = batch.column(CHUNK_COL).to_numpy()
        stripes = cid // self.per_stripe
        cuts = np.flatnonzero(np.r_[True, stripes[1:] != stripes[:-1], True])
        for a, b in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
            s = int(stripes[a])
            w = self._writers.get(s)
            if w is None:
                sink = pa.OSFile(str(self._path(s)), "wb")
                w = pa.ipc.new_stream(sink, self.schema)
                self._sinks[s], self._writers[s] = sink, w
            w.write_batch(batch.slice(a, b - a))
        self.rows += batch.num_rows

    def close(self) -> None:
        for s, w in self._writers.items():
            w.close()
            self._sinks[s].close()
        self._writers.clear()
        self._sinks.clear()

    @property
    def bytes(self) -> int:
        return sum(self._path(s).stat().st_size for s in self._sinks) if self._sinks else sum(
            p.stat().st_size for p in self.directory.glob("stripe-*.arrows"))

    def read_range_sorted(self, lo: int, hi: int) -> pa.Table:
        """Rows with lo <= chunkId <= hi, sorted by (chunkId, subChunkId).

        The pieces are zero-copy slices of the memory-mapped spill; the one copy made is the
        sorted output, so memory stays near the size of the run being written.
        """
        pieces: list[pa.RecordBatch] = []
        for s in range(lo // self.per_stripe, hi // self.per_stripe + 1):
            path = self._path(s)
            if not path.exists():
                continue
            reader = pa.ipc.open_stream(pa.memory_map(str(path)))
            for batch in reader:
                cid = batch.column(CHUNK_COL).to_numpy()
                a, b = np.searchsorted(cid, [lo, hi + 1])
                if b > a:
                    pieces.append(batch.slice(int(a), int(b - a)))
        if not pieces:
            return self.schema.empty_table()
        table = pa.Table.from_batches(pieces, schema=self.schema)
        del pieces
        # Stable sort on one int64 key (ties keep input order, as the per-batch sort did):
        # measured 3x cheaper than pc.sort_indices on the two columns of a many-chunk table.
        key = (table.column(CHUNK_COL).to_numpy().astype(np.int64) << 32) | \
            table.column(SUB_CHUNK_COL).to_numpy().astype(np.int64)
        order = pa.array(np.argsort(key, kind="stable"))
        del key
        # Table.take does not concatenate the chunks first (pyarrow 26, measured): the one
        # copy is the output (measured: cheaper than concatenating column by column).
        return table.take(order)


def _writer_options(schema: pa.Schema, sorting: list[str] | None) -> dict:
    sorting_columns = None
    if sorting:
        sorting_columns = [pq.SortingColumn(schema.get_field_index(c)) for c in sorting]
    # Dictionary-encode strings only: trying it on high-cardinality numeric columns made
    # writes 4x slower and files larger (measured on the LSST Object table).
    dictionary = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    # Floating-point columns byte-stream-split: measured 15-24% less DuckDB CPU per full scan.
    split = [f.name for f in schema if pa.types.is_floating(f.type)]
    return {"compression": "zstd", "compression_level": 1, "use_dictionary": dictionary,
            "use_byte_stream_split": split or False, "write_statistics": True,
            "sorting_columns": sorting_columns}


def write_parquet(table: pa.Table, path: Path, row_group_rows: int,
                  sorting: list[str] | None = None) -> int:
    """Write ``table`` to ``path`` (zstd, statistics, sorting metadata); returns bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(path), row_group_size=row_group_rows,
                   **_writer_options(table.schema, sorting))
    return os.path.getsize(path)


def write_parquet_runs(tables: Iterable[pa.Table], path: Path, schema: pa.Schema,
                       row_group_rows: int, sorting: list[str] | None = None) -> tuple[int, int]:
    """Write consecutive ``tables`` (e.g. sorted runs) as one Parquet file, one table in memory
    at a time; returns (rows, bytes written).  Nothing is created when all tables are empty."""
    writer = None
    rows = 0
    it = iter(tables)
    try:
        while (t := next(it, None)) is not None:
            if t.num_rows:
                if writer is None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    writer = pq.ParquetWriter(str(path), schema, **_writer_options(schema, sorting))
                writer.write_table(t, row_group_size=row_group_rows)
                rows += t.num_rows
            del t  # before the next run is made: one run in memory, not two
    finally:
        if writer is not None:
            writer.close()
    return rows, (os.path.getsize(path) if writer is not None else 0)
