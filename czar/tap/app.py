"""The TAP 1.1 service as Starlette routes under ``/tap``: sync, async (UWS 1.1), VOSI
capabilities/availability/tables, DALI examples. Queries run in threads (the czar blocks);
async jobs run in the job store's pool."""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from czar.engine import Czar
from czar.tap import examples as examples_mod
from czar.tap import uws_xml, vosi
from czar.tap.errors import TapParamError, UploadError, message_of
from czar.tap.execute import run_query
from czar.tap.formats import EXTENSIONS, render
from czar.tap.params import Limits, TapParams, collect, parse_params
from czar.tap.tap_schema import TapSchema
from czar.tap.upload import load_uploads
from czar.tap.uws import PHASES, Job, JobStore, inline_parts, iso, parse_iso
from czar.tap.votable import error_votable
from qengine.errors import QEngineError
from qengine.users import ANONYMOUS, AuthConfig, Principal

__all__ = ["TapService"]

log = logging.getLogger(__name__)

XML = "text/xml"
VOTABLE = "application/x-votable+xml"
TEXT = "text/plain"


def _owns(user: Principal | None, job: Job) -> bool:
    """Whether ``user`` may see ``job`` (None: no authentication, every job; a job from before
    authentication was turned on belongs to the anonymous user)."""
    return user is None or (job.owner or ANONYMOUS) == user.name


def _error(message: str, status: int = 400) -> Response:
    return Response(error_votable(message), status_code=status, media_type=VOTABLE)


def _text(text: str, status: int = 200) -> Response:
    return Response(text, status_code=status, media_type=TEXT)


USER_KEY = "qengine.user"   # set in the ASGI scope by czar.server.AuthMiddleware
_SCHEMA_CACHE = 64          # per-grant TAP_SCHEMA copies kept


def _user(request: Request) -> Principal | None:
    """Who sent the request (None: the service runs without authentication: trusted)."""
    return request.scope.get(USER_KEY)


def _client(request: Request) -> str | None:
    c = request.client
    return f"{c.host}:{c.port}" if c else None


class TapService:
    """TAP over one :class:`~czar.engine.Czar`; ``routes()`` plugs into a Starlette app."""

    def __init__(self, czar: Czar, job_dir: str | Path, limits: Limits | None = None,
                 base_url: str | None = None, reap_interval: float = 30.0,
                 state_dir: str | Path | None = None, auth: AuthConfig | None = None) -> None:
        """``job_dir`` holds the jobs' files, ``state_dir`` the czar's job store (their metadata;
        default: next to ``job_dir``); ``auth``: users and grants (None: every caller trusted)."""
        self.czar = czar
        self.auth = auth
        self.limits = limits or Limits()
        self.base_url = base_url.rstrip("/") if base_url else None
        self.tap_schema = TapSchema(czar.metadata)
        self._schemas: dict[tuple, tuple[object, TapSchema]] = {}
        self.jobs = JobStore(job_dir, self._run_job, czar.cancel, self.limits, reap_interval, state_dir=state_dir)

    def close(self) -> None:
        self.jobs.close()

    # ------------------------------------------------------------------ helpers
    def _base(self, request: Request) -> str:
        """The service's URL (…/tap), for absolute links in documents and redirects."""
        if self.base_url:
            return self.base_url
        return str(request.base_url).rstrip("/") + "/tap"

    async def _params(self, request: Request) -> tuple[list[tuple[str, str]], dict[str, bytes]]:
        """(name, value) pairs of the query string and the form, and the multipart file parts."""
        items = list(request.query_params.multi_items())
        inline: dict[str, bytes] = {}
        if request.method == "POST":
            length = int(request.headers.get("content-length") or 0)
            if length > self.limits.upload_bytes + 2**20:
                raise UploadError(f"the request body ({length} bytes) exceeds the upload limit of "
                                  f"{self.limits.upload_bytes} bytes")
            ctype = request.headers.get("content-type", "")
            if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
                try:
                    form = await request.form(max_part_size=self.limits.upload_bytes)
                except (HTTPException, ValueError, KeyError) as exc:
                    raise TapParamError(f"cannot read the request body: {getattr(exc, 'detail', exc)}") from None
                total = 0
                for name, value in form.multi_items():
                    if isinstance(value, UploadFile):
                        data = await value.read()
                        total += len(data)
                        if total > self.limits.upload_bytes:
                            raise UploadError(f"uploaded data exceed the limit of {self.limits.upload_bytes} bytes")
                        inline[name] = data
                    else:
                        items.append((name, value))
        return items, inline

    def schema_for(self, user: Principal | None) -> TapSchema:
        """TAP_SCHEMA as ``user`` sees it: only the tables it may read (None: all)."""
        if user is None:
            return self.tap_schema.current()
        source = self.czar.metadata.tables  # replaced when the czar reloads its metadata
        hit = self._schemas.get(user.key)
        if hit is not None and hit[0] is source:
            return hit[1]
        ts = TapSchema(self.czar.metadata.for_user(user))
        if len(self._schemas) >= _SCHEMA_CACHE:
            self._schemas.pop(next(iter(self._schemas)))
        self._schemas[user.key] = (source, ts)
        return ts

    def _execute(self, params: TapParams, inline: dict[str, bytes], query_id: str, timeout: float,
                 user: Principal | None = None, frontend: str = "tap", client: str | None = None) -> tuple[bytes, str]:
        t0 = time.perf_counter()
        uploads = load_uploads(params.uploads, inline, self.limits)
        result = run_query(self.czar, self.schema_for(user), params, uploads, query_id=query_id, timeout=timeout,
                           user=user, frontend=frontend, client=client)
        infos = {"RUNID": params.runid} if params.runid else None
        body, media = render(result.table, params.format, overflow=result.overflow, infos=infos)
        log.info("TAP query %s: %d rows%s, %d bytes of %s in %.3f s", query_id, result.table.num_rows,
                 " (overflow)" if result.overflow else "", len(body), params.format, time.perf_counter() - t0)
        return body, media

    def _run_job(self, job: Job, d: Path) -> tuple[bytes, str, str]:
        params = parse_params(collect(job.parameters), self.limits)
        user = None
        if self.auth is not None:  # the owner's grants as they are now, not when the job was created
            user = self.auth.principal(job.owner or ANONYMOUS)
            if user is None:
                raise QEngineError(f"the job's owner {job.owner or ANONYMOUS} can no longer run queries "
                                   "(removed, or anonymous access was turned off)")
        body, media = self._execute(params, inline_parts(job, d), job.job_id, job.execution_duration,
                                    user=user, frontend="tap-async", client=job.client)
        return body, media, EXTENSIONS[params.format]

    # ------------------------------------------------------------------ sync
    async def sync(self, request: Request) -> Response:
        try:
            items, inline = await self._params(request)
            params = parse_params(collect(items), self.limits)
        except QEngineError as exc:
            return _error(message_of(exc))
        qid = "sync-" + uuid.uuid4().hex
        try:
            body, media = await self._watch(request, qid, run_in_threadpool(
                self._execute, params, inline, qid, self.limits.sync_duration, _user(request), "tap-sync",
                _client(request)))
        except QEngineError as exc:
            return _error(message_of(exc))
        except Exception as exc:  # a bug: still an error document, never a dropped connection
            log.exception("TAP sync query failed")
            return _error(message_of(exc), 500)
        return Response(body, media_type=media)

    async def _watch(self, request: Request, qid: str, work):
        """Await ``work``; a client that hangs up meanwhile gets its query cancelled on the
        workers (a closed TOPCAT window must not leave a full scan running)."""
        task = asyncio.ensure_future(work)
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return task.result()
            if await request.is_disconnected():
                log.info("TAP sync client went away: cancelling query %s", qid)
                await run_in_threadpool(self.czar.cancel, qid)
                return await task

    # ------------------------------------------------------------------ async (UWS)
    def _job_or_404(self, job_id: str, request: Request) -> Job:
        """The job, if the caller owns it; another user's job is answered like a missing one."""
        job = self.jobs.get(job_id)
        if job is None or not _owns(_user(request), job):
            raise HTTPException(404, f"no job {job_id}")
        return job

    async def job_list(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                items, inline = await self._params(request)
                user = _user(request)
                job = self.jobs.create(items, inline, owner=None if user is None else user.name,
                                       client=_client(request))
            except QEngineError as exc:
                return _error(message_of(exc))
            return RedirectResponse(f"{self._base(request)}/async/{job.job_id}", status_code=303)
        q = collect(list(request.query_params.multi_items()))
        try:
            phases = [p.strip().upper() for p in q.get("PHASE", [])]
            bad = [p for p in phases if p not in PHASES]
            if bad:
                raise TapParamError(f"unknown PHASE {bad[0]!r}: one of {', '.join(PHASES)}")
            after = parse_iso(q["AFTER"][-1]) if q.get("AFTER") else None
            last = int(q["LAST"][-1]) if q.get("LAST") else None
            if last is not None and last < 0:
                raise TapParamError("LAST must be a non-negative integer")
        except ValueError:
            return _error("LAST must be a non-negative integer")
        except QEngineError as exc:
            return _error(message_of(exc))
        user = _user(request)
        # one's own jobs only; anonymous jobs are reached by their (unguessable) URL, never listed
        jobs = [j for j in self.jobs.jobs() if user is None or (not user.anonymous and _owns(user, j))]
        jobs = [j for j in jobs if (j.phase in phases if phases else j.phase != "ARCHIVED")]
        if after is not None:
            jobs = [j for j in jobs if j.creation_time > after]
        if last is not None:
            jobs = jobs[-last:] if last else []
        return Response(uws_xml.job_list_xml(jobs, f"{self._base(request)}/async"), media_type=XML)

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        job = self._job_or_404(job_id, request)
        base = self._base(request)
        if request.method == "DELETE":
            self.jobs.delete(job_id)
            return RedirectResponse(f"{base}/async", status_code=303)
        if request.method == "POST":
            try:
                items, _ = await self._params(request)
                q = collect(items)
                if any(v.strip().upper() == "DELETE" for v in q.get("ACTION", [])):
                    self.jobs.delete(job_id)
                    return RedirectResponse(f"{base}/async", status_code=303)
                if q.get("ACTION"):
                    raise TapParamError(f"unknown ACTION {q['ACTION'][0]!r}: only DELETE")
                self.jobs.update(job_id, items)
            except QEngineError as exc:
                return _error(message_of(exc))
            return RedirectResponse(f"{base}/async/{job_id}", status_code=303)
        q = collect(list(request.query_params.multi_items()))
        if q.get("WAIT"):
            try:
                wait = int(q["WAIT"][-1])
            except ValueError:
                return _error(f"WAIT must be an integer number of seconds, got {q['WAIT'][-1]!r}")
            wait = self.limits.max_wait if wait < 0 else min(wait, self.limits.max_wait)
            phase = q["PHASE"][-1].strip().upper() if q.get("PHASE") else None
            await self._wait(job_id, wait, phase)
            job = self._job_or_404(job_id, request)
        return Response(uws_xml.job_xml(job, f"{base}/async/{job_id}"), media_type=XML)

    async def _wait(self, job_id: str, seconds: float, phase: str | None) -> None:
        """UWS blocking: return when the phase leaves ``phase`` (the current one if None), the
        job is no longer active, or ``seconds`` have passed."""
        job = self.jobs.get(job_id)
        if job is None:
            return
        start = phase or job.phase
        if job.phase != start or job.phase not in ("PENDING", "QUEUED", "EXECUTING"):
            return
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            job = self.jobs.get(job_id)
            if job is None or job.phase != start:
                return

    async def job_part(self, request: Request) -> Response:
        job_id, part = request.path_params["job_id"], request.path_params["part"]
        job = self._job_or_404(job_id, request)
        base = f"{self._base(request)}/async/{job_id}"
        if request.method == "POST":
            try:
                items, _ = await self._params(request)
                q = collect(items)
                if part == "phase":
                    value = (q.get("PHASE") or [""])[-1].strip().upper()
                    if value == "RUN":
                        self.jobs.run(job_id)
                    elif value == "ABORT":
                        await run_in_threadpool(self.jobs.abort, job_id)
                    else:
                        raise TapParamError(f"PHASE={value!r}: POST PHASE=RUN or PHASE=ABORT")
                elif part == "executionduration":
                    if not q.get("EXECUTIONDURATION"):
                        raise TapParamError("missing EXECUTIONDURATION")
                    self.jobs.set_duration(job_id, q["EXECUTIONDURATION"][-1])
                elif part == "destruction":
                    if not q.get("DESTRUCTION"):
                        raise TapParamError("missing DESTRUCTION")
                    self.jobs.set_destruction(job_id, q["DESTRUCTION"][-1])
                elif part == "parameters":
                    self.jobs.update(job_id, items)
                else:
                    return _text(f"{part} cannot be changed", 405)
            except QEngineError as exc:
                return _error(message_of(exc))
            except KeyError:
                return _text(f"no job {job_id}", 404)
            return RedirectResponse(base, status_code=303)
        if part == "phase":
            return _text(job.phase)
        if part == "executionduration":
            return _text(str(job.execution_duration))
        if part == "destruction":
            return _text(iso(job.destruction) or "")
        if part == "quote":
            return _text("")
        if part == "owner":
            return _text(job.owner or "")
        if part == "runId":
            return _text(job.run_id or "")
        if part == "error":
            path = self.jobs.job_dir(job_id) / "error.vot"
            if job.phase != "ERROR" or not path.is_file():
                return _text(f"job {job_id} is {job.phase}: it has no error", 404)
            return FileResponse(path, media_type=VOTABLE)
        if part == "parameters":
            return Response(uws_xml.parameters_xml(job), media_type=XML)
        if part == "results":
            return Response(uws_xml.results_xml(job, base), media_type=XML)
        return _text(f"no resource {part} of job {job_id}", 404)

    async def result(self, request: Request) -> Response:
        job_id, rid = request.path_params["job_id"], request.path_params["result_id"]
        job = self._job_or_404(job_id, request)
        if rid != "result" or job.phase != "COMPLETED" or job.result is None:
            return _text(f"job {job_id} is {job.phase}: no result {rid}", 404)
        path = self.jobs.job_dir(job_id) / job.result[0]
        if not path.is_file():
            return _text(f"the result of job {job_id} is gone", 404)
        return FileResponse(path, media_type=job.result[1])

    # ------------------------------------------------------------------ VOSI, examples
    async def capabilities(self, request: Request) -> Response:
        return Response(vosi.capabilities_xml(self._base(request), self.limits), media_type=XML)

    async def availability(self, request: Request) -> Response:
        def probe() -> tuple[bool, str]:
            down = []
            for w in self.czar.workers:
                try:
                    w.health(timeout=2.0)
                except Exception as exc:  # noqa: BLE001 - any failure means the worker is not serving
                    down.append(f"{w.address} ({type(exc).__name__})")
            if down:
                return False, f"workers not answering: {', '.join(down)}"
            return True, f"all {len(self.czar.workers)} workers answer"

        ok, note = await run_in_threadpool(probe)
        return Response(vosi.availability_xml(ok, note), media_type=XML)

    async def tables(self, request: Request) -> Response:
        detail = collect(list(request.query_params.multi_items())).get("DETAIL", ["max"])[-1].lower()
        return Response(vosi.tableset_xml(self.schema_for(_user(request)).schemas, detail != "min"), media_type=XML)

    async def table(self, request: Request) -> Response:
        t = self.schema_for(_user(request)).table(request.path_params["name"])
        if t is None:
            return _text(f"no table {request.path_params['name']}", 404)
        return Response(vosi.table_xml(t), media_type=XML)

    async def examples(self, request: Request) -> Response:
        meta = self.czar.metadata_for(_user(request))
        return Response(examples_mod.examples_xhtml(meta), media_type="application/xhtml+xml")

    async def root(self, request: Request) -> Response:
        base = self._base(request)
        lines = [f"qengine TAP 1.1 service at {base}", ""] + [
            f"{base}/{p}" for p in ("sync", "async", "capabilities", "availability", "tables", "examples")]
        return _text("\n".join(lines) + "\n")

    def routes(self) -> list[Route]:
        return [
            Route("/tap", self.root, methods=["GET"]),
            Route("/tap/", self.root, methods=["GET"]),
            Route("/tap/sync", self.sync, methods=["GET", "POST"]),
            Route("/tap/async", self.job_list, methods=["GET", "POST"]),
            Route("/tap/async/{job_id}", self.job, methods=["GET", "POST", "DELETE"]),
            Route("/tap/async/{job_id}/results/{result_id}", self.result, methods=["GET"]),
            Route("/tap/async/{job_id}/{part}", self.job_part, methods=["GET", "POST"]),
            Route("/tap/capabilities", self.capabilities, methods=["GET"]),
            Route("/tap/availability", self.availability, methods=["GET"]),
            Route("/tap/tables", self.tables, methods=["GET"]),
            Route("/tap/tables/{name}", self.table, methods=["GET"]),
            Route("/tap/examples", self.examples, methods=["GET"]),
        ]
