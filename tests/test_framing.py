"""Hand-framed ResultBatch bytes are ordinary protobuf: generated code reads them, and back."""
from __future__ import annotations

import pyarrow as pa
from hypothesis import given, strategies as st

from qengine.proto import worker_pb2 as pb
from qengine.proto.framing import deframe_result, frame_batch, serialize_result


@given(size=st.sampled_from([0, 1, 127, 128, 129, 16383, 16384, 70000, 2_097_152]),
       rows=st.integers(0, 2**40), fill=st.integers(0, 255))
def test_framed_batches_are_protobuf_result_batches(size, rows, fill):
    payload = bytes([fill]) * size
    framed = frame_batch(pa.py_buffer(payload), rows)
    msg = pb.ResultBatch.FromString(framed)
    assert msg.arrow_ipc == payload and msg.rows == rows and not msg.last
    assert msg == pb.ResultBatch(arrow_ipc=payload, rows=rows)
    view, rest = deframe_result(framed)
    assert bytes(view) == payload and rest.rows == rows


def test_ordinary_messages_pass_both_ways():
    last = pb.ResultBatch(last=True, rows_total=12, chunks=3, files=2, seconds=0.5)
    data = serialize_result(last)
    assert data == last.SerializeToString()
    view, msg = deframe_result(data)
    assert view is None and msg == last
    with_schema = pb.ResultBatch(arrow_ipc=b"abc", last=True, rows_total=0)
    view, msg = deframe_result(with_schema.SerializeToString())
    assert bytes(view) == b"abc" and msg.last and msg.rows_total == 0
