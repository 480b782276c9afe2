"""The science-realistic query suite: its queries, its data and its oracle.

Each query is a file in ``benchmarks/queries/`` with a header of ``-- key: value`` lines (id,
category, lang, question) and the SQL; a line ``-- oracle:`` starts the DuckDB SQL that checks
it, when translating the query itself cannot (Qserv's ``qserv_areaspec_*``). Templates take
parameters drawn from the data (``{oid}``, ``{oids}``, ``{ra}``, ``{dec}``, boxes), so every
scale asks about objects that exist.

The oracle is one DuckDB over the generated, unpartitioned Parquet files, with the same SQL
macros the workers use (``qengine.sqlfuncs``).
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from catalogs import sky
from czar.dialects import parse, to_duckdb

__all__ = [
    "SCALES",
    "Dataset",
    "SuiteQuery",
    "build",
    "compare",
    "load_queries",
    "oracle_connection",
    "run_oracle",
    "scanned_bytes",
]

QUERIES = Path(__file__).resolve().parent / "queries"

#: objects per catalogue at each scale (Sources and ForcedSources follow, ~12 and ~18 per Object)
SCALES = {
    "small": {"lsst_dr": 3_000, "sdss": 3_000, "ukidss": 3_000},
    "medium": {"lsst_dr": 10_000_000, "sdss": 1_000_000, "ukidss": 1_000_000},
    "large": {"lsst_dr": 50_000_000, "sdss": 5_000_000, "ukidss": 5_000_000},
}
#: the tables generated per catalogue (the suite's queries read only these)
TABLES = {"lsst_dr": None, "sdss": ["PhotoObjAll"], "ukidss": ["lasSource"]}
# small scale: dense fields, one across RA 0/360, so that cones and pairs find rows
_SMALL_FOOTPRINT = sky.Footprint("suite-small", (sky.Cap(0.5, -30.0, 3.0),),
                                 description="3 degrees around (0.5, -30): across RA 0/360")
_SMALL_FOOTPRINTS = {"sdss": sky.Footprint("suite-small-sdss", (sky.Cap(150.0, 2.0, 3.0),)),
                     "ukidss": sky.Footprint("suite-small-las", (sky.Cap(150.0, 2.0, 3.0),))}


@dataclass
class SuiteQuery:
    id: str
    category: str
    lang: str
    question: str
    sql: str
    oracle: str | None
    path: Path

    def render(self, params: dict) -> tuple[str, str | None]:
        return self.sql.format(**params), self.oracle.format(**params) if self.oracle else None

    @property
    def ordered(self) -> bool:
        return bool(re.search(r"\bORDER\s+BY\b", self.sql, re.IGNORECASE))

    @property
    def uploads(self) -> list[str]:
        return sorted(set(m.lower() for m in re.findall(r"TAP_UPLOAD\.(\w+)", self.sql, re.IGNORECASE)))


def load_queries(directory: Path = QUERIES) -> list[SuiteQuery]:
    """Every ``*.sql`` file of the suite, in file-name order."""
    out = []
    for path in sorted(directory.glob("*.sql")):
        head: dict[str, str] = {}
        body: list[str] = []
        oracle: list[str] | None = None
        for line in path.read_text().splitlines():
            m = re.match(r"^--\s*(\w+):\s*(.*)$", line)
            if m and m.group(1) == "oracle" and not m.group(2):
                oracle = []
            elif m and not body and oracle is None:
                head[m.group(1)] = m.group(2).strip()
            elif oracle is not None:
                oracle.append(line)
            else:
                body.append(line)
        missing = [k for k in ("id", "category", "lang", "question") if k not in head]
        if missing:
            raise ValueError(f"{path}: header lacks {', '.join(missing)}")
        out.append(SuiteQuery(head["id"], head["category"], head["lang"], head["question"],
                              "\n".join(body).strip(), "\n".join(oracle).strip() if oracle else None, path))
    return out


#: child tables generated for the first N objects only at a scale (disk: 180M ForcedSources at
#: ``medium`` would be ~15 GB of input plus ~15 GB stored; Q08 needs only its object's rows)
CHILD_OBJECTS = {"medium": {"ForcedSource": 2_000_000}, "large": {"ForcedSource": 2_000_000}}
#: scales whose generated inputs are kept after ingest (larger ones delete them to save disk: the
#: oracle then reads the store's data files, the same rows without the partitioning)
KEEP_INPUTS = {"small"}
#: tables whose generated files are kept for the oracle at a scale (moved to ``oracle-input/``): the
#: Object table in its generated, sky-unordered form, so DuckDB's cone and box searches over it are
#: the full scans the czar issue's target compares with (the store's files, sorted by chunk, would
#: let DuckDB prune row groups on position statistics)
ORACLE_INPUTS = {"medium": {"Object"}, "large": {"Object"}}


@dataclass
class Dataset:
    """Generated inputs (per ``database.table``) and the store they were ingested into.

    ``inputs`` are the unpartitioned files the oracle reads: the generated ones, or, when those
    were deleted after ingest (``stored``), the store's ``data/`` files (each row once; the
    ``chunkId``/``subChunkId`` columns are dropped by the oracle's views).
    """

    scale: str
    root: Path
    inputs: dict[str, list[Path]] = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    uploads: dict[str, pa.Table] = field(default_factory=dict)
    stored: set[str] = field(default_factory=set)
    objects: dict[str, int] = field(default_factory=dict)


def _groups(cat, scale: str, n: int, tables: list[str] | None) -> list[tuple[list[str], int]]:
    """(tables, objects) generation passes for one catalogue: children limited by
    ``CHILD_OBJECTS`` get their own pass over fewer objects (same seed: same first objects)."""
    names = tables or list(cat.tables)
    limited = {k.lower(): v for k, v in CHILD_OBJECTS.get(scale, {}).items()}
    main = [t for t in names if t.lower() not in limited or limited[t.lower()] >= n]
    out = [(main, n)] if main else []
    for t in names:
        if t not in main:
            out.append(([t], limited[t.lower()]))
    return out


def build(scale: str, directory: Path, *, seed: int = 7, progress: bool = False,
          objects: dict[str, int] | None = None, log=None) -> Dataset:
    """Generate the suite's catalogues into ``directory`` and ingest them (once: cached).

    Every table is generated, ingested and marked done on its own (``done/<db>.<table>``), so
    an interrupted build resumes where it stopped; at scales not in ``KEEP_INPUTS`` a pass's
    generated files are deleted once its tables are ingested.
    """
    from catalogs.generate import generate
    from partitioner.ingest import IngestOptions, ingest
    from qengine.catalog import load_catalog

    say = log or (lambda msg: None)
    sizes = dict(SCALES[scale], **(objects or {}))
    directory = Path(directory)
    root = directory / "store"
    done = directory / "BUILT"
    marks = directory / "done"
    keep = scale in KEEP_INPUTS
    ds = Dataset(scale, root)
    for name, n in sizes.items():
        cat = load_catalog(name)
        rank = {"director": 0, "child": 1}
        fp = (_SMALL_FOOTPRINTS.get(name, _SMALL_FOOTPRINT) if scale == "small" else "survey")
        for k, (tables, n_obj) in enumerate(_groups(cat, scale, n, TABLES[name])):
            out = directory / "input" / name / (str(k) if k else "")
            order = sorted((cat.tables[t] for t in tables), key=lambda t: rank.get(t.role, 2))
            todo = [t for t in order if not done.exists() and not (marks / f"{cat.database}.{t.name}").exists()]
            if todo:
                t0 = time.perf_counter()
                say(f"generating {name} {[t.name for t in todo]} for {n_obj:,} objects into {out}")
                # directors are regenerated for a child-only pass, but only written when wanted
                need = [t.name for t in todo]
                files = generate(cat, n_obj, out, seed=seed, tables=need, footprint=fp, progress=progress)
                say(f"generated in {time.perf_counter() - t0:.0f} s")
                for t in todo:
                    t0 = time.perf_counter()
                    r = ingest(root, cat.database, t, list(files[t.name]), partitioning=cat.partitioning,
                               options=IngestOptions(progress=progress))
                    say(f"ingested {cat.database}.{t.name}: {r.rows:,} rows in {time.perf_counter() - t0:.0f} s")
                    marks.mkdir(parents=True, exist_ok=True)
                    (marks / f"{cat.database}.{t.name}").write_text(f"{r.rows}\n")
                    if not keep:
                        kept = directory / "oracle-input" / name / t.name
                        if t.name in ORACLE_INPUTS.get(scale, ()):
                            kept.mkdir(parents=True, exist_ok=True)
                        for f in files[t.name]:
                            if kept.is_dir():
                                Path(f).replace(kept / Path(f).name)
                            else:
                                Path(f).unlink()
            for t in order:
                key = f"{cat.database}.{t.name}"
                gen = sorted((out / t.name).glob("*.parquet"))
                kept = sorted((directory / "oracle-input" / name / t.name).glob("*.parquet"))
                if gen and (keep or done.exists()):
                    ds.inputs[key] = gen
                elif kept:
                    ds.inputs[key] = kept
                else:
                    ds.inputs[key] = sorted((root / cat.database / t.name / "data").glob("*.parquet"))
                    ds.stored.add(key)
                ds.objects[key] = n_obj
    done.write_text(time.strftime("%Y-%m-%d %H:%M:%S\n"))
    ds.params, ds.uploads = _parameters(ds, seed)
    return ds


def _parameters(ds: Dataset, seed: int) -> tuple[dict, dict[str, pa.Table]]:
    """Values for the templates, drawn from the data: an object with a long light curve, a list
    of ids, field centres on real objects, a target list to upload."""
    con = duckdb.connect()
    src = _scan(ds.inputs["dp02.Source"])
    obj = _scan(ds.inputs["dp02.Object"])
    # the light-curve object must have forced photometry too (generated for the first objects only
    # at larger scales: those have the smallest ids)
    top = con.execute(f"SELECT max(objectId) FROM {_scan(ds.inputs['dp02.ForcedSource'])}").fetchone()[0]
    oid = con.execute(f"SELECT objectId FROM {src} WHERE objectId <= {top} GROUP BY objectId "
                      "ORDER BY count(*) DESC, objectId LIMIT 1").fetchone()[0]
    ra, dec = con.execute(f"SELECT coord_ra, coord_dec FROM {obj} WHERE objectId = {oid}").fetchone()
    rng = np.random.default_rng(seed)
    ids = con.execute(f"SELECT objectId FROM {obj} ORDER BY objectId").fetchnumpy()["objectId"]
    oids = sorted(rng.choice(ids, min(20, ids.size), replace=False).tolist())
    sd = _scan(ds.inputs["sdss.PhotoObjAll"])
    sra, sdec = con.execute(f"SELECT ra, decl FROM {sd} ORDER BY objID LIMIT 1").fetchone()
    half = 0.5 / max(math.cos(math.radians(dec)), 0.05)
    params = {"oid": oid, "oids": ", ".join(map(str, oids)), "ra": ra, "dec": dec,
              "ra_lo": (ra - half) % 360, "ra_hi": (ra + half) % 360, "dec_lo": dec - 0.5, "dec_hi": dec + 0.5,
              "ra_lo2": (ra - 2 * half) % 360, "ra_hi2": (ra + 2 * half) % 360,
              "dec_lo2": dec - 1.0, "dec_hi2": dec + 1.0}
    # the SDSS box query runs in SDSS's own footprint
    params.update(sdss_ra_lo=sra - 1, sdss_ra_hi=sra + 1, sdss_dec_lo=sdec - 1, sdss_dec_hi=sdec + 1)
    # targets: 30 catalogue objects moved by up to 0.5 arcsec, and 10 random positions near them
    near = con.execute(f"SELECT objectId, coord_ra, coord_dec FROM {obj} ORDER BY objectId").fetchnumpy()
    pick = rng.choice(near["objectId"].size, min(30, near["objectId"].size), replace=False)
    jitter = rng.uniform(-0.5, 0.5, (2, pick.size)) / 3600
    t_ra = np.r_[near["coord_ra"][pick] + jitter[0] / np.cos(np.radians(near["coord_dec"][pick])),
                 ra + rng.uniform(-0.5, 0.5, 10)] % 360
    t_dec = np.r_[near["coord_dec"][pick] + jitter[1], dec + rng.uniform(-0.5, 0.5, 10)]
    targets = pa.table({"target": pa.array([f"T{i:03d}" for i in range(t_ra.size)]),
                        "ra": pa.array(t_ra), "dec": pa.array(t_dec)})
    return params, {"targets": targets}


def _scan(files: list[Path], stored: bool = False) -> str:
    """A relation over ``files``; store files without their partitioning columns."""
    rel = "read_parquet([" + ", ".join(f"'{f}'" for f in files) + "])"
    drop = [c for c in ("chunkId", "subChunkId") if stored and files and c in pq.read_schema(files[0]).names]
    return f"(SELECT * EXCLUDE ({', '.join(drop)}) FROM {rel})" if drop else rel


def oracle_connection(ds: Dataset, threads: int = 2) -> duckdb.DuckDBPyConnection:
    """One DuckDB over the unpartitioned inputs: ``db.table`` views, uploads, the SQL macros."""
    from qengine.sqlfuncs import register

    con = duckdb.connect(config={"threads": threads})
    register(con)
    for name, files in ds.inputs.items():
        db, table = name.split(".")
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{db}"')
        con.execute(f'CREATE OR REPLACE VIEW "{db}"."{table}" AS SELECT * FROM {_scan(files, name in ds.stored)}')
    # unqualified names (Qserv-dialect queries) resolve in the LSST database, as `USE dp02` would
    con.execute("SET search_path = 'dp02,main'")
    con.execute('CREATE SCHEMA IF NOT EXISTS "TAP_UPLOAD"')
    for name, t in ds.uploads.items():
        con.register(f"__upload_{name}", t)
        con.execute(f'CREATE OR REPLACE VIEW "TAP_UPLOAD"."{name}" AS SELECT * FROM "__upload_{name}"')
    return con


def run_oracle(con: duckdb.DuckDBPyConnection, q: SuiteQuery, params: dict) -> pa.Table:
    sql, oracle = q.render(params)
    return con.sql(oracle or to_duckdb(parse(sql, q.lang))).to_arrow_table()


def _norm(v):
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def compare(got: pa.Table, want: pa.Table, ordered: bool, rel: float = 1e-9) -> str | None:
    """None when equal (floats to ``rel``; row order only when ``ordered``), else what differs."""
    if got.num_columns != want.num_columns:
        return f"{got.num_columns} columns, expected {want.num_columns} ({got.column_names} vs {want.column_names})"
    g = [tuple(_norm(x) for x in r) for r in zip(*[c.to_pylist() for c in got.columns])]
    w = [tuple(_norm(x) for x in r) for r in zip(*[c.to_pylist() for c in want.columns])]
    if len(g) != len(w):
        return f"{len(g)} rows, expected {len(w)}"
    if not ordered:
        key = lambda r: tuple((x is None, round(x, 6) if isinstance(x, float) else x) for x in r)
        try:
            g, w = sorted(g, key=key), sorted(w, key=key)
        except TypeError:
            g, w = sorted(g, key=repr), sorted(w, key=repr)
    for i, (a, b) in enumerate(zip(g, w)):
        for x, y in zip(a, b):
            if isinstance(x, float) and isinstance(y, float):
                if not math.isclose(x, y, rel_tol=rel, abs_tol=1e-12):
                    return f"row {i}: {a} != {b}"
            elif x != y:
                return f"row {i}: {a} != {b}"
    return None


def footer_rows(files: list[Path]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


# ---------------------------------------------------------------------------- bytes scanned
@cache
def _row_groups(path: str) -> tuple[tuple[int | None, int | None, dict[str, int]], ...]:
    """Per row group of a Parquet file: chunkId min, max, and compressed bytes per column."""
    md = pq.ParquetFile(path).metadata
    out = []
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        sizes: dict[str, int] = {}
        lo = hi = None
        for j in range(rg.num_columns):
            c = rg.column(j)
            sizes[c.path_in_schema.lower()] = c.total_compressed_size
            if c.path_in_schema == "chunkId" and c.statistics is not None and c.statistics.has_min_max:
                lo, hi = c.statistics.min, c.statistics.max
        out.append((lo, hi, sizes))
    return tuple(out)


@cache
def _manifest(table_dir: str) -> dict:
    import json
    return json.loads((Path(table_dir) / "_table.json").read_text())


def scanned_bytes(root: Path, explain) -> int:
    """Estimated Parquet bytes a query's worker SQL reads: for every ``{{db.T|cols}}`` table
    placeholder of every worker's SQL, the compressed size of the named columns (every column
    without a list; plus chunkId and subChunkId, as the worker binds them) in the row groups
    of T's store files whose chunkId range holds a chunk that worker visits (every row group
    for replicated tables and the director index).

    An estimate from the Parquet footers, not a measurement: workers do not report bytes read
    (``worker.executor.QueryStats`` has rows, chunks and files). It can overstate what DuckDB
    reads (row-group pruning on other columns' statistics, e.g. a declination range inside a
    chunk, is not modelled) and leaves out the czar's director-index lookup for id queries.
    """
    from worker.inventory import PLACEHOLDER

    total = 0
    dirs = {(d.parent.name.lower(), d.name.lower()): d for d in Path(root).glob("*/*") if d.is_dir()}
    for w in (explain.per_worker or {}).values():
        chunks = np.asarray(w.get("chunks") or [], dtype=np.int64)
        for m in PLACEHOLDER.finditer(w["sql"]):
            db, name, cols = m.groups()
            kind, base = "data", name
            for suffix, k in (("__overlap", "overlap"), ("__index", "index")):
                if name.lower().endswith(suffix):
                    kind, base = k, name[: -len(suffix)]
            tdir = dirs.get((db.lower(), base.lower()))
            if tdir is None:  # TAP_UPLOAD tables live in the czar's memory, not on disk
                continue
            man = _manifest(str(tdir))
            by_chunk = kind in ("data", "overlap") and man["role"] != "replicated" and chunks.size > 0
            want = None if cols is None else {c.strip().lower() for c in cols.split(",")} | {"chunkid", "subchunkid"}
            for f in man["files"]:
                if f["kind"] != kind:
                    continue
                if by_chunk and not np.any((chunks >= f["first_chunk"]) & (chunks <= f["last_chunk"])):
                    continue
                for lo, hi, sizes in _row_groups(str(tdir / f["path"])):
                    if by_chunk and lo is not None and not np.any((chunks >= lo) & (chunks <= hi)):
                        continue
                    total += sum(v for k, v in sizes.items() if want is None or k in want)
    return total
