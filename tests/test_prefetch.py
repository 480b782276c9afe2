"""qengine.prefetch: order kept, errors delivered, early stops clean up in the producer thread."""
from __future__ import annotations

import threading

import pytest

from qengine.prefetch import on_new_thread, prefetch


def test_items_arrive_in_order_and_errors_reach_the_consumer():
    assert list(prefetch(lambda: iter(range(1000)), depth=3)) == list(range(1000))

    def failing():
        yield 1
        raise ValueError("bad row 2")

    got = []
    with pytest.raises(ValueError, match="bad row 2"):
        for x in prefetch(failing):
            got.append(x)
    assert got == [1]


def test_an_early_stop_closes_the_producer_in_its_own_thread():
    closed_in: list[str] = []
    consumer = threading.current_thread().name

    def produce():
        try:
            for i in range(10**9):
                yield i
        finally:
            closed_in.append(threading.current_thread().name)

    it = prefetch(produce, depth=2, name="producer")
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    it.close()   # the consumer stops early (a LIMIT met, a client gone)
    assert closed_in == ["producer"] and consumer != "producer"


def test_on_new_thread_returns_the_result_and_raises_the_error_from_another_thread():
    caller = threading.get_ident()
    assert on_new_thread(lambda: threading.get_ident()) != caller
    assert on_new_thread(lambda: [1, 2, 3]) == [1, 2, 3]

    def failing():
        raise KeyError("no chunk 42")

    with pytest.raises(KeyError, match="no chunk 42"):
        on_new_thread(failing)
