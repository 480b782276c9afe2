"""The worker's gRPC service: Execute (streamed Arrow), Cancel, Inventory, Health."""
from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa

from qengine import __version__
from qengine.proto import worker_pb2 as pb
from qengine.proto import worker_pb2_grpc as pb_grpc
from qengine.prefetch import on_new_thread, prefetch
from qengine.proto.framing import decode_chunk_query, frame_record_batch, serialize_result
from worker.executor import Executor, QueryError, QueryRequest, QueryStats
from worker.inventory import Inventory

log = logging.getLogger(__name__)

SECRET_HEADER = "x-qengine-secret"


def _ipc(batch: pa.RecordBatch | None, schema: pa.Schema) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as w:
        if batch is not None:
            w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _chunk_ids(request: pb.ChunkQuery) -> np.ndarray:
    if request.chunk_id_array:
        if len(request.chunk_id_array) % 4:
            raise ValueError("chunk_id_array must hold little-endian int32s")
        return np.frombuffer(request.chunk_id_array, dtype="<i4").astype(np.int64)
    return np.fromiter(request.chunk_ids, dtype=np.int64, count=len(request.chunk_ids))


def _read_upload(data: "bytes | memoryview") -> pa.Table:
    return pa.ipc.open_stream(pa.py_buffer(data)).read_all()


# Query (unary) answers in one message; gRPC's send limit is 64 MiB (make_server).
UNARY_MAX_BYTES = 48 << 20


class _SecretInterceptor(grpc.ServerInterceptor):
    """Refuses every call that does not carry the shared secret."""

    def __init__(self, secret: str) -> None:
        self.secret = secret

        def deny(request, context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong worker secret")

        self._deny_unary = grpc.unary_unary_rpc_method_handler(deny)
        self._deny_stream = grpc.unary_stream_rpc_method_handler(deny)

    def intercept_service(self, continuation, handler_call_details):
        md = dict(handler_call_details.invocation_metadata or ())
        if md.get(SECRET_HEADER) == self.secret:
            return continuation(handler_call_details)
        if handler_call_details.method.endswith("/Execute"):
            return self._deny_stream
        return self._deny_unary


class WorkerService(pb_grpc.WorkerServicer):
    def __init__(self, executor: Executor, worker_id: str, max_concurrent: int) -> None:
        self.executor = executor
        self.worker_id = worker_id
        self.started = time.time()
        self._slots = threading.BoundedSemaphore(max_concurrent)

    def _request(self, request, context: grpc.ServicerContext) -> QueryRequest:
        # (the ChunkQuery, its uploads as views of the received bytes): decode_chunk_query
        request, raw_uploads = request if isinstance(request, tuple) else \
            (request, [(u.name, u.arrow_ipc) for u in request.uploads])
        qid = request.query_id or uuid.uuid4().hex
        try:
            uploads = {name: _read_upload(data) for name, data in raw_uploads}
        except (pa.ArrowException, ValueError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed uploaded table: {exc}")
        if not request.sql.strip():
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty SQL")
        try:
            chunk_ids = None if request.all_chunks else _chunk_ids(request)
        except ValueError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        # Stop DuckDB when the czar goes away (client abort, deadline).
        context.add_callback(lambda: self.executor.cancel(qid))
        return QueryRequest(
            query_id=qid, sql=request.sql,
            chunk_ids=chunk_ids,
            uploads=uploads, max_rows=request.max_rows, max_bytes=request.max_bytes,
            threads=request.threads, memory_limit=request.memory_limit,
            batch_rows=request.batch_rows or 8_192, timeout_seconds=request.timeout_seconds,
            lane=request.lane or "scan",
        )

    def Execute(self, request, context: grpc.ServicerContext):
        req = self._request(request, context)
        qid = req.query_id
        stats = QueryStats()
        with self._slots:
            try:
                schema = None
                encoded = ((b, frame_record_batch(b))
                           for b in self.executor.execute(req, stats))
                # DuckDB and IPC encoding run ahead of the gRPC send (qengine/prefetch.py)
                for batch, framed in prefetch(lambda: encoded, join_timeout=5.0):
                    schema = batch.schema
                    yield framed  # a ResultBatch, encoded by hand (qengine/proto/framing.py)
                    if not context.is_active():
                        self.executor.cancel(qid)
                        return
                last = pb.ResultBatch(last=True, rows_total=stats.rows, chunks=stats.chunks,
                                      files=stats.files, seconds=stats.seconds)
                if schema is None and stats.schema is not None:
                    last.arrow_ipc = _ipc(None, stats.schema)  # no rows: still send the schema
                yield last
            except QueryError as err:
                context.abort(getattr(grpc.StatusCode, err.code), str(err))

    def Query(self, request, context: grpc.ServicerContext) -> pb.ResultBatch:
        req = self._request(request, context)
        stats = QueryStats()

        def answer() -> bytes:
            sink = pa.BufferOutputStream()
            writer = None
            for batch in self.executor.execute(req, stats):
                if writer is None:
                    writer = pa.ipc.new_stream(sink, batch.schema)
                writer.write_batch(batch)
                if sink.tell() > UNARY_MAX_BYTES:
                    self.executor.cancel(req.query_id)
                    raise QueryError("RESOURCE_EXHAUSTED",
                                     f"result larger than {UNARY_MAX_BYTES:,} bytes: use Execute")
            if writer is None and stats.schema is not None:
                writer = pa.ipc.new_stream(sink, stats.schema)  # no rows: still the schema
            if writer is not None:
                writer.close()
            return sink.getvalue().to_pybytes()

        with self._slots:
            try:
                # DuckDB runs faster on a new thread than on the gRPC pool's long-lived ones
                # (a point query 34 vs 49 ms: qengine/prefetch.py); Execute's prefetch thread is new too.
                ipc = on_new_thread(answer, name="qengine-query")
            except QueryError as err:
                context.abort(getattr(grpc.StatusCode, err.code), str(err))
        return pb.ResultBatch(arrow_ipc=ipc, rows=stats.rows, last=True,
                              rows_total=stats.rows, chunks=stats.chunks, files=stats.files,
                              seconds=stats.seconds)

    def Cancel(self, request: pb.CancelRequest, context):
        return pb.CancelReply(found=self.executor.cancel(request.query_id))

    def Inventory(self, request, context):
        self.executor.inventory.refresh()
        unreadable = self.executor.unreadable_dirs()
        if unreadable:
            log.warning("files placed since this worker started resolve into %s, which its sandbox does not "
                        "allow: queries reading them fail until the worker restarts (or give --allow-dir)",
                        ", ".join(unreadable))
        tables = []
        for t in self.executor.inventory.tables():
            rows = [t.manifest.chunks[c].rows for c in t.chunks]
            tables.append(pb.TableInventory(
                database=t.database, table=t.name, role=t.manifest.role, chunk_ids=t.chunks,
                chunk_rows=rows, rows=sum(f.rows for k in ("data", "replicated") for f in t.files.get(k, [])),
                files=sum(len(v) for v in t.files.values()),
                lacking_overlap_chunk_array=t.lacking_overlap.astype("<i4").tobytes()))
        return pb.InventoryReply(worker_id=self.worker_id, tables=tables)

    def Health(self, request, context):
        return pb.HealthReply(status="ok", running=self.executor.running, version=__version__,
                              uptime_seconds=time.time() - self.started)


def _add_service(service: WorkerService, server: grpc.Server) -> None:
    """As the generated ``add_WorkerServicer_to_server``, but ``Execute`` yields hand-framed
    ResultBatch bytes (qengine/proto/framing.py) as well as messages."""
    des = decode_chunk_query  # uploads stay views of the received bytes
    handlers = {
        "Execute": grpc.unary_stream_rpc_method_handler(service.Execute, request_deserializer=des,
                                                        response_serializer=serialize_result),
        "Query": grpc.unary_unary_rpc_method_handler(service.Query, request_deserializer=des,
                                                     response_serializer=pb.ResultBatch.SerializeToString),
        "Cancel": grpc.unary_unary_rpc_method_handler(service.Cancel, request_deserializer=pb.CancelRequest.FromString,
                                                      response_serializer=pb.CancelReply.SerializeToString),
        "Inventory": grpc.unary_unary_rpc_method_handler(
            service.Inventory, request_deserializer=pb.InventoryRequest.FromString,
            response_serializer=pb.InventoryReply.SerializeToString),
        "Health": grpc.unary_unary_rpc_method_handler(service.Health, request_deserializer=pb.HealthRequest.FromString,
                                                      response_serializer=pb.HealthReply.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("qengine.worker.Worker", handlers),))
    server.add_registered_method_handlers("qengine.worker.Worker", handlers)


def make_server(root: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 0,
                secret: str | None = None, threads: int = 2, memory_limit: str = "2GB",
                max_concurrent: int = 4, tls_cert: str | None = None, tls_key: str | None = None,
                worker_id: str | None = None, allow_dirs: "list[str] | None" = None,
                ) -> tuple[grpc.Server, int, WorkerService]:
    """Build (not start) a worker server; returns it with the bound port (ephemeral if 0)."""
    inventory = Inventory(root)
    executor = Executor(inventory, threads=threads, memory_limit=memory_limit, allow_dirs=allow_dirs)
    service = WorkerService(executor, worker_id or f"{socket.gethostname()}:{port}", max_concurrent)
    interceptors = [_SecretInterceptor(secret)] if secret else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_concurrent + 8, thread_name_prefix="worker-rpc"),
        interceptors=interceptors,
        options=[("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 512 << 20)],
    )
    _add_service(service, server)
    address = f"{host}:{port}"
    if tls_cert and tls_key:
        creds = grpc.ssl_server_credentials([(Path(tls_key).read_bytes(), Path(tls_cert).read_bytes())])
        bound = server.add_secure_port(address, creds)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind worker to {address}")
    service.worker_id = worker_id or f"{socket.gethostname()}:{bound}"
    return server, bound, service


# ------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, required=True, help="data root (a store, or this worker's part of it)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: any free port, printed on start)")
    p.add_argument("--secret-file", type=Path, help="file holding the czar<->worker shared secret")
    p.add_argument("--threads", type=int, default=2, help="DuckDB threads per query (default 2)")
    p.add_argument("--memory-limit", default="2GB", help="DuckDB memory limit per query (default 2GB)")
    p.add_argument("--max-concurrent", type=int, default=4, help="queries run at once (default 4)")
    p.add_argument("--tls-cert", help="TLS certificate (PEM); with --tls-key enables TLS")
    p.add_argument("--tls-key", help="TLS private key (PEM)")
    p.add_argument("--port-file", type=Path, help="write the bound port to this file once listening")
    p.add_argument("--allow-dir", action="append", default=[], metavar="DIR",
                   help="a directory queries may also read (repeatable): where files symlinked into the data "
                        "root by `qengine place --mode symlink` live on shared storage. Directories that the "
                        "data root's symlinks point to at start are allowed without it")


def run(args: argparse.Namespace) -> int:
    secret = args.secret_file.read_text().strip() if args.secret_file else os.environ.get("QENGINE_SECRET")
    server, port, service = make_server(
        args.data, host=args.host, port=args.port, secret=secret, threads=args.threads,
        memory_limit=args.memory_limit, max_concurrent=args.max_concurrent,
        tls_cert=args.tls_cert, tls_key=args.tls_key, allow_dirs=args.allow_dir)
    server.start()
    n = len(service.executor.inventory.tables())
    print(f"qengine worker listening on {args.host}:{port} ({n} tables under {args.data})", file=sys.stderr)
    if args.port_file:
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        tmp.replace(args.port_file)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    server.stop(grace=2).wait()
    service.executor.close()
    return 0
