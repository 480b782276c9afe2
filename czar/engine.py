"""The czar: plan, pick workers for chunks, fan out over gRPC, merge the streamed Arrow results.

One sub-query per worker covers all the chunks it serves for the query (never one call per
chunk). Results stream back concurrently; the first error or a satisfied LIMIT cancels the rest.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from czar.metadata import Metadata, TableInfo
from czar.compose import Steps, needs_steps
from czar.dialects import parse, to_duckdb
from czar.plan import PARTS, Plan, plan_query
from qengine.errors import QEngineError, QueryError
from qengine.workerclient import ExecuteSummary, WorkerClient, WorkerError
from qengine.sqlfuncs import register

log = logging.getLogger(__name__)

__all__ = ["Czar", "Explain"]

INTERACTIVE_MAX_CHUNKS = 16
_EMPTY = np.empty(0, np.int64)


@dataclass
class Explain:
    chunks: list[int] | None
    num_chunks: int
    regions: list[str]
    per_worker: dict[str, dict]
    merge_sql: str
    count_from_stats: int | None = None
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"chunks visited: {self.num_chunks}" + (f" {self.chunks[:20]}{' ...' if self.num_chunks > 20 else ''}"
                                                          if self.chunks is not None else "")]
        lines += [f"region: {r}" for r in self.regions]
        for w, d in self.per_worker.items():
            lines.append(f"worker {w}: {len(d['chunks'])} chunks\n  {d['sql']}")
        lines.append(f"merge: {self.merge_sql}")
        lines += self.notes
        return "\n".join(lines)


class Czar:
    """Plans and runs queries on a set of workers, given the tables' metadata."""

    def __init__(self, metadata: Metadata, workers: list[WorkerClient]) -> None:
        if not workers:
            raise QEngineError("a czar needs at least one worker")
        self.metadata = metadata
        self.workers = workers
        self._holdings: dict[str, dict[tuple[str, str], np.ndarray]] = {}
        self._merge = duckdb.connect(config={"threads": 2, "autoinstall_known_extensions": False,
                                             "autoload_known_extensions": False})
        register(self._merge, persistent=True)  # every cursor sees them
        self._merge_lock = threading.Lock()
        self._running: dict[str, dict] = {}
        self.refresh()

    # ------------------------------------------------------------------ cluster state
    def refresh(self) -> None:
        """Reload table metadata and each worker's inventory."""
        self.metadata.reload()
        for w in self.workers:
            inv = w.inventory()
            self._holdings[w.address] = {(t.database.lower(), t.table.lower()): np.asarray(sorted(t.chunk_ids), np.int64)
                                         for t in inv.tables}

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self._merge.close()

    # ------------------------------------------------------------------ planning
    def _lookup_ids(self, plan: Plan) -> list[int]:
        t = plan.index_table
        sql = (f"SELECT DISTINCT chunkId FROM {{{{{t.database}.{t.name}__index}}}} "
               f"WHERE {plan.id_restriction.sql_condition('id')}")
        holder = next((w for w in self.workers if self._holdings[w.address].get((t.database.lower(), t.name.lower()),
                                                                                 _EMPTY).size),
                      self.workers[0])
        res = holder.query(sql, lane="interactive")
        return sorted(res.column(0).to_pylist()) if res.num_columns else []

    def _assign(self, plan: Plan, chunks: "list[int] | np.ndarray") -> dict[str, np.ndarray]:
        """Chunks per worker: contiguous runs balanced by rows among the workers holding them.

        Vectorised: a full scan assigns ~10^5 chunks per query.
        """
        t = plan.table
        keys = [(x.database.lower(), x.name.lower()) for x in (plan.tables or [t])]
        want = np.asarray(chunks, dtype=np.int64)
        if want.size == 0:
            return {}
        # a worker serves a chunk only if it holds it for every co-located table of the query
        holders = {}
        for w in self.workers:
            arrays = [self._holdings[w.address].get(k, _EMPTY) for k in keys]
            held = arrays[0]
            for a in arrays[1:]:
                held = np.intersect1d(held, a, assume_unique=True)
            if held.size:
                holders[w.address] = held
        covered = np.zeros(want.size, dtype=bool)
        full = []
        for addr, held in holders.items():
            inside = np.isin(want, held, assume_unique=True)
            covered |= inside
            full.append(bool(inside.all()))
        if not covered.all():
            missing = want[~covered][:10].tolist()
            raise QueryError(f"no live worker holds chunk(s) {missing} of {t.database}.{t.name}")
        addrs = list(holders)
        weights = t.chunk_row_weights(want)
        if all(full):
            cum = np.cumsum(weights)
            cuts = np.searchsorted(cum, cum[-1] * np.arange(1, len(addrs)) / len(addrs), side="left")
            pieces = np.split(want, cuts)
            return {a: p for a, p in zip(addrs, pieces) if p.size}
        out: dict[str, list[int]] = {a: [] for a in addrs}
        load = {a: 0 for a in addrs}
        sets = {a: set(h.tolist()) for a, h in holders.items()}
        for c, wgt in zip(want.tolist(), weights.tolist()):
            a = min((a for a in addrs if c in sets[a]), key=lambda a: load[a])
            out[a].append(c)
            load[a] += wgt
        return {a: np.asarray(cs, dtype=np.int64) for a, cs in out.items() if cs}

    def _chunks(self, plan: Plan) -> np.ndarray:
        """The chunk ids to visit, sorted."""
        if plan.id_restriction is not None:
            found = self._lookup_ids(plan)
            chunks = sorted(set(found) & (plan.table.chunk_set() if plan.chunks is None else set(plan.chunks)))
            return np.asarray(chunks, dtype=np.int64)
        if plan.chunks is None:
            return plan.table.chunk_array()
        return np.asarray(plan.chunks, dtype=np.int64)

    def explain(self, sql: str, *, lang: str = "adql", database: str | None = None) -> Explain:
        tree = parse(sql, lang)
        if needs_steps(tree):
            raise QueryError("this query runs in several steps (it has subqueries, WITH or UNION/INTERSECT/"
                             "EXCEPT): explain its SELECTs one by one")
        plan = plan_query(sql, self.metadata, lang=lang, database=database, tree=tree)
        if plan.count_from_stats is not None:
            return Explain(None, 0, [], {}, plan.merge_sql, plan.count_from_stats,
                           [f"answered from table statistics: {plan.count_from_stats} rows"])
        if not plan.table.partitioned:
            w = self.workers[0].address
            return Explain(None, 0, [], {w: {"chunks": [], "sql": plan.worker_sql}}, plan.merge_sql)
        chunks = self._chunks(plan)
        per = {a: {"chunks": cs.tolist(), "sql": plan.worker_sql} for a, cs in self._assign(plan, chunks).items()}
        return Explain(chunks.tolist(), len(chunks), plan.regions, per, plan.merge_sql)

    # ------------------------------------------------------------------ execution
    def query(self, sql: str, *, lang: str = "adql", database: str | None = None,
              max_rows: int = 0, timeout: float = 0.0, query_id: str | None = None,
              maxrec: int | None = None, uploads: dict[str, pa.Table] | None = None) -> pa.Table:
        """Run a query; returns a pyarrow Table with unit/UCD/description field metadata.

        ``query_id`` names the query for :meth:`cancel` (from another thread). ``max_rows`` is a
        hard limit (an answer with more rows is an error); ``maxrec`` is TAP's MAXREC: the first
        ``maxrec`` rows of the answer, with schema metadata ``qengine.overflow = true`` when
        there were more. ``uploads`` are tables the query may read as ``TAP_UPLOAD.<name>``."""
        t0 = time.perf_counter()
        if maxrec is not None and maxrec < 0:
            raise QueryError(f"MAXREC must be 0 or more, got {maxrec}")
        qid = query_id or uuid.uuid4().hex
        tree = parse(sql, lang)
        if needs_steps(tree):  # subqueries, WITH, set operations: several passes (czar/compose.py)
            steps = Steps(run_select=lambda t, ups: self._answer(sql, t, lang, database, None, ups, max_rows,
                                                                  timeout, qid),
                          run_local=self._run_local, translate=to_duckdb, uploads=dict(uploads or {}))
            result = steps.answer(tree)
        else:
            result = self._answer(sql, tree, lang, database, maxrec, uploads, max_rows, timeout, qid)
        log.info("query done in %.3f s: %d rows", time.perf_counter() - t0, result.num_rows)
        return _truncate(result, maxrec)

    def _answer(self, sql: str, tree, lang: str, database: str | None, maxrec: int | None,
                uploads: dict[str, pa.Table] | None, max_rows: int, timeout: float, qid: str) -> pa.Table:
        """One plain SELECT through the cluster: plan, fan out, merge."""
        plan = plan_query(sql, self.metadata.with_uploads(uploads), lang=lang, database=database,
                          maxrec=maxrec, tree=tree)
        if plan.count_from_stats is not None:
            return pa.table({plan.count_name: pa.array([plan.count_from_stats], pa.int64())})
        if plan.table.partitioned:
            chunks = self._chunks(plan)
            assignment = self._assign(plan, chunks) if chunks.size else {}
        else:
            assignment = {self.workers[0].address: None}
        batches, schema = self._fan_out(plan, assignment, max_rows, timeout, qid, uploads)
        return self._run_merge(plan, batches, schema)

    def _run_local(self, sql: str, tables: dict[str, pa.Table]) -> pa.Table:
        """DuckDB SQL over Arrow tables in the czar (the last step of a composite query)."""
        with self._merge_lock:
            cur = self._merge.cursor()
        try:
            for name, t in tables.items():
                cur.register(name, t)
            return cur.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise QueryError(f"cannot combine the parts of the query: {exc}") from None
        finally:
            cur.close()

    def cancel(self, query_id: str) -> bool:
        """Stop every worker's part of a running query; False if it is not running."""
        with self._merge_lock:
            parts = self._running.get(query_id)
        if parts is None:
            return False
        parts["cancelled"] = True
        for addr in parts["workers"]:
            try:
                self._client(addr).cancel(f"{query_id}-{addr}")
            except WorkerError:
                pass
        return True

    def _client(self, addr: str) -> WorkerClient:
        return next(w for w in self.workers if w.address == addr)

    def _fan_out(self, plan: Plan, assignment: dict[str, list[int] | None], max_rows: int,
                 timeout: float, qid: str, uploads: dict[str, pa.Table] | None = None,
                 ) -> tuple[list[pa.RecordBatch], pa.Schema | None]:
        with self._merge_lock:
            if qid in self._running:
                raise QueryError(f"a query with id {qid} is already running")
            state = self._running[qid] = {"workers": list(assignment), "cancelled": False}
        try:
            return self._fan_out_inner(plan, assignment, max_rows, timeout, qid, state, uploads)
        finally:
            with self._merge_lock:
                self._running.pop(qid, None)

    def _fan_out_inner(self, plan, assignment, max_rows, timeout, qid, state, uploads):
        clients = {w.address: w for w in self.workers}
        out: queue.Queue = queue.Queue()
        stop = threading.Event()
        summaries = {a: ExecuteSummary() for a in assignment}
        lane = "interactive" if all(cs is not None and len(cs) <= INTERACTIVE_MAX_CHUNKS
                                    for cs in assignment.values()) else "scan"

        def run(addr: str, chunks: list[int] | None) -> None:
            kw = dict(query_id=f"{qid}-{addr}", chunk_ids=chunks, max_rows=max_rows, lane=lane,
                      timeout_seconds=timeout, uploads=uploads, summary=summaries[addr])
            try:
                if lane == "interactive":  # small: one unary call, unless it is too big after all
                    table = clients[addr].execute_small(plan.worker_sql, **kw)
                    if table is not None:
                        for b in table.to_batches():
                            out.put(("batch", b))
                        out.put(("done", addr))
                        return
                for b in clients[addr].execute(plan.worker_sql, **kw):
                    if stop.is_set():
                        return
                    out.put(("batch", b))
                out.put(("done", addr))
            except WorkerError as exc:
                out.put(("error", exc))
            except Exception as exc:  # a bug or a broken connection: still report it, never hang
                out.put(("error", exc))

        if lane == "interactive" and len(assignment) == 1:
            threads = []  # one small call: in this thread (a thread start costs as much as the call)
            run(*next(iter(assignment.items())))
        else:
            threads = [threading.Thread(target=run, args=(a, cs), daemon=True) for a, cs in assignment.items()]
            for th in threads:
                th.start()
        batches: list[pa.RecordBatch] = []
        rows = 0
        pending = len(assignment)
        error: Exception | None = None
        limit = plan.worker_limit if not plan.merge_needs_all else None
        while pending:
            kind, item = out.get()
            if kind == "batch":
                batches.append(item)
                rows += item.num_rows
                if limit is not None and rows >= limit:
                    break
            elif kind == "done":
                pending -= 1
            else:
                error = item
                break
        if pending:
            stop.set()
            for a in assignment:
                try:
                    clients[a].cancel(f"{qid}-{a}")
                except WorkerError:
                    pass
        for th in threads:
            th.join(timeout=5)
        if error is not None:
            if state["cancelled"]:
                raise QueryError("query cancelled") from None
            if isinstance(error, WorkerError):
                raise QueryError(f"worker {error.worker}: {error}") from None
            raise QEngineError(f"query failed: {error!r}") from error
        schema = next((s.schema for s in summaries.values() if s.schema is not None), None)
        return batches, schema

    def _run_merge(self, plan: Plan, batches: list[pa.RecordBatch], schema: pa.Schema | None) -> pa.Table:
        if batches:
            parts = pa.Table.from_batches(batches)
        elif schema is not None:
            parts = schema.empty_table()
        else:  # no chunk to visit: run the worker SQL's shape over nothing
            parts = None
        if parts is not None and plan.merge_rename is not None \
                and (not plan.merge_rename or set(plan.merge_rename) == set(parts.column_names)):
            # a plain row query: the merge would only rename and slice, so skip DuckDB
            if plan.merge_rename:
                parts = parts.select(list(plan.merge_rename)).rename_columns(list(plan.merge_rename.values()))
            end = None if plan.merge_limit is None else plan.merge_offset + plan.merge_limit
            if plan.merge_offset or end is not None:
                parts = parts.slice(plan.merge_offset, None if end is None else max(0, end - plan.merge_offset))
            return _with_metadata(parts, plan)
        with self._merge_lock:
            cur = self._merge.cursor()
        try:
            if parts is None:
                empty_sql = plan.worker_sql
                for i, (ph, info) in enumerate(plan.table_placeholders.items()):
                    empty_sql = empty_sql.replace(ph, f"(SELECT * FROM {PARTS}_empty{i})")
                    cur.register(f"{PARTS}_empty{i}", _empty_table(info))
                parts = cur.sql(empty_sql).to_arrow_table()
            cur.register(PARTS, parts)
            result = cur.sql(plan.merge_sql).to_arrow_table()
        finally:
            cur.close()
        return _with_metadata(result, plan)


def _truncate(table: pa.Table, maxrec: int | None) -> pa.Table:
    """Keep ``maxrec`` rows, marking the overflow TAP reports."""
    if maxrec is None or table.num_rows <= maxrec:
        return table
    md = dict(table.schema.metadata or {})
    md[b"qengine.overflow"] = b"true"
    return table.slice(0, maxrec).replace_schema_metadata(md)


def _empty_table(info: TableInfo) -> pa.Table:
    from qengine.catalog import Column

    fields = [pa.field(c["name"], Column(c["name"], c["datatype"]).arrow_type()) for c in info.columns]
    if info.partitioned:
        fields += [pa.field("chunkId", pa.int32()), pa.field("subChunkId", pa.int32())]
    return pa.schema(fields).empty_table()


def _with_metadata(table: pa.Table, plan: Plan) -> pa.Table:
    fields = []
    for f in table.schema:
        c = plan.column_meta.get(f.name)
        if c is None:
            fields.append(f)
            continue
        md = {k: str(c[k]) for k in ("unit", "ucd", "description") if c.get(k)}
        fields.append(f.with_metadata(md) if md else f)
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))
