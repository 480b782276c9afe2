"""ResultBatch messages framed by hand for the streaming ``Execute`` call.

A result batch is mostly one large ``bytes`` field (an Arrow IPC stream). Built the usual way,
its bytes are copied four times in Python before gRPC sends them (``to_pybytes``, the message
field, ``SerializeToString``) and once more on receipt (``FromString``). Framing the field by
hand — it is the message's first field, so the bytes are ``0x0a <varint length> <payload>``
followed by the other fields in ordinary protobuf encoding — leaves one copy on each side. The
wire format is unchanged: generated stubs read these messages as usual.
"""
from __future__ import annotations

import pyarrow as pa

from qengine.proto import worker_pb2 as pb

__all__ = ["frame_batch", "serialize_result", "deframe_result"]

_IPC_TAG = 0x0A  # field 1 (arrow_ipc), wire type 2 (length-delimited)
_ROWS_TAG = 0x10  # field 2 (rows), wire type 0 (varint)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def frame_batch(ipc: pa.Buffer, rows: int) -> bytes:
    """The encoded ResultBatch(arrow_ipc=ipc, rows=rows), copying ``ipc`` once."""
    return b"".join((bytes((_IPC_TAG,)), _varint(ipc.size), memoryview(ipc),
                     bytes((_ROWS_TAG,)), _varint(rows)))


def serialize_result(msg: "bytes | pb.ResultBatch") -> bytes:
    """gRPC response serializer: framed bytes pass through, messages are encoded."""
    return msg if isinstance(msg, bytes) else msg.SerializeToString()


def deframe_result(data: bytes) -> tuple[memoryview | None, pb.ResultBatch]:
    """gRPC response deserializer: (the IPC payload as a view of ``data``, the other fields)."""
    if not data or data[0] != _IPC_TAG:
        return None, pb.ResultBatch.FromString(data)
    n = shift = 0
    pos = 1
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            break
    view = memoryview(data)[pos:pos + n]
    return view, pb.ResultBatch.FromString(data[pos + n:])
