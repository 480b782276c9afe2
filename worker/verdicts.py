"""Remembered sandbox verdicts, so that the worker's own SQL check costs microseconds per call.

:func:`worker.sandbox.check_worker_sql` parses with DuckDB (``json_serialize_sql``): about a
millisecond on a quiet machine, several under load, on the path of every point query and
cone search. Its verdict depends on the statement's structure (statements, table references,
function names), never on the values of numeric literals; the czar sends the same shapes over
and over with other positions, ids and radii. So a query that passed is remembered under its
text with every numeric literal outside quotes replaced by ``0``, and a query of the same
shape passes without a second parse.

Only texts that can be split into quoted and unquoted parts without a parser are remembered:
no comments, no dollar quotes, no backslashes, balanced quotes (the czar writes none of
these); anything else is checked in full every time. Refusals are never remembered.
"""
from __future__ import annotations

import re
import threading
from collections import OrderedDict

from worker.sandbox import check_worker_sql

__all__ = ["check", "shape"]

_MAX = 4096
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_NUMBER = re.compile(r"(?<![\w$.])(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?![\w$.])")
_UNSAFE = ("--", "/*", "$", "\\")

_passed: OrderedDict[str, None] = OrderedDict()
_lock = threading.Lock()


def shape(sql: str) -> str | None:
    """``sql`` with its unquoted numeric literals as ``0``; None when the text cannot be split
    into quoted and unquoted parts safely."""
    if any(u in sql for u in _UNSAFE):
        return None
    out: list[str] = []
    pos = 0
    for m in _QUOTED.finditer(sql):
        between = sql[pos:m.start()]
        if "'" in between or '"' in between:
            return None
        out.append(_NUMBER.sub("0", between))
        out.append(m.group(0))
        pos = m.end()
    rest = sql[pos:]
    if "'" in rest or '"' in rest:
        return None
    out.append(_NUMBER.sub("0", rest))
    return "".join(out)


def check(sql: str) -> None:
    """:func:`worker.sandbox.check_worker_sql`, skipped for a shape that passed before."""
    key = shape(sql)
    if key is not None:
        with _lock:
            if key in _passed:
                _passed.move_to_end(key)
                return
    check_worker_sql(sql)
    if key is not None:
        with _lock:
            _passed[key] = None
            if len(_passed) > _MAX:
                _passed.popitem(last=False)
