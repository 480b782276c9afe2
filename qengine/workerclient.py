"""A thin client of the worker protocol, used by the czar, tests and benchmarks."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import grpc
import numpy as np
import pyarrow as pa

from qengine.errors import QEngineError
from qengine.proto import worker_pb2 as pb
from qengine.proto import worker_pb2_grpc as pb_grpc
from qengine.proto.framing import deframe_result, encode_chunk_query, serialize_request

SECRET_HEADER = "x-qengine-secret"


class WorkerError(QEngineError):
    """A worker refused or failed a call; ``code`` is the gRPC status name."""

    def __init__(self, code: str, message: str, worker: str = "") -> None:
        super().__init__(f"{worker + ': ' if worker else ''}{message}")
        self.code = code
        self.worker = worker


@dataclass
class ExecuteSummary:
    rows: int = 0
    chunks: int = 0
    files: int = 0
    seconds: float = 0.0
    schema: pa.Schema | None = None


def _as_table(table: "pa.Table | pa.RecordBatch") -> pa.Table:
    return pa.Table.from_batches([table]) if isinstance(table, pa.RecordBatch) else table


class WorkerClient:
    """One channel to one worker."""

    def __init__(self, address: str, secret: str | None = None, *, tls_ca: str | None = None) -> None:
        self.address = address
        opts = [("grpc.max_receive_message_length", 512 << 20), ("grpc.max_send_message_length", 512 << 20),
                # a restarted worker is found again within a second or two (gRPC's default
                # reconnect backoff grows to two minutes while a worker is down)
                ("grpc.initial_reconnect_backoff_ms", 250), ("grpc.min_reconnect_backoff_ms", 250),
                ("grpc.max_reconnect_backoff_ms", 2000)]
        if tls_ca:
            creds = grpc.ssl_channel_credentials(Path(tls_ca).read_bytes())
            self.channel = grpc.secure_channel(address, creds, options=opts)
        else:
            self.channel = grpc.insecure_channel(address, options=opts)
        self.stub = pb_grpc.WorkerStub(self.channel)
        # requests are encoded by hand (uploads written once): qengine/proto/framing.py
        self._execute = self.channel.unary_stream(
            "/qengine.worker.Worker/Execute", request_serializer=serialize_request,
            response_deserializer=deframe_result)
        self._query = self.channel.unary_unary(
            "/qengine.worker.Worker/Query", request_serializer=serialize_request,
            response_deserializer=pb.ResultBatch.FromString)
        self.metadata = ((SECRET_HEADER, secret),) if secret else ()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> "WorkerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _error(self, exc: grpc.RpcError) -> WorkerError:
        return WorkerError(exc.code().name, exc.details() or str(exc), self.address)

    @staticmethod
    def _request(sql: str, *, query_id: str = "", chunk_ids: "list[int] | np.ndarray | None" = None,
                 uploads: dict[str, pa.Table] | None = None, max_rows: int = 0, max_bytes: int = 0,
                 threads: int = 0, memory_limit: str = "", batch_rows: int = 0,
                 timeout_seconds: float = 0.0, lane: str = "") -> bytes:
        """The encoded ChunkQuery (its uploads' IPC streams written straight into it)."""
        ids = b"" if chunk_ids is None else np.asarray(chunk_ids, dtype="<i4").tobytes()
        msg = pb.ChunkQuery(
            query_id=query_id, sql=sql, all_chunks=chunk_ids is None, chunk_id_array=ids,
            max_rows=max_rows, max_bytes=max_bytes, threads=threads, memory_limit=memory_limit,
            batch_rows=batch_rows, timeout_seconds=timeout_seconds, lane=lane)
        return encode_chunk_query(msg, {n: _as_table(t) for n, t in (uploads or {}).items()})

    def execute_small(self, sql: str, *, summary: ExecuteSummary | None = None,
                      deadline: float | None = None, on_call: Callable[[grpc.Future], None] | None = None,
                      **kwargs) -> pa.Table | None:
        """Run one query answered in a single message (the unary ``Query`` call: a third of a
        streaming call's fixed cost). Returns None when the result is too large for one message:
        use :meth:`execute` then. Same keywords as :meth:`execute`."""
        try:
            if on_call is None:
                msg = self._query(self._request(sql, **kwargs), metadata=self.metadata, timeout=deadline)
            else:  # cancellable from another thread (the czar's health checks)
                fut = self._query.future(self._request(sql, **kwargs), metadata=self.metadata, timeout=deadline)
                on_call(fut)
                msg = fut.result()
        except grpc.FutureCancelledError:
            raise WorkerError("CANCELLED", "call cancelled by the client", self.address) from None
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "use Execute" in (exc.details() or ""):
                return None
            raise self._error(exc) from None
        table = pa.ipc.open_stream(pa.py_buffer(msg.arrow_ipc)).read_all() if msg.arrow_ipc else None
        if summary is not None:
            summary.rows, summary.chunks = msg.rows_total, msg.chunks
            summary.files, summary.seconds = msg.files, msg.seconds
            summary.schema = table.schema if table is not None else None
        return table if table is not None else pa.table({})

    def execute(self, sql: str, *, query_id: str = "", chunk_ids: list[int] | None = None,
                uploads: dict[str, pa.Table] | None = None, max_rows: int = 0, max_bytes: int = 0,
                threads: int = 0, memory_limit: str = "", batch_rows: int = 0,
                timeout_seconds: float = 0.0, lane: str = "", summary: ExecuteSummary | None = None,
                deadline: float | None = None,
                on_call: Callable[[grpc.Future], None] | None = None) -> Iterator[pa.RecordBatch]:
        """Stream the result batches of one query (chunk_ids None: every chunk held).

        ``on_call`` receives the call once started: ``call.cancel()`` from another thread ends
        the stream with a CANCELLED error (how the czar abandons a stalled worker)."""
        req = self._request(sql, query_id=query_id, chunk_ids=chunk_ids, uploads=uploads, max_rows=max_rows,
                            max_bytes=max_bytes, threads=threads, memory_limit=memory_limit,
                            batch_rows=batch_rows, timeout_seconds=timeout_seconds, lane=lane)
        call = self._execute(req, metadata=self.metadata, timeout=deadline)
        if on_call is not None:
            on_call(call)
        try:
            for payload, msg in call:
                if payload is not None or msg.arrow_ipc:
                    # a view of the received bytes: no copy (qengine/proto/framing.py)
                    reader = pa.ipc.open_stream(pa.py_buffer(payload if payload is not None else msg.arrow_ipc))
                    if summary is not None:
                        summary.schema = reader.schema
                    for batch in reader:
                        yield batch
                if msg.last and summary is not None:
                    summary.rows, summary.chunks = msg.rows_total, msg.chunks
                    summary.files, summary.seconds = msg.files, msg.seconds
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        finally:
            call.cancel()

    def query(self, sql: str, **kwargs) -> pa.Table:
        summary = kwargs.pop("summary", None) or ExecuteSummary()
        batches = list(self.execute(sql, summary=summary, **kwargs))
        return pa.Table.from_batches(batches, schema=summary.schema)

    def cancel(self, query_id: str) -> bool:
        try:
            return self.stub.Cancel(pb.CancelRequest(query_id=query_id), metadata=self.metadata, timeout=10).found
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def inventory(self) -> pb.InventoryReply:
        try:
            return self.stub.Inventory(pb.InventoryRequest(), metadata=self.metadata, timeout=30)
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def health_future(self, timeout: float = 5.0) -> grpc.Future:
        """Start a Health call; ``.result()`` raises ``grpc.RpcError`` (see :meth:`error`)."""
        return self.stub.Health.future(pb.HealthRequest(), metadata=self.metadata, timeout=timeout)

    def error(self, exc: grpc.RpcError) -> WorkerError:
        """The :class:`WorkerError` for a failed call of this client."""
        return self._error(exc)

    def health(self, timeout: float = 5.0) -> pb.HealthReply:
        try:
            return self.stub.Health(pb.HealthRequest(), metadata=self.metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise self._error(exc) from None
