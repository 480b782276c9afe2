"""The czar: plan, pick workers for chunks, fan out over gRPC, merge the streamed Arrow results.

One sub-query per worker covers all the chunks it serves for the query (never one call per
chunk). Results stream back concurrently; the first error or a satisfied LIMIT cancels the rest.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa

from czar.audit import AuditLog
from czar.metadata import UPLOAD_DB, Metadata, TableInfo
from czar.compose import Steps, needs_steps
from czar.crossmatch import answer_crossmatch
from czar.dialects import parse, to_duckdb
from czar.health import QUERY_ERROR_CODES, WORKER_DOWN_CODES, HealthMonitor, _Part
from czar.plan import PARTS, Plan, plan_query
from qengine import duck
from qengine.errors import QEngineError, QueryError
from qengine.workerclient import WorkerClient, WorkerError
from qengine.sqlfuncs import register
from qengine.users import ANONYMOUS, DEFAULT_LIMITS, ClassLimits, Limiter, Principal

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

    def __init__(self, metadata: Metadata, workers: list[WorkerClient], *, health_interval: float = 1.0,
                 health_timeout: float = 2.0, audit: AuditLog | None = None,
                 class_limits: dict[str, ClassLimits] | None = None) -> None:
        """``health_interval``: seconds between health checks of every worker (0: none);
        ``health_timeout``: the deadline of one check (a stalled worker misses it); ``audit``:
        where every query is recorded; ``class_limits``: resource limits per user class."""
        if not workers:
            raise QEngineError("a czar needs at least one worker")
        self.metadata = metadata
        self.audit = audit
        self.class_limits = dict(class_limits or DEFAULT_LIMITS)
        self._limiter = Limiter()
        self.workers = workers
        self._holdings: dict[str, dict[tuple[str, str], np.ndarray]] = {}
        # chunks a worker cannot join with a table's overlap (an overlap file it does not hold)
        self._lacking: dict[str, dict[tuple[str, str], np.ndarray]] = {}
        # Small merges (a cone's rows, a GROUP BY's partial groups) run faster on one thread:
        # 2.1 against 3.2 ms for 360 partial groups, most of it DuckDB's setup of parallel work.
        self._merge = _merge_database(threads=2)
        self._merge_small = _merge_database(threads=1)
        self._merge_lock = threading.Lock()
        self._running: dict[str, dict] = {}
        self._turns = itertools.count()  # round robin of small queries over equal holders
        self.failovers = 0  # parts run again on another replica since start (tests, status)
        self._health = HealthMonitor(self, health_interval, health_timeout)
        self.refresh()
        self._health.start()

    # ------------------------------------------------------------------ cluster state
    def refresh(self) -> None:
        """Reload table metadata and each worker's inventory (a worker that does not answer is
        marked down; the health checks bring it back)."""
        self.metadata.reload()
        errors = []
        for w in self.workers:
            try:
                self._read_inventory(w)
            except WorkerError as exc:
                errors.append(exc)
                self._health.mark_down(w.address, f"inventory: {exc}")
        if len(errors) == len(self.workers):
            raise errors[0]

    def _read_inventory(self, w: WorkerClient) -> None:
        inv = w.inventory()
        self._holdings[w.address] = {(t.database.lower(), t.table.lower()): np.asarray(sorted(t.chunk_ids), np.int64)
                                     for t in inv.tables}
        self._lacking[w.address] = {(t.database.lower(), t.table.lower()):
                                    np.frombuffer(t.lacking_overlap_chunk_array, dtype="<i4").astype(np.int64)
                                    for t in inv.tables if t.lacking_overlap_chunk_array}

    def live_workers(self) -> list[WorkerClient]:
        """The workers marked up, in configuration order."""
        return [w for w in self.workers if self._health.is_up(w.address)]

    def status(self) -> dict:
        """Workers (up/down, why, tables held) and the queries running now, for ``qengine status``."""
        workers = []
        for w in self.workers:
            st = self._health.state(w.address)
            workers.append({"address": w.address, "up": st.up, "reason": st.reason, "since": st.since,
                            "tables": {f"{d}.{t}": int(a.size) for (d, t), a in self._holdings.get(w.address, {}).items()}})
        with self._merge_lock:
            running = [{"query_id": q, "started": r["started"], "workers": sorted({p.addr for p in r["parts"]}),
                        "retries": r["retries"]} for q, r in self._running.items()]
        return {"workers": workers, "running": running, "failovers": self.failovers}

    def close(self) -> None:
        self._health.stop()
        for w in self.workers:
            w.close()
        self._merge.close()
        self._merge_small.close()

    # ------------------------------------------------------------------ planning
    def _lookup_ids(self, plan: Plan) -> list[int]:
        t = plan.index_table
        sql = (f"SELECT DISTINCT chunkId FROM {{{{{t.database}.{t.name}__index}}}} "
               f"WHERE {plan.id_restriction.sql_condition('id')}")
        key = (t.database.lower(), t.name.lower())
        live = self.live_workers()
        holders = [w for w in live if self._holdings.get(w.address, {}).get(key, _EMPTY).size] or live
        if not holders:
            raise QueryError(f"no live worker to look up ids in {t.database}.{t.name}: "
                             f"{self._health.describe_down()}")
        for i, holder in enumerate(holders):  # the index is on every worker: try the next one
            try:
                res = holder.execute_small(sql, lane="interactive")   # one unary call: ids are few
                if res is None:  # too many ids for one message
                    res = holder.query(sql, lane="interactive")
                return sorted(res.column(0).to_pylist()) if res.num_columns else []
            except WorkerError as exc:
                if exc.code not in WORKER_DOWN_CODES or i == len(holders) - 1:
                    raise QueryError(f"worker {exc.worker}: {exc}") from None
                self._health.mark_down(holder.address, str(exc))
        raise AssertionError("unreachable")

    def _assign(self, plan: Plan, chunks: "list[int] | np.ndarray") -> dict[str, np.ndarray]:
        """Chunks per live worker: runs balanced by rows among the live workers holding them.

        Vectorised: a full scan assigns ~10^5 chunks per query. With replicas, chunks are cut
        into runs held by the same set of workers (and runs longer than a quarter of a worker's
        share are cut again), then the runs go, biggest first, to the least loaded holder.
        """
        t = plan.table
        keys = [(x.database.lower(), x.name.lower()) for x in (plan.tables or [t])]
        want = np.asarray(chunks, dtype=np.int64)
        if want.size == 0:
            return {}
        live = {w.address for w in self.live_workers()}
        # a worker serves a chunk only if it holds it for every co-located table of the query
        addrs, rows = [], []
        for w in self.workers:
            arrays = [self._holdings.get(w.address, {}).get(k, _EMPTY) for k in keys]
            held = arrays[0]
            for a in arrays[1:]:
                held = np.intersect1d(held, a, assume_unique=True)
            if held.size and w.address in live:
                served = _member(want, held)
                for o in plan.overlap_tables:  # joins reading a table's overlap need all of it
                    lacking = self._lacking.get(w.address, {}).get((o.database.lower(), o.name.lower()))
                    if lacking is not None and lacking.size:
                        served &= ~_member(want, lacking)
                addrs.append(w.address)
                rows.append(served)
        holds = np.vstack(rows) if rows else np.zeros((0, want.size), bool)
        covered = holds.any(axis=0)
        if not covered.all():
            raise QueryError(self._no_replica_message(t, want[~covered], keys))
        if want.size <= INTERACTIVE_MAX_CHUNKS:
            # a cone or an id list: one worker holding all of it answers in one call (taking
            # turns across queries), rather than two calls in two threads
            whole = np.flatnonzero(holds.all(axis=1))
            if whole.size:
                return {addrs[int(whole[next(self._turns) % whole.size])]: want}
        weights = t.chunk_row_weights(want)
        if holds.all():  # every live worker holds everything: cut the chunk line evenly
            cum = np.cumsum(weights)
            cuts = np.searchsorted(cum, cum[-1] * np.arange(1, len(addrs)) / len(addrs), side="left")
            pieces = np.split(want, cuts)
            return {a: p for a, p in zip(addrs, pieces) if p.size}
        cum = np.cumsum(weights)
        before = cum - weights
        share = max(float(cum[-1]) / len(addrs) / 4, 1.0)
        step = (before // share).astype(np.int64)
        brk = np.r_[True, (holds[:, 1:] != holds[:, :-1]).any(axis=0) | (step[1:] != step[:-1])]
        starts = np.flatnonzero(brk)
        ends = np.r_[starts[1:], want.size]
        piece_w = np.add.reduceat(weights, starts)
        eligible = holds[:, starts].T  # piece -> which workers hold it
        load = np.zeros(len(addrs))
        owner = np.empty(starts.size, np.int64)
        for i in np.argsort(-piece_w, kind="stable").tolist():
            cand = np.flatnonzero(eligible[i])
            j = cand[np.argmin(load[cand])]
            owner[i] = j
            load[j] += piece_w[i]
        out: dict[str, np.ndarray] = {}
        for j, a in enumerate(addrs):
            mine = np.flatnonzero(owner == j)
            if mine.size:
                out[a] = np.concatenate([want[starts[i]:ends[i]] for i in mine.tolist()])
        return out

    def _no_replica_message(self, t: TableInfo, missing: np.ndarray, keys: list[tuple[str, str]]) -> str:
        """Which chunks no live worker serves, and which (down) workers hold them."""
        shown = missing[:10].tolist()
        holders = [w.address for w in self.workers
                   if all(np.isin(missing, self._holdings.get(w.address, {}).get(k, _EMPTY)).any() for k in keys)]
        more = f" (and {missing.size - len(shown)} more)" if missing.size > len(shown) else ""
        if holders:
            why = "; ".join(f"{a} is down ({self._health.state(a).reason or 'not answering'})" for a in holders)
            return (f"no live replica for chunk(s) {shown}{more} of {t.database}.{t.name}: "
                    f"held by {', '.join(holders)}; {why}")
        return f"no live worker holds chunk(s) {shown}{more} of {t.database}.{t.name}"

    def _chunks(self, plan: Plan) -> np.ndarray:
        """The chunk ids to visit, sorted."""
        if plan.id_restriction is not None:
            found = self._lookup_ids(plan)
            chunks = sorted(set(found) & (plan.table.chunk_set() if plan.chunks is None else set(plan.chunks)))
            return np.asarray(chunks, dtype=np.int64)
        if plan.chunks is None:
            return plan.table.chunk_array()
        return np.asarray(plan.chunks, dtype=np.int64)

    def explain(self, sql: str, *, lang: str = "adql", database: str | None = None,
                user: Principal | None = None) -> Explain:
        """The plan of a query (``user``: whose grants apply; None: the trusted caller)."""
        tree = parse(sql, lang)
        meta = self.metadata_for(user)
        if user is not None:
            check_tables(tree, meta, database)
        if needs_steps(tree):
            raise QueryError("this query runs in several steps (it has subqueries, WITH or UNION/INTERSECT/"
                             "EXCEPT): explain its SELECTs one by one")
        plan = plan_query(sql, meta, lang=lang, database=database, tree=tree)
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
    def metadata_for(self, user: Principal | None) -> Metadata:
        """The tables ``user`` may read (None: the trusted internal caller, every table)."""
        return self.metadata if user is None else self.metadata.for_user(user)

    def query(self, sql: str, *, lang: str = "adql", database: str | None = None,
              max_rows: int = 0, timeout: float = 0.0, query_id: str | None = None,
              maxrec: int | None = None, uploads: dict[str, pa.Table] | None = None,
              user: Principal | None = None, frontend: str = "python", client: str | None = None) -> pa.Table:
        """Run a query; returns a pyarrow Table with unit/UCD/description field metadata.

        ``query_id`` names the query for :meth:`cancel` (from another thread). ``max_rows`` is a
        hard limit (an answer with more rows is an error); ``maxrec`` is TAP's MAXREC: the first
        ``maxrec`` rows of the answer, with schema metadata ``qengine.overflow = true`` when
        there were more. ``uploads`` are tables the query may read as ``TAP_UPLOAD.<name>``.
        ``user``: whose grants and class limits apply (None: the trusted internal caller, no
        limits); ``frontend`` and ``client`` (its address) go to the audit log."""
        t0 = time.perf_counter()
        qid = query_id or uuid.uuid4().hex
        status, rows, error = "ERROR", None, None
        try:
            result = self._query_as(sql, lang, database, max_rows, timeout, qid, maxrec, uploads, user, client)
            status, rows = "COMPLETED", result.num_rows
            return result
        except BaseException as exc:
            error = str(exc) or type(exc).__name__
            if "cancelled" in error:
                status = "ABORTED"
            raise
        finally:
            if self.audit is not None:
                self.audit.write(user=None if user is None else user.name,
                                 user_class=None if user is None else user.user_class, frontend=frontend,
                                 client=client, query_id=qid, query=sql if isinstance(sql, str) else repr(sql),
                                 status=status, rows=rows, seconds=time.perf_counter() - t0, error=error)

    def _query_as(self, sql, lang, database, max_rows, timeout, qid, maxrec, uploads, user, client) -> pa.Table:
        """:meth:`query` within the user's class limits (concurrency, rows, run time)."""
        if user is None:
            return self._query(sql, lang, database, max_rows, timeout, qid, maxrec, uploads, self.metadata, False)
        lim = self.class_limits.get(user.user_class, DEFAULT_LIMITS["guest"])
        # anonymous clients are told apart by address: one busy client must not block the others
        key = user.name if not user.anonymous else f"{ANONYMOUS}@{_host(client)}"
        row_cap = time_cap = False
        if lim.max_rows:
            if maxrec is not None and maxrec > lim.max_rows:
                maxrec = lim.max_rows   # TAP: the answer is cut there and flagged as overflowing
            if not max_rows or max_rows > lim.max_rows + 1:
                # + 1: a TAP answer cut at MAXREC has one more row for its overflow flag
                max_rows, row_cap = lim.max_rows + (1 if maxrec is not None else 0), True
        if lim.max_seconds and (not timeout or timeout > lim.max_seconds):
            timeout, time_cap = lim.max_seconds, True
        with self._limiter.slot(key, user.user_class, lim.max_concurrent):
            try:
                return self._query(sql, lang, database, max_rows, timeout, qid, maxrec, uploads,
                                   self.metadata.for_user(user), True)
            except QueryError as exc:
                text = str(exc)
                if row_cap and "result is too large" in text:
                    raise QueryError(f"the result is too large for user {user.name} (class {user.user_class}): "
                                     f"at most {lim.max_rows:,} rows per query (the class's max_rows). Narrow "
                                     "the query (a smaller region, more selective conditions), ask for fewer "
                                     "rows (TOP/LIMIT, MAXREC) or an aggregate, or ask the operators for a "
                                     "larger class") from None
                if time_cap and "longer than its time limit" in text:
                    raise QueryError(f"the query ran longer than {lim.max_seconds:g} s, the run-time limit of user "
                                     f"{user.name} (class {user.user_class}, max_seconds): narrow it (a smaller "
                                     "region, more selective conditions) or ask the operators for a larger "
                                     "class") from None
                raise

    def _query(self, sql, lang, database, max_rows, timeout, qid, maxrec, uploads, meta: Metadata,
               check: bool) -> pa.Table:
        if maxrec is not None and maxrec < 0:
            raise QueryError(f"MAXREC must be 0 or more, got {maxrec}")
        t0 = time.perf_counter()
        tree = parse(sql, lang)
        if check:  # every table the query names, in any position, must be in the user's grants
            check_tables(tree, meta, database)
        if needs_steps(tree):  # subqueries, WITH, set operations: several passes (czar/compose.py)
            steps = Steps(run_select=lambda t, ups: self._answer(sql, t, lang, database, None, ups, max_rows,
                                                                  timeout, qid, meta),
                          run_local=self._run_local, translate=to_duckdb, uploads=dict(uploads or {}))
            result = steps.answer(tree)
        else:
            result = self._answer(sql, tree, lang, database, maxrec, uploads, max_rows, timeout, qid, meta)
        log.info("query done in %.3f s: %d rows", time.perf_counter() - t0, result.num_rows)
        if max_rows and result.num_rows > max_rows:  # each worker's part may be under the limit
            raise QueryError(_too_large(max_rows))
        return _truncate(result, maxrec)

    def _answer(self, sql: str, tree, lang: str, database: str | None, maxrec: int | None,
                uploads: dict[str, pa.Table] | None, max_rows: int, timeout: float, qid: str,
                meta: Metadata | None = None) -> pa.Table:
        """One plain SELECT through the cluster: plan, fan out, merge (``meta``: the tables the
        caller may read; default all)."""
        meta = self.metadata if meta is None else meta
        # an uploaded table matched by position with a director: chunk by chunk (czar/crossmatch)
        xm = answer_crossmatch(self if meta is self.metadata else _Scoped(self, meta), tree, sql, lang, database,
                               uploads, maxrec)
        if xm is not None:
            return xm
        plan = plan_query(sql, meta.with_uploads(uploads), lang=lang, database=database,
                          maxrec=maxrec, tree=tree)
        if plan.count_from_stats is not None:
            return pa.table({plan.count_name: pa.array([plan.count_from_stats], pa.int64())})
        if plan.table.partitioned:
            chunks = self._chunks(plan)
            assignment = self._assign_live(plan, chunks) if chunks.size else {}
        else:
            assignment = {self._any_live().address: None}
        batches, schema = self._fan_out(plan, assignment, max_rows, timeout, qid, uploads)
        return self._run_merge(plan, batches, schema)

    def _run_local(self, sql: str, tables: dict[str, pa.Table]) -> pa.Table:
        """DuckDB SQL over Arrow tables in the czar (the last step of a composite query)."""
        with self._merge_lock:
            cur = self._merge_db(sum(t.num_rows for t in tables.values())).cursor()
        try:
            for name, t in tables.items():
                cur.register(name, t)
            return duck.arrow_table(cur, sql)
        except duckdb.Error as exc:
            raise QueryError(f"cannot combine the parts of the query: {_duck_message(exc)}") from None
        finally:
            cur.close()

    def _any_live(self, exclude: set[str] = frozenset()) -> WorkerClient:
        w = next((w for w in self.live_workers() if w.address not in exclude), None)
        if w is None:
            raise QueryError(f"no live worker: {self._health.describe_down()}")
        return w

    def cancel(self, query_id: str) -> bool:
        """Stop every worker's part of a running query; False if it is not running."""
        with self._merge_lock:
            state = self._running.get(query_id)
        if state is None:
            return False
        state["cancelled"] = True
        for part in list(state["parts"]):
            part.abandon()
            if self._health.is_up(part.addr):
                try:
                    self._client(part.addr).cancel(part.wid)
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
            state = self._running[qid] = {"parts": [], "cancelled": False, "started": time.time(), "retries": 0}
        try:
            return self._fan_out_inner(plan, assignment, max_rows, timeout, qid, state, uploads)
        finally:
            with self._merge_lock:
                self._running.pop(qid, None)

    def _fan_out_inner(self, plan, assignment, max_rows, timeout, qid, state, uploads):
        """Run each worker's part; a part that fails because its worker died or stalled is run
        again on other replicas of its chunks. A part's batches are kept apart until it ends,
        so a failed part's rows are dropped, never counted twice."""
        out: queue.Queue = queue.Queue()
        stop = threading.Event()
        lane = "interactive" if all(cs is not None and len(cs) <= INTERACTIVE_MAX_CHUNKS
                                    for cs in assignment.values()) else "scan"
        threads: list[threading.Thread] = []

        def run(part: _Part) -> None:
            kw = dict(query_id=part.wid, chunk_ids=part.chunks, max_rows=max_rows, lane=lane,
                      timeout_seconds=timeout, uploads=uploads, summary=part.summary, on_call=part.set_call)
            client = self._client(part.addr)
            try:
                if lane == "interactive":  # small: one unary call, unless it is too big after all
                    table = client.execute_small(plan.worker_sql, **kw)
                    if table is not None:
                        for b in table.to_batches():
                            out.put(("batch", part, b))
                        out.put(("done", part, None))
                        return
                for b in client.execute(plan.worker_sql, **kw):
                    if stop.is_set() or part.abandoned:
                        return
                    out.put(("batch", part, b))
                out.put(("done", part, None))
            except Exception as exc:  # a worker error, a broken connection or a bug: report it, never hang
                out.put(("error", part, exc))
            finally:
                self._health.untrack(part)

        def launch(addr: str, chunks, attempt: int, inline: bool = False) -> _Part:
            with self._merge_lock:
                # unique per call: two failed parts may both be re-dispatched to one worker
                wid = f"{qid}-{addr}" if attempt == 0 else f"{qid}-{addr}-r{len(state['parts'])}"
                part = _Part(addr, chunks, wid, attempt)
                state["parts"].append(part)
            self._health.track(part)
            if inline:
                run(part)
            else:
                th = threading.Thread(target=run, args=(part,), daemon=True, name=f"czar-part-{addr}")
                threads.append(th)
                th.start()
            return part

        pending: set[_Part] = set()
        if lane == "interactive" and len(assignment) == 1:
            # one small call: in this thread (a thread start costs as much as the call)
            pending.add(launch(*next(iter(assignment.items())), 0, inline=True))
        else:
            pending.update(launch(a, cs, 0) for a, cs in assignment.items())
        done: list[_Part] = []
        rows = 0
        error: Exception | None = None
        limit = plan.worker_limit if not plan.merge_needs_all else None
        while pending:
            kind, part, item = out.get()
            if part not in pending:
                continue  # a late message of a part given up on
            if kind == "batch":
                part.batches.append(item)
                rows += item.num_rows
                if limit is not None and rows >= limit:
                    break
            elif kind == "done":
                pending.discard(part)
                done.append(part)
            else:
                pending.discard(part)
                if not self._worker_failed(part, item, state):
                    error = item
                    break
                rows -= sum(b.num_rows for b in part.batches)
                part.batches.clear()
                try:
                    retry = self._reassign(plan, part, assignment)
                except QueryError as exc:
                    error = exc
                    break
                state["retries"] += 1
                with self._merge_lock:
                    self.failovers += 1
                log.warning("query %s: worker %s failed (%s); its %s chunk(s) go to %s", qid, part.addr,
                            _short(item), "all" if part.chunks is None else len(part.chunks),
                            ", ".join(retry) or "nobody")
                pending.update(launch(a, cs, part.attempt + 1) for a, cs in retry.items())
        if pending:
            stop.set()
            for part in pending:
                part.abandon()
                if self._health.is_up(part.addr):
                    try:
                        self._client(part.addr).cancel(part.wid)
                    except WorkerError:
                        pass
        for th in threads:
            th.join(timeout=5)
        if error is not None:
            if state["cancelled"]:
                raise QueryError("query cancelled") from None
            if isinstance(error, QEngineError) and not isinstance(error, WorkerError):
                raise error
            if isinstance(error, WorkerError):
                if error.code == "RESOURCE_EXHAUSTED" and "exceeds the limit" in str(error):
                    raise QueryError(_too_large(max_rows)) from None
                if error.code == "DEADLINE_EXCEEDED":
                    raise QueryError(f"the query ran longer than its time limit ({timeout:g} s): narrow it (a "
                                     "smaller region, more selective conditions) or run it as an async job") from None
                raise QueryError(f"worker {error.worker}: {error}") from None
            raise QEngineError(f"query failed: {error!r}") from error
        kept = done + [p for p in pending if p.batches]  # a LIMIT met: rows of unfinished parts count too
        batches = [b for p in kept for b in p.batches]
        schema = next((p.summary.schema for p in kept if p.summary.schema is not None), None)
        return batches, schema

    def _worker_failed(self, part: "_Part", exc: Exception, state: dict) -> bool:
        """Whether ``exc`` means the part's worker died or stalled (run its chunks elsewhere),
        rather than the query failing (bad SQL, a limit, the user's cancel: never retried)."""
        if state["cancelled"]:
            return False
        if part.worker_down:  # the health checks gave up on the worker and cancelled the call
            return True
        code = exc.code if isinstance(exc, WorkerError) else None
        if code in WORKER_DOWN_CODES:
            self._health.mark_down(part.addr, f"{code} during a query")
            return True
        if code == "NOT_FOUND" and "not held" in str(exc):
            # the worker's files changed since its inventory was read (qengine place ran): read
            # it again and place the chunks anew
            try:
                self._read_inventory(self._client(part.addr))
            except WorkerError:
                self._health.mark_down(part.addr, "inventory unreadable")
            return True
        if code in QUERY_ERROR_CODES:
            return False
        # anything else (INTERNAL, UNKNOWN, a torn stream): a worker failure only if the worker
        # no longer answers a health check
        if not self._health.check_now(part.addr):
            return True
        return False

    def _reassign(self, plan: Plan, part: "_Part", assignment: dict) -> dict[str, "np.ndarray | None"]:
        """Where a failed part's chunks go now (live replicas only)."""
        if part.attempt + 1 > 2 * len(self.workers):
            raise QueryError(f"chunks of worker {part.addr} failed on {part.attempt + 1} workers in turn; giving up")
        if part.chunks is None:  # a replicated or uploaded table: any live worker
            try:
                return {self._any_live(exclude={part.addr}).address: None}
            except QueryError:
                self._health.check_all()
                return {self._any_live(exclude={part.addr}).address: None}
        return self._assign_live(plan, part.chunks)

    def _assign_live(self, plan: Plan, chunks) -> dict[str, np.ndarray]:
        """:meth:`_assign`, checking the workers marked down once more before giving up (one
        that missed its health checks under load may answer now)."""
        try:
            return self._assign(plan, chunks)
        except QueryError:
            if all(self._health.is_up(w.address) for w in self.workers):
                raise
            self._health.check_all()
            return self._assign(plan, chunks)

    def _merge_db(self, rows: int) -> duckdb.DuckDBPyConnection:
        return self._merge_small if rows < SMALL_MERGE_ROWS else self._merge

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
            cur = self._merge_db(0 if parts is None else parts.num_rows).cursor()
        try:
            if parts is None:
                empty_sql = plan.worker_sql
                for i, (ph, info) in enumerate(plan.table_placeholders.items()):
                    empty_sql = empty_sql.replace(ph, f"(SELECT * FROM {PARTS}_empty{i})")
                    cur.register(f"{PARTS}_empty{i}", _empty_table(info))
                parts = duck.arrow_table(cur, empty_sql)
            cur.register(PARTS, parts)
            result = duck.arrow_table(cur, plan.merge_sql)
        except duckdb.Error as exc:  # e.g. an overflow or a failed cast met only when merging
            raise QueryError(f"cannot merge the workers' results: {_duck_message(exc)}") from None
        finally:
            cur.close()
        return _with_metadata(result, plan)


SMALL_MERGE_ROWS = 100_000


def _merge_database(threads: int) -> duckdb.DuckDBPyConnection:
    """A DuckDB for merges: it reads only Arrow tables the czar registers (no files, no
    extensions) and its settings cannot be changed by the SQL it runs."""
    con = duckdb.connect(config={"threads": threads, "autoinstall_known_extensions": False,
                                 "autoload_known_extensions": False, "enable_external_access": False})
    register(con, persistent=True)  # every cursor sees them
    con.execute("SET lock_configuration = true")
    return con


class _Scoped:
    """The czar as one user sees it: its ``metadata`` is the user's view (for code such as the
    crossmatch that resolves names through ``czar.metadata``); everything else is the czar."""

    def __init__(self, czar: Czar, metadata: Metadata) -> None:
        self._czar, self.metadata = czar, metadata

    def __getattr__(self, name: str):
        return getattr(self._czar, name)


def check_tables(tree, meta: Metadata, database: str | None) -> None:
    """Resolve every table ``tree`` names (FROM, JOIN, subqueries, CTEs, set operations, EXISTS)
    in ``meta``: a table the user may not read raises the same "unknown table" error as one that
    does not exist. CTE names and uploaded tables (the user's own) are not catalogue tables."""
    from sqlglot import exp

    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    for t in tree.find_all(exp.Table):
        name, db = t.name, t.db
        if not name or not isinstance(t.this, exp.Identifier):
            continue  # a table function: the sandbox's business
        if not db and name.lower() in ctes:
            continue
        if db and db.lower() == UPLOAD_DB.lower():
            continue
        meta.resolve(db or None, name, database)


def _duck_message(exc: Exception) -> str:
    """A DuckDB error for the user: its first line, without DuckDB's own hints about its SQL."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _host(client: str | None) -> str:
    """The host part of ``host:port`` (anonymous clients are counted per host)."""
    if not client:
        return "unknown"
    return client.rsplit(":", 1)[0] if client.count(":") == 1 else client


def _short(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:200]


def _member(want: np.ndarray, held: np.ndarray) -> np.ndarray:
    """Which of ``want`` are in the sorted ``held`` (binary search when ``want`` is small: a
    cone names one chunk of 10^5)."""
    if want.size == held.size and np.array_equal(want, held):  # a full scan of what it holds
        return np.ones(want.size, bool)
    if want.size * 16 < held.size:
        i = np.minimum(np.searchsorted(held, want), held.size - 1)
        return held[i] == want
    return np.isin(want, held, assume_unique=True)


def _too_large(max_rows: int) -> str:
    return (f"the result is too large: more than {max_rows:,} rows (the limit). Narrow the query (a smaller "
            "region, more selective conditions), ask for fewer rows (TOP/LIMIT, MAXREC) or an aggregate, "
            "or run it as an async job")


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
    changed = False
    for f in table.schema:
        c = plan.column_meta.get(f.name)
        if c is None:
            fields.append(f)
            continue
        md = {k: str(c[k]) for k in ("unit", "ucd", "description") if c.get(k)}
        fields.append(f.with_metadata(md) if md else f)
        changed = changed or bool(md)
    if not changed:
        return table
    schema = pa.schema(fields, metadata=table.schema.metadata)
    if table.num_columns == 0:
        return table.cast(schema)
    # the same columns under a schema with field metadata: no cast (3x the CPU of a cone's merge)
    return pa.Table.from_arrays(table.columns, schema=schema)
