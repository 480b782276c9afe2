"""Hand-framed ResultBatch bytes are ordinary protobuf: generated code reads them, and back."""
from __future__ import annotations

import pyarrow as pa
from hypothesis import given, strategies as st

from qengine.proto import worker_pb2 as pb
from qengine.proto.framing import deframe_result, serialize_result


def test_ordinary_messages_pass_both_ways():
    last = pb.ResultBatch(last=True, rows_total=12, chunks=3, files=2, seconds=0.5)
    data = serialize_result(last)
    assert data == last.SerializeToString()
    view, msg = deframe_result(data)
    assert view is None and msg == last
    with_schema = pb.ResultBatch(arrow_ipc=b"abc", last=True, rows_total=0)
    view, msg = deframe_result(with_schema.SerializeToString())
    assert bytes(view) == b"abc" and msg.last and msg.rows_total == 0


@given(rows=st.integers(0, 3000), seed=st.integers(0, 2**31))
def test_record_batches_framed_in_place_read_back(rows, seed):
    import numpy as np

    from qengine.proto.framing import frame_record_batch

    rng = np.random.default_rng(seed)
    batch = pa.record_batch({
        "id": pa.array(rng.integers(-2**62, 2**62, rows)),
        "x": pa.array(rng.random(rows)),
        "s": pa.array([None if i % 7 == 0 else "v" * (i % 13) for i in range(rows)]),
        "b": pa.array(rng.random(rows) < 0.5),
    })
    framed = frame_record_batch(batch)
    assert type(framed) is bytes
    msg = pb.ResultBatch.FromString(framed)
    assert msg.rows == rows and not msg.last
    assert pa.ipc.open_stream(pa.py_buffer(msg.arrow_ipc)).read_all().equals(pa.Table.from_batches([batch]))
    view, rest = deframe_result(framed)
    assert rest.rows == rows
    assert pa.ipc.open_stream(pa.py_buffer(view)).read_all().equals(pa.Table.from_batches([batch]))
    assert hash(framed) == hash(bytes(framed))  # an ordinary, hashable bytes object


@given(n_uploads=st.integers(0, 3), rows=st.integers(0, 500), sql=st.text(max_size=40),
       ids=st.lists(st.integers(-2**31, 2**31 - 1), max_size=20), lane=st.sampled_from(["", "scan", "interactive"]))
def test_requests_with_uploads_are_protobuf_both_ways(n_uploads, rows, sql, ids, lane):
    import numpy as np

    from qengine.proto.framing import decode_chunk_query, encode_chunk_query

    msg = pb.ChunkQuery(query_id="q", sql=sql, chunk_ids=ids, max_rows=rows, lane=lane, timeout_seconds=1.5,
                        chunk_id_array=np.asarray(ids, "<i4").tobytes())
    uploads = {f"up{i}": pa.table({"row": pa.array(np.arange(rows, dtype=np.int32)),
                                   "name": pa.array([f"s{j}" for j in range(rows)])})
               for i in range(n_uploads)}
    data = encode_chunk_query(msg, uploads)
    # generated code reads it as the message with its UploadTables
    parsed = pb.ChunkQuery.FromString(data)
    assert [u.name for u in parsed.uploads] == list(uploads)
    for u in parsed.uploads:
        assert pa.ipc.open_stream(pa.py_buffer(u.arrow_ipc)).read_all().equals(uploads[u.name])
    del parsed.uploads[:]
    assert parsed == msg
    # and the worker's decoder reads generated encodings and ours alike
    standard = pb.ChunkQuery(query_id="q", sql=sql, chunk_ids=ids, max_rows=rows, lane=lane, timeout_seconds=1.5,
                             chunk_id_array=msg.chunk_id_array,
                             uploads=[pb.UploadTable(name=n, arrow_ipc=_ipc_bytes(t)) for n, t in uploads.items()])
    for wire in (data, standard.SerializeToString()):
        got, ups = decode_chunk_query(wire)
        assert got == msg
        assert [n for n, _ in ups] == list(uploads)
        for n, view in ups:
            assert pa.ipc.open_stream(pa.py_buffer(view)).read_all().equals(uploads[n])


def _ipc_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def test_truncated_requests_are_refused():
    import pytest

    from qengine.proto.framing import decode_chunk_query, encode_chunk_query

    data = encode_chunk_query(pb.ChunkQuery(sql="SELECT 1"), {"t": pa.table({"a": [1, 2, 3]})})
    for cut in (len(data) - 1, len(data) // 2, 12):
        with pytest.raises((ValueError, IndexError)):
            decode_chunk_query(data[:cut])


def test_a_large_batch_frames_with_a_long_length_prefix():
    import numpy as np

    from qengine.proto.framing import frame_record_batch

    batch = pa.record_batch({"x": pa.array(np.arange(400_000, dtype=np.float64))})  # 3.2 MB: 4-byte varint
    framed = frame_record_batch(batch)
    msg = pb.ResultBatch.FromString(framed)
    assert msg.rows == 400_000 and len(msg.arrow_ipc) > 2**21
    view, rest = deframe_result(framed)
    assert rest.rows == 400_000
    assert pa.ipc.open_stream(pa.py_buffer(view)).read_all().equals(pa.Table.from_batches([batch]))
