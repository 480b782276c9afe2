"""``qengine catalog info|verify``: what a store holds, and whether every row is where it belongs."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from partitioner.place import CHUNK_COL, SUB_CHUNK_COL
from qengine.chunker import Chunker
from qengine.store import TableManifest, list_tables, load_manifest, table_dir


@dataclass
class TableInfo:
    database: str
    table: str
    role: str
    rows: int
    overlap_rows: int
    chunks: int
    files: int
    bytes: int
    transactions: int


def info(root: str | os.PathLike) -> list[TableInfo]:
    out = []
    for db, name in list_tables(root):
        m = load_manifest(table_dir(root, db, name))
        out.append(TableInfo(
            db, name, m.role, m.rows, sum(f.rows for f in m.files_of("overlap")),
            len(m.chunk_ids()), len(m.files), sum(f.bytes for f in m.files), len(m.transactions)))
    return out


@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, where: str, msg: str) -> None:
        if len(self.problems) < 200:
            self.problems.append(f"{where}: {msg}")


def _read(directory: Path, m: TableManifest, kind: str, columns: list[str]):
    files = [str(directory / f.path) for f in m.files_of(kind)]
    if not files:
        return None
    return pq.read_table(files, columns=columns)


def verify(root: str | os.PathLike) -> VerifyReport:
    """Check files against the manifest, chunk placement, overlap completeness and the index.

    Reads each table's id/position/chunk columns into memory (about 40 bytes a row).
    """
    rep = VerifyReport()
    root = Path(root)
    indexes: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = {}
    tables = list_tables(root)
    manifests = {(db, t): load_manifest(table_dir(root, db, t)) for db, t in tables}
    # Directors first: their index places the children.
    order = sorted(tables, key=lambda k: {"director": 0, "child": 1}.get(manifests[k].role, 2))
    for key in order:
        db, name = key
        m = manifests[key]
        d = table_dir(root, db, name)
        where = f"{db}.{name}"
        for f in m.files:
            p = d / f.path
            if not p.exists():
                rep.problem(where, f"file {f.path} listed in the manifest is missing")
                continue
            meta = pq.ParquetFile(p).metadata
            if meta.num_rows != f.rows:
                rep.problem(where, f"{f.path} holds {meta.num_rows} rows, manifest says {f.rows}")
            if os.path.getsize(p) != f.bytes:
                rep.problem(where, f"{f.path} is {os.path.getsize(p)} bytes, manifest says {f.bytes}")
        if m.role == "replicated" or rep.problems:
            rep.checked.append(f"{where}: {m.rows:,} rows, files match the manifest")
            continue
        ch = Chunker(**m.chunker)
        cols = [CHUNK_COL, SUB_CHUNK_COL]
        match = _match_columns(m) if m.role == "match" else None
        if m.role == "director":
            cols = [m.id_column, m.ra_column, m.dec_column] + cols
        elif match is not None:
            cols = [match[0][1], match[1][1], match[2]] + cols
        else:
            cols = [m.foreign_key] + cols
        data = _read(d, m, "data", cols)
        if data is None:
            continue
        cid = data.column(CHUNK_COL).to_numpy()
        scid = data.column(SUB_CHUNK_COL).to_numpy()
        # files are sorted runs of chunks
        for f in m.files_of("data") + m.files_of("overlap"):
            t = pq.read_table(d / f.path, columns=[CHUNK_COL, SUB_CHUNK_COL])
            c, s = t.column(0).to_numpy(), t.column(1).to_numpy()
            key_ = c.astype(np.int64) * 1_000_000 + s
            if np.any(np.diff(key_) < 0):
                rep.problem(where, f"{f.path} is not sorted by (chunkId, subChunkId)")
            if c.size and (c.min() != f.first_chunk or c.max() != f.last_chunk):
                rep.problem(where, f"{f.path} chunk range {c.min()}..{c.max()} differs from the manifest")
        counts = dict(zip(*np.unique(cid, return_counts=True)))
        for c, s in m.chunks.items():
            if counts.get(c, 0) != s.rows:
                rep.problem(where, f"chunk {c}: {counts.get(c, 0)} rows stored, manifest says {s.rows}")
        if m.role == "director":
            ids = data.column(m.id_column).to_numpy().astype(np.int64)
            ra = data.column(m.ra_column).to_numpy()
            dec = data.column(m.dec_column).to_numpy()
            want_c, want_s = ch.locate(ra, dec)
            wrong = np.flatnonzero((want_c != cid) | (want_s != scid))
            for i in wrong[:5].tolist():
                rep.problem(where, f"{m.id_column}={ids[i]} stored in chunk {cid[i]}/{scid[i]}, "
                                   f"belongs in {want_c[i]}/{want_s[i]}")
            # overlap: exactly the copies Qserv's rule asks for
            rows, oc, _ = ch.overlap_locations(ra, dec)
            expect = set(zip(ids[rows].tolist(), oc.tolist()))
            ov = _read(d, m, "overlap", [m.id_column, CHUNK_COL])
            have_list = [] if ov is None else list(zip(ov.column(0).to_numpy().astype(np.int64).tolist(),
                                                      ov.column(1).to_numpy().tolist()))
            have = set(have_list)
            if len(have) != len(have_list):
                rep.problem(where, "overlap holds a row twice for the same chunk")
            for i, c in sorted(expect - have)[:5]:
                rep.problem(where, f"overlap copy of {m.id_column}={i} for chunk {c} is missing")
            for i, c in sorted(have - expect)[:5]:
                rep.problem(where, f"overlap copy of {m.id_column}={i} for chunk {c} is not within the overlap")
            # index: one row per id, agreeing with the data
            idx = _read(d, m, "index", ["id", CHUNK_COL, SUB_CHUNK_COL])
            if idx is None:
                rep.problem(where, "director has no index files")
                continue
            iid = idx.column(0).to_numpy()
            if np.any(np.diff(iid) <= 0) and len(m.files_of("index")) == 1:
                rep.problem(where, "index is not sorted by id or holds duplicates")
            order_i = np.argsort(iid, kind="stable")
            iid_s = iid[order_i]
            if np.any(iid_s[1:] == iid_s[:-1]):
                rep.problem(where, f"duplicate ids in the index, e.g. {iid_s[1:][iid_s[1:] == iid_s[:-1]][0]}")
            order_d = np.argsort(ids, kind="stable")
            if iid_s.size != ids.size or not np.array_equal(iid_s, ids[order_d]):
                rep.problem(where, "index ids differ from the data's ids")
            else:
                ic = idx.column(1).to_numpy()[order_i]
                isc = idx.column(2).to_numpy()[order_i]
                if not (np.array_equal(ic, cid[order_d]) and np.array_equal(isc, scid[order_d])):
                    rep.problem(where, "index chunk/sub-chunk disagree with the data")
            indexes[key] = (iid_s, idx.column(1).to_numpy()[order_i])
            rep.checked.append(f"{where}: {ids.size:,} rows in their chunks, {len(have):,} overlap copies "
                               f"exact, index agrees")
        elif match is not None:
            _verify_match(rep, where, db, match, data, cid, indexes)
        else:
            dkey = (db, m.director)
            if dkey not in indexes:
                rep.problem(where, f"director table {db}.{m.director} is missing or has no index")
                continue
            iid, ic = indexes[dkey]
            fk = pc.fill_null(data.column(m.foreign_key).cast("int64"), -1).to_numpy()
            pos = np.clip(np.searchsorted(iid, fk), 0, max(iid.size - 1, 0))
            orphan = iid[pos] != fk
            if orphan.any():
                rep.problem(where, f"{int(orphan.sum())} rows whose {m.foreign_key} has no director row")
            misplaced = ~orphan & (ic[pos] != cid)
            if misplaced.any():
                rep.problem(where, f"{int(misplaced.sum())} rows not in their director's chunk")
            rep.checked.append(f"{where}: {fk.size:,} rows with their director")
    return rep


def _match_columns(m) -> tuple[tuple[str, str], tuple[str, str], str] | None:
    """((director 1, key 1), (director 2, key 2), flag column) from a match table's manifest."""
    keys = {c.get("match_director"): (c.get("match_table"), c["name"]) for c in m.columns
            if c.get("match_director") in (1, 2)}
    flag = next((c["name"] for c in m.columns if c.get("match_flag")), None)
    return (keys[1], keys[2], flag) if set(keys) == {1, 2} and flag else None


def _verify_match(rep: VerifyReport, where: str, db: str, match, data, cid: np.ndarray,
                  indexes: dict) -> None:
    """Each stored match row sits with a director row it names, and its flag says which: bit 0
    its first director row's chunk, bit 1 its second's (Qserv's sph-partition-matches)."""
    (d1, k1), (d2, k2), flag = match
    expect = np.zeros(cid.size, np.int64)
    for bit, (dname, key) in ((1, (d1, k1)), (2, (d2, k2))):
        if (db, dname) not in indexes:
            rep.problem(where, f"director table {db}.{dname} is missing or has no index")
            return
        iid, ic = indexes[(db, dname)]
        col = data.column(key)
        null = np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool)
        v = pc.fill_null(col.cast("int64"), -1).to_numpy()
        pos = np.clip(np.searchsorted(iid, v), 0, max(iid.size - 1, 0))
        found = (iid[pos] == v) & ~null if iid.size else np.zeros(v.size, bool)
        if (~null & ~found).any():
            rep.problem(where, f"{int((~null & ~found).sum())} rows whose {key} has no row in {dname}")
        expect += bit * (found & (ic[pos] == cid))
    got = data.column(flag).to_numpy()
    if (expect == 0).any():
        rep.problem(where, f"{int((expect == 0).sum())} rows in neither director row's chunk")
    if (got != expect).any():
        rep.problem(where, f"{int((got != expect).sum())} rows whose {flag} disagrees with their directors' chunks")
    rep.checked.append(f"{where}: {cid.size:,} match rows with their directors, {flag} exact "
                       f"({int((got == 2).sum()):,} second copies)")
