"""Bulk ingest of one table: read, place, spill, write sorted chunk files, commit atomically.

One call is one transaction. Files are written under ``_staging/`` and become visible only when
the table's manifest is replaced (the commit point), so an error, ``abort=True`` or a killed
process leaves the store as it was; leftovers of a killed ingest are removed by the next one.
Re-running an ingest of the same inputs is a no-op; a later ingest of new inputs appends.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import logging
import os
import queue
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from partitioner import place
from partitioner.progress import Progress
from partitioner.readers import InputSpec, Reject, count_bytes, detect_format, read_batches
from partitioner.spill import StripeSpill, write_parquet, write_parquet_runs
from qengine.catalog import Partitioning, Table
from qengine.chunker import Chunker
from qengine.errors import IngestError
from qengine.store import (
    MANIFEST, ChunkStats, FileEntry, StoreError, TableManifest, Transaction, load_manifest,
    table_dir,
)

log = logging.getLogger(__name__)

__all__ = ["IngestOptions", "IngestResult", "ingest", "recover"]

STAGING = "_staging"
REJECTS = "_rejects"
INDEX_SCHEMA = pa.schema([
    pa.field("id", pa.int64(), False), pa.field(place.CHUNK_COL, pa.int32(), False),
    pa.field(place.SUB_CHUNK_COL, pa.int32(), False),
])


@dataclass
class IngestOptions:
    rows_per_file: int = 1_000_000
    row_group_rows: int = 100_000
    skip_bad_rows: int = 0          # >0: reject up to this many bad rows into a reject file
    threads: int = 2
    memory_limit: str = "1GB"       # for DuckDB's index sort and duplicate checks
    run_memory_bytes: int = 128 << 20  # largest run of chunks sorted in memory at once (per thread)
    progress: bool | None = None    # None: a bar on a terminal, a summary line otherwise
    abort: bool = False             # do all the work, then roll back (a dry run)


@dataclass
class IngestResult:
    database: str
    table: str
    txn: int | None
    rows: int = 0
    overlap_rows: int = 0
    match_copies: int = 0       # match tables: second copies, stored with the second director's row
    rejected: int = 0
    files: list[str] = field(default_factory=list)
    already_ingested: bool = False
    aborted: bool = False
    seconds: float = 0.0
    reject_file: str | None = None

    def summary(self) -> str:
        if self.already_ingested:
            return (f"{self.database}.{self.table}: these inputs were already ingested in transaction "
                    f"{self.txn}; nothing to do")
        verb = "validated (aborted, nothing written)" if self.aborted else f"committed as transaction {self.txn}"
        rate = self.rows / self.seconds if self.seconds > 0 else 0.0
        copies = (f"{self.match_copies:,} copies with the second director's row" if self.match_copies
                  else f"{self.overlap_rows:,} overlap copies")
        s = (f"{self.database}.{self.table}: {self.rows:,} rows ({copies}) "
             f"in {len(self.files)} files, {verb}; {self.seconds:.1f} s, {rate:,.0f} rows/s")
        if self.rejected:
            s += f"; {self.rejected:,} rows rejected" + (f" (see {self.reject_file})" if self.reject_file else "")
        return s


# ------------------------------------------------------------------------------ helpers
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _file_digest(path: Path, stop: threading.Event | None = None) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(8 << 20), b""):
            if stop is not None and stop.is_set():
                return ""
            h.update(block)
    return h.hexdigest()


def _same_sizes(txn: Transaction, sizes: list[int]) -> bool:
    """Could ``txn`` have been an ingest of inputs of these sizes (unknown sizes: yes)?"""
    return len(txn.inputs) == len(sizes) and all(
        i.get("bytes") in (None, n) for i, n in zip(txn.inputs, sizes))


class _Digests:
    """Digests of the input files, computed on a background thread (hashlib releases the GIL)."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._digests: list[str] = []
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(list(paths),),
                                        name="ingest-digest", daemon=True)
        self._thread.start()

    def _run(self, paths: list[Path]) -> None:
        try:
            for p in paths:
                if self._stop.is_set():
                    return
                self._digests.append(_file_digest(p, self._stop))
        except BaseException as exc:  # noqa: BLE001 - handed to result()
            self._error = exc

    def result(self) -> list[str]:
        self._thread.join()
        if self._error is not None:
            raise IngestError(f"cannot read input for its digest: {self._error}") from self._error
        return list(self._digests)

    def cancel(self) -> None:
        self._stop.set()
        self._thread.join()


def _fingerprint(table: Table, partitioning: Partitioning | None, spec: InputSpec,
                 digests: list[str]) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({
        "table": table.name, "role": table.role,
        "columns": [(c.name, c.datatype) for c in table.columns],
        "partitioning": asdict(partitioning) if partitioning else None,
        "spec": repr(spec), "inputs": digests,
    }, sort_keys=True).encode())
    return h.hexdigest()


def _column_meta(table: Table) -> list[dict]:
    cols = [
        {k: v for k, v in dict(name=c.name, datatype=c.datatype, unit=c.unit, ucd=c.ucd,
                               description=c.description, nullable=c.nullable).items() if v is not None}
        for c in table.columns
    ]
    if table.role == "match":
        cols = match_columns(table, cols)
    return cols


def match_columns(table: Table, cols: list[dict]) -> list[dict]:
    """A match table's manifest columns: each director key marked with its director
    (``match_director``: 1 or 2, ``match_table``), and the flag column the partitioner adds
    (``match_flag``). The manifest has no fields of its own for a second director, so the
    columns carry them (czar/planner/match.py reads them back)."""
    out = [dict(c) for c in cols]
    for side, (director, key) in enumerate(table.match_directors, start=1):
        for c in out:
            if c["name"] == key:
                c["match_director"], c["match_table"] = side, director
    out.append({"name": table.flag_name, "datatype": "int", "nullable": False, "match_flag": True,
                "description": "Partitioning flags: 1 stored with the first director's row, 2 with the "
                               "second's, 3 both in this chunk (Qserv's sph-partition-matches)."})
    return out


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One ingest per table at a time (other processes wait)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def recover(directory: Path) -> list[str]:
    """Remove what an interrupted ingest left behind: staging and files not in the manifest."""
    removed: list[str] = []
    staging = directory / STAGING
    if staging.exists():
        shutil.rmtree(staging)
        removed.append(str(staging))
    listed = set()
    if (directory / MANIFEST).exists():
        listed = {f.path for f in load_manifest(directory).files}
    for kind in ("data", "overlap", "index"):
        d = directory / kind
        if not d.exists():
            continue
        for p in d.iterdir():
            rel = f"{kind}/{p.name}"
            if rel not in listed:
                p.unlink()
                removed.append(str(p))
    for tmp in directory.glob(f".{MANIFEST}.*.tmp"):
        tmp.unlink()
        removed.append(str(tmp))
    if removed:
        log.warning("removed leftovers of an interrupted ingest: %s", ", ".join(removed))
    return removed


def _new_manifest(database: str, table: Table, partitioning: Partitioning | None) -> TableManifest:
    return TableManifest(
        database=database, table=table.name, role=table.role, columns=_column_meta(table),
        chunker=asdict(partitioning) if partitioning and table.role != "replicated" else None,
        id_column=table.id_column, ra_column=table.ra_column, dec_column=table.dec_column,
        director=table.director, foreign_key=table.foreign_key,
    )


def _check_compatible(m: TableManifest, new: TableManifest, where: Path) -> None:
    for attr in ("role", "chunker", "id_column", "ra_column", "dec_column", "director", "foreign_key"):
        if getattr(m, attr) != getattr(new, attr):
            raise IngestError(f"table already holds data with {attr}={getattr(m, attr)!r}, "
                              f"this ingest has {attr}={getattr(new, attr)!r}", file=str(where))
    old_cols = [(c["name"], c["datatype"]) for c in m.columns]
    new_cols = [(c["name"], c["datatype"]) for c in new.columns]
    if old_cols != new_cols:
        raise IngestError("the table's columns differ from those already stored "
                          f"(stored {len(old_cols)}, new {len(new_cols)}); appends must keep the schema",
                          file=str(where))


def _batches_ahead(inputs: Sequence[Path], schema: pa.Schema, spec: InputSpec,
                   rejects: list[Reject]) -> Iterator[tuple[int, object]]:
    """Read batches on a thread so that parsing overlaps placement (both cores busy)."""
    q: queue.Queue = queue.Queue(maxsize=3)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for k, path in enumerate(inputs):
                for b in read_batches(path, schema, spec, rejects):
                    while not stop.is_set():
                        try:
                            q.put((k, b), timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
            q.put(done)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)

    t = threading.Thread(target=produce, name="ingest-reader", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        t.join(timeout=30)


class _Rejects:
    """Rows that could not be ingested, counted against the limit and written to a TSV file."""

    def __init__(self, limit: int, reader_rejects: list[Reject]) -> None:
        self.limit = limit
        self.reader = reader_rejects
        self.placed: list[Reject] = []

    @property
    def count(self) -> int:
        return len(self.reader) + len(self.placed)

    def add(self, rej: Reject) -> None:
        if self.limit <= 0:
            raise IngestError(rej.reason, file=rej.file, line=rej.line, column=rej.column)
        self.placed.append(rej)
        self.check()

    def check(self) -> None:
        if self.count > self.limit > 0:
            first = (self.reader + self.placed)[0]
            raise IngestError(
                f"more than {self.limit} bad rows (--skip-bad-rows {self.limit}); first: {first.reason}",
                file=first.file, line=first.line, column=first.column)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as fh:
            fh.write("file\tline\tcolumn\treason\ttext\n")
            for r in sorted(self.reader + self.placed, key=lambda r: (r.file, r.line)):
                text = (r.text or "").replace("\t", "\\t").replace("\n", "\\n")
                fh.write(f"{r.file}\t{r.line}\t{r.column or ''}\t{r.reason}\t{text}\n")


def _load_match_director(root: Path, database: str, table: Table, director: str,
                         partitioning: Partitioning, options: IngestOptions, tmp: Path) -> place.DirectorLookup:
    """A director's ids, chunks and positions (sorted by id), to place a match table's rows."""
    d = table_dir(root, database, director)
    try:
        m = load_manifest(d)
    except StoreError:
        a, b = (p[0] for p in table.match_directors)
        both = a if a == b else f"{a} and {b}"
        raise IngestError(f"director table {database}.{director} has not been ingested yet; match table "
                          f"{table.name} relates rows of {both}: ingest them before it", file=str(d)) from None
    if m.role != "director":
        raise IngestError(f"{database}.{director} is a {m.role} table; match table {table.name} needs a director",
                          file=str(d))
    if m.chunker != asdict(partitioning):
        raise IngestError(f"director {database}.{director} is partitioned with {m.chunker}, match table "
                          f"{table.name} with {asdict(partitioning)}: as in Qserv, a match table and its "
                          "directors must share one partitioning", file=str(d))
    files = [str(d / f.path) for f in m.files_of("data")]
    if not files:
        e = np.empty(0)
        return place.DirectorLookup(director, e.astype(np.int64), e.astype(np.int32), e.astype(np.int32), e, e)
    tmp.mkdir(parents=True, exist_ok=True)
    con = _duck(options, tmp)
    try:
        q = lambda c: '"' + c.replace('"', '""') + '"'
        t = con.sql(
            f"SELECT CAST({q(m.id_column)} AS BIGINT) AS id, {place.CHUNK_COL}, {place.SUB_CHUNK_COL}, "
            f"CAST({q(m.ra_column)} AS DOUBLE) AS ra, CAST({q(m.dec_column)} AS DOUBLE) AS dec "
            f"FROM read_parquet([{', '.join(repr(f) for f in files)}]) ORDER BY id").to_arrow_table()
    finally:
        con.close()
    return place.DirectorLookup(director, t.column("id").to_numpy(), t.column(place.CHUNK_COL).to_numpy(),
                                t.column(place.SUB_CHUNK_COL).to_numpy(), t.column("ra").to_numpy(),
                                t.column("dec").to_numpy())


def _load_director_index(root: Path, database: str, director: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = table_dir(root, database, director)
    try:
        m = load_manifest(d)
    except StoreError:
        raise IngestError(f"director table {database}.{director} has not been ingested yet; "
                          "ingest it before its children", file=str(d)) from None
    files = [str(d / f.path) for f in m.files_of("index")]
    if not files:
        return np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int32)
    t = pq.read_table(files, columns=["id", place.CHUNK_COL, place.SUB_CHUNK_COL])
    return (t.column("id").to_numpy(), t.column(place.CHUNK_COL).to_numpy(),
            t.column(place.SUB_CHUNK_COL).to_numpy())


# ------------------------------------------------------------------------------ the ingest
def ingest(root: str | os.PathLike, database: str, table: Table, inputs: Sequence[str | os.PathLike],
           partitioning: Partitioning | None = None, spec: InputSpec | None = None,
           options: IngestOptions | None = None,
           place_by_position: tuple[str, str] | None = None) -> IngestResult:
    """Ingest ``inputs`` into ``root/database/table.name`` as one transaction.

    ``partitioning`` is required for director and child tables. A child is placed in its
    director's chunk through the director index, or, with ``place_by_position=(ra, dec)``,
    by the director position its rows carry (Qserv's ``part.pos`` for children).
    """
    spec = spec or InputSpec()
    options = options or IngestOptions()
    if options.skip_bad_rows != spec.skip_bad_rows:
        spec = InputSpec(**{**asdict(spec), "skip_bad_rows": options.skip_bad_rows})
    root = Path(root)
    paths = [Path(p) for p in inputs]
    for p in paths:
        if not p.is_file():
            raise IngestError("input file not found", file=str(p))
    if table.role in ("director", "child", "match") and partitioning is None:
        raise IngestError(f"table {table.name} is a {table.role} table: partitioning parameters are required")
    if table.role == "match" and place_by_position is not None:
        raise IngestError(f"table {table.name} is a match table: it is placed through its directors' rows, "
                          "not by a position")
    directory = table_dir(root, database, table.name)
    t0 = time.perf_counter()
    with _locked(directory):
        recover(directory)
        fresh = _new_manifest(database, table, partitioning)
        manifest = load_manifest(directory) if (directory / MANIFEST).exists() else fresh
        if manifest is not fresh:
            _check_compatible(manifest, fresh, directory / MANIFEST)
        # The fingerprint hashes every input byte (a re-run is recognised whatever the files'
        # paths or times; size + mtime + Parquet footer would miss a same-size rewrite or call a
        # touched file new, and a re-ingested child table would silently double its rows).
        # Hashing costs a full read (~11% of an ingest when done first), so it runs alongside
        # the ingest unless a prior transaction could match: the digests enter the
        # fingerprint, so only a transaction with inputs of exactly these sizes, in this
        # order, can have this fingerprint.
        sizes = [p.stat().st_size for p in paths]
        hashing = _Digests(paths)
        if any(_same_sizes(t, sizes) for t in manifest.transactions):
            fp = _fingerprint(table, partitioning, spec, hashing.result())
            prior = manifest.find_transaction(fp)
            if prior is not None:
                return IngestResult(database, table.name, prior.id, rows=prior.rows,
                                    already_ingested=True, seconds=time.perf_counter() - t0)
        txn = manifest.next_txn()
        staging = directory / STAGING / f"txn-{txn}"
        staging.mkdir(parents=True, exist_ok=True)
        try:
            result, entries, stats, rejects = _run(root, database, table, paths, partitioning, spec,
                                                   options, txn, staging, manifest, place_by_position)
            result.seconds = time.perf_counter() - t0
            if options.abort:
                result.aborted = True
                return result
            digests = hashing.result()
            fp = _fingerprint(table, partitioning, spec, digests)
            if manifest.find_transaction(fp) is not None:  # pragma: no cover - sizes checked above
                raise IngestError("inputs changed while being ingested (their digests now match "
                                  "an earlier transaction); nothing was written")
            if rejects.count:
                rpath = directory / REJECTS / f"txn-{txn}.tsv"
                rejects.write(rpath)
                result.reject_file = str(rpath)
            _commit(directory, staging, manifest, entries, stats, Transaction(
                id=txn, started=_now(), committed="", fingerprint=fp,
                inputs=[{"path": str(p), "bytes": p.stat().st_size, "digest": d}
                        for p, d in zip(paths, digests)],
                rows=result.rows, rejected=result.rejected))
            result.txn = txn
            result.seconds = time.perf_counter() - t0
            return result
        finally:
            hashing.cancel()
            shutil.rmtree(directory / STAGING, ignore_errors=True)


def _run(root, database, table, paths, partitioning, spec, options, txn, staging, manifest,
         place_by_position):
    schema = table.arrow_schema()
    reader_rejects: list[Reject] = []
    rejects = _Rejects(options.skip_bad_rows, reader_rejects)
    result = IngestResult(database, table.name, None)
    progress = Progress(f"{database}.{table.name}", sum(count_bytes(p) for p in paths),
                        enabled=options.progress)
    stats: dict[int, ChunkStats] = {}
    entries: list[tuple[FileEntry, Path]] = []
    out = staging / "out"

    if table.role == "replicated":
        writer = _RollingWriter(out / "data", "replicated", txn, options)
        for k, b in _batches_ahead(paths, schema, spec, reader_rejects):
            rejects.check()
            writer.write(b.data)
            result.rows += b.data.num_rows
            progress.advance(b.data.num_rows, paths[k])
        entries = writer.close()
        result.files = [e.path for e, _ in entries]
        result.rejected = rejects.count
        progress.close(result.rows)
        return result, entries, stats, rejects

    chunker = Chunker(partitioning.num_stripes, partitioning.num_sub_stripes, partitioning.overlap)
    placed_schema = place.placed_schema(schema)
    lookups = None
    if table.role == "match":
        placed_schema = place.match_schema(schema, table.flag_name)
        (d1, _), (d2, _) = table.match_directors
        first = _load_match_director(root, database, table, d1, partitioning, options, staging / "tmp")
        lookups = (first, first if d2 == d1 else
                   _load_match_director(root, database, table, d2, partitioning, options, staging / "tmp"))
    data_spill = StripeSpill(staging / "spill-data", placed_schema, chunker.num_stripes)
    over_spill = StripeSpill(staging / "spill-overlap", placed_schema, chunker.num_stripes)
    index_dir = staging / "spill-index"
    index_dir.mkdir(parents=True)
    n_index = 0
    director_index = None
    if table.role == "child" and place_by_position is None:
        director_index = _load_director_index(root, database, table.director)
    file_names = [str(p) for p in paths]
    acc = place.StatsAccumulator()

    for k, b in _batches_ahead(paths, schema, spec, reader_rejects):
        rejects.check()
        batch = b.data
        if table.role == "director":
            placed = place.place_director(batch, chunker, table.ra_column, table.dec_column, table.id_column)
            column = table.ra_column
        elif lookups is not None:
            (_, key1), (_, key2) = table.match_directors
            placed = place.place_matches(batch, chunker, key1, key2, *lookups, table.flag_name)
            column = key1
        elif place_by_position is not None:
            placed = place.place_director(batch, chunker, *place_by_position, table.foreign_key)
            placed.overlap = None  # children carry no overlap
            column = place_by_position[0]
        else:
            placed = place.place_by_index(batch, table.foreign_key, *director_index, director=table.director)
            column = table.foreign_key
        for i, reason in zip(placed.bad_rows.tolist(), placed.bad_reason):
            line = int(b.line_numbers[i]) if b.line_numbers is not None else b.first_line + i
            col = column
            if lookups is not None and reason.startswith(f"{table.match_directors[1][1]}="):
                col = table.match_directors[1][1]  # the second director's id is at fault
            rejects.add(Reject(file=file_names[k], line=line, column=col, reason=reason, text=None))
        data_spill.write(placed.data)
        acc.add(placed.data, table.ra_column, table.dec_column)
        result.rows += placed.data.num_rows
        if lookups is not None:  # a match stored twice is one row of the table
            second = placed.data.num_rows - (batch.num_rows - placed.bad_rows.size)
            result.match_copies += second
            result.rows -= second
        if placed.overlap is not None:
            over_spill.write(placed.overlap)
            acc.add(placed.overlap, None, None, overlap=True)
            result.overlap_rows += placed.overlap.num_rows
        if table.role == "director":
            d = placed.data
            idx = pa.table({
                "id": d.column(table.id_column).cast(pa.int64()),
                place.CHUNK_COL: d.column(place.CHUNK_COL), place.SUB_CHUNK_COL: d.column(place.SUB_CHUNK_COL),
                "file": pa.array(np.full(d.num_rows, k, np.int32)),
            })
            pq.write_table(idx, str(index_dir / f"piece-{n_index:06d}.parquet"), compression="lz4")
            n_index += 1
        progress.advance(batch.num_rows, paths[k])
    data_spill.close()
    over_spill.close()
    progress.close(result.rows)
    stats.update(acc.result())

    if table.role == "director" and n_index:
        index_entries, dups = _write_index(index_dir, out / "index", txn, options)
        if dups:
            _raise_duplicates(dups, table, index_dir, paths, schema, spec, options)
        _check_stored_ids(root, database, table, index_dir, manifest, file_names, options)
        entries += index_entries
    entries += _write_chunk_files(data_spill, over_spill, stats, out, txn, options)
    result.files = [e.path for e, _ in entries]
    result.rejected = rejects.count
    return result, entries, stats, rejects


class _RollingWriter:
    """Writes a replicated table's batches into files of about rows_per_file rows."""

    def __init__(self, directory: Path, kind: str, txn: int, options: IngestOptions) -> None:
        self.directory, self.kind, self.txn, self.options = directory, kind, txn, options
        self.pending: list[pa.RecordBatch] = []
        self.rows = 0
        self.entries: list[tuple[FileEntry, Path]] = []

    def write(self, batch: pa.RecordBatch) -> None:
        self.pending.append(batch)
        self.rows += batch.num_rows
        if self.rows >= self.options.rows_per_file:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        t = pa.Table.from_batches(self.pending)
        name = f"part-{len(self.entries):05d}-{self.txn}.parquet"
        path = self.directory / name
        nbytes = write_parquet(t, path, self.options.row_group_rows)
        self.entries.append((FileEntry(self.kind, f"data/{name}", t.num_rows, nbytes, self.txn), path))
        self.pending, self.rows = [], 0

    def close(self) -> list[tuple[FileEntry, Path]]:
        self._flush()
        return self.entries


def _write_chunk_files(data_spill: StripeSpill, over_spill: StripeSpill, stats: dict[int, ChunkStats],
                       out: Path, txn: int, options: IngestOptions) -> list[tuple[FileEntry, Path]]:
    """Sorted data and overlap files, each a run of consecutive chunks of ~rows_per_file rows.

    A file is written as several sorted runs of at most ``run_memory_bytes`` (appended to one
    Parquet writer), so memory is bounded by the run, while files keep the size chosen for I/O.
    """
    counts = {c: s.rows + s.overlap_rows for c, s in stats.items()}
    # Runs are sorted in memory: cap their size by bytes too, so wide tables stay within budget.
    spilled = data_spill.rows + over_spill.rows
    row_bytes = (data_spill.bytes + over_spill.bytes) / max(spilled, 1)
    run_rows = min(options.rows_per_file, max(10_000, int(options.run_memory_bytes / max(row_bytes, 1))))
    groups = place.group_chunks(counts, options.rows_per_file)
    chunk_ids = np.array(sorted(counts), dtype=np.int64)

    def one(group: tuple[int, int]) -> list[tuple[FileEntry, Path]]:
        lo, hi = group
        a, b = np.searchsorted(chunk_ids, [lo, hi + 1])
        runs = place.group_chunks({c: counts[c] for c in chunk_ids[a:b].tolist()}, run_rows)
        made = []
        for kind, spill in (("data", data_spill), ("overlap", over_spill)):
            name = f"part-{lo}-{hi}-{txn}.parquet"
            path = out / kind / name
            bounds: list[int] = []

            def tables(spill: StripeSpill = spill, bounds: list[int] = bounds) -> Iterator[pa.Table]:
                for a, b in runs:
                    t = spill.read_range_sorted(a, b)
                    if t.num_rows:
                        cid = t.column(place.CHUNK_COL)
                        bounds[:] = [bounds[0] if bounds else int(cid[0].as_py()), int(cid[-1].as_py())]
                    yield t
                    del t  # written: free it before the next run is read

            rows, nbytes = write_parquet_runs(tables(), path, spill.schema, options.row_group_rows,
                                              [place.CHUNK_COL, place.SUB_CHUNK_COL])
            if rows == 0:
                continue
            made.append((FileEntry(kind, f"{kind}/{name}", rows, nbytes, txn,
                                   first_chunk=bounds[0], last_chunk=bounds[1]), path))
        return made

    with ThreadPoolExecutor(max_workers=max(1, options.threads)) as pool:
        return [e for made in pool.map(one, groups) for e in made]


def _duck(options: IngestOptions, tmp: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={"threads": max(1, options.threads), "memory_limit": options.memory_limit,
                                 "temp_directory": str(tmp)})
    con.execute("SET enable_progress_bar = false")  # our own progress reporting only
    return con


def _raise_duplicates(dups: list[int], table: Table, index_dir: Path, paths: Sequence[Path],
                      schema: pa.Schema, spec: InputSpec, options: IngestOptions) -> None:
    """Report director ids found more than once in this ingest, with file and row of each copy.

    Only the few duplicate ids are looked up: their files from the index pieces, then their
    rows by reading those files again (an error path, so the second read is acceptable).
    """
    con = _duck(options, index_dir / "tmp")
    try:
        ids = ", ".join(str(int(i)) for i in dups)
        hits = con.execute(f"SELECT DISTINCT file FROM read_parquet('{index_dir}/piece-*.parquet') "
                           f"WHERE id IN ({ids}) ORDER BY file").fetchall()
    finally:
        con.close()
    wanted = np.array(sorted(dups), np.int64)
    where: dict[int, list[tuple[str, int]]] = {int(i): [] for i in wanted}
    for (k,) in hits:
        for b in read_batches(paths[k], schema, spec, []):
            col = pc.fill_null(b.data.column(table.id_column).cast(pa.int64()), np.iinfo(np.int64).min)
            vals = col.to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(np.isin(vals, wanted)).tolist():
                line = int(b.line_numbers[i]) if b.line_numbers is not None else b.first_line + i
                # (in skip mode a copy rejected for its position would be listed too)
                where[int(vals[i])].append((str(paths[k]), line))

    def unit(f: str) -> str:
        fmt = spec.format or detect_format(f)
        return "line" if fmt.lower() in ("csv", "tsv") else "row"

    first = next(((i, w) for i, w in where.items() if len(w) > 1), None)
    shown = "; ".join(f"{i} ({len(w)} times: " + ", ".join(f"{f} {unit(f)} {n}" for f, n in w) + ")"
                      for i, w in where.items())
    raise IngestError(f"duplicate {table.id_column} values in this ingest: {shown}; "
                      "director ids must be unique",
                      file=first[1][1][0] if first else None, line=first[1][1][1] if first else None,
                      column=table.id_column)


def _check_stored_ids(root: Path, database: str, table: Table, index_dir: Path,
                      manifest: TableManifest, file_names: list[str], options: IngestOptions) -> None:
    """Refuse director ids that an earlier transaction already stored."""
    old = [str(table_dir(root, database, table.name) / f.path) for f in manifest.files_of("index")]
    if not old:
        return
    con = _duck(options, index_dir / "tmp")
    try:
        new = f"read_parquet('{index_dir}/piece-*.parquet')"
        files = ", ".join(f"'{p}'" for p in old)
        clash = con.execute(
            f"SELECT n.id, n.file FROM {new} n SEMI JOIN read_parquet([{files}]) o ON n.id = o.id "
            "ORDER BY n.id LIMIT 5").fetchall()
        if clash:
            ids = ", ".join(f"{i} (in {file_names[f]})" for i, f in clash)
            raise IngestError(f"{table.id_column} values already stored by an earlier transaction: "
                              f"{ids}; director ids must be unique across ingests")
    finally:
        con.close()


_MAX_DUPLICATES_SHOWN = 5


def _write_index(index_dir: Path, out: Path, txn: int,
                 options: IngestOptions) -> tuple[list[tuple[FileEntry, Path]], list[int]]:
    """Write the director index (id -> chunk) sorted by id; return its files and the first few
    ids that occur more than once (found on the way: equal ids are adjacent once sorted, so no
    separate GROUP BY over every id is needed)."""
    con = _duck(options, index_dir / "tmp")
    entries: list[tuple[FileEntry, Path]] = []
    dups: list[int] = []
    try:
        reader = con.sql(
            f"SELECT id, {place.CHUNK_COL}, {place.SUB_CHUNK_COL} FROM read_parquet('{index_dir}/piece-*.parquet') "
            "ORDER BY id").to_arrow_reader(min(options.rows_per_file, 1 << 20))
        pending: list[pa.RecordBatch] = []
        n_pending = 0
        last_id: int | None = None

        def flush() -> None:
            nonlocal pending, n_pending
            if not n_pending:
                return
            t = pa.Table.from_batches(pending).cast(INDEX_SCHEMA).combine_chunks()
            name = f"part-{len(entries):05d}-{txn}.parquet"
            path = out / name
            nbytes = write_parquet(t, path, options.row_group_rows, ["id"])
            ids = t.column("id")
            entries.append((FileEntry("index", f"index/{name}", t.num_rows, nbytes, txn,
                                      first_id=int(ids[0].as_py()), last_id=int(ids[-1].as_py())), path))
            pending, n_pending = [], 0

        for batch in reader:
            if batch.num_rows == 0:
                continue
            ids = batch.column(0).to_numpy()
            same = ids[1:][ids[1:] == ids[:-1]]
            if last_id is not None and int(ids[0]) == last_id:
                same = np.r_[ids[:1], same]
            last_id = int(ids[-1])
            for i in np.unique(same).tolist():
                if i not in dups:
                    dups.append(i)
            if dups:
                if len(dups) >= _MAX_DUPLICATES_SHOWN:
                    break
                continue  # the ingest fails: look for a few more duplicates, write nothing
            pending.append(batch)
            n_pending += batch.num_rows
            if n_pending >= options.rows_per_file:
                flush()
        if not dups:
            flush()
    finally:
        con.close()
    return entries, dups[:_MAX_DUPLICATES_SHOWN]


def _commit(directory: Path, staging: Path, manifest: TableManifest,
            entries: list[tuple[FileEntry, Path]], stats: dict[int, ChunkStats], txn: Transaction) -> None:
    """Move staged files into place, then replace the manifest: the commit point."""
    moved: list[Path] = []
    try:
        for entry, src in entries:
            dst = directory / entry.path
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            moved.append(dst)
        if os.environ.get("QENGINE_INGEST_CRASH_AT") == "before-manifest":
            os._exit(97)  # fault injection for tests: die between moving files and the commit point
        manifest.files.extend(e for e, _ in entries)
        place.merge_stats(manifest.chunks, stats)
        txn.committed = _now()
        manifest.transactions.append(txn)
        manifest.save(directory)
    except BaseException:
        for p in moved:
            with contextlib.suppress(OSError):
                p.unlink()
        raise
