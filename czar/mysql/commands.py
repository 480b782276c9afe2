"""Recognise Qserv's own statements by their text, as Qserv's czar does (``UserQueryType``):
``SUBMIT <query>``, ``SELECT * FROM qserv_result(id)``, ``CALL qserv_result_delete(id)``,
``KILL [QUERY|CONNECTION] n``, ``CANCEL id`` and ``SHOW [FULL] PROCESSLIST``. None of them is
MySQL that sqlglot parses, so they are matched before any parsing."""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Command", "classify", "strip_statement"]

_FLAGS = re.IGNORECASE | re.DOTALL
_PATTERNS: list[tuple[str, re.Pattern]] = [
    ("submit", re.compile(r"^submit\s+(?P<arg>.+)$", _FLAGS)),
    ("result", re.compile(r"^select\s+\*\s+from\s+qserv_result\s*\(\s*(?P<arg>\d+)\s*\)$", _FLAGS)),
    ("delete", re.compile(r"^call\s+qserv_result_delete\s*\(\s*(?P<arg>\d+)\s*\)$", _FLAGS)),
    ("kill", re.compile(r"^kill\s+(?:(?P<kind>query|connection)\s+)?(?P<arg>\d+)$", _FLAGS)),
    ("cancel", re.compile(r"^cancel\s+(?P<arg>\d+)$", _FLAGS)),
    ("processlist", re.compile(r"^show\s+(?P<full>full\s+)?processlist$", _FLAGS)),
    ("call", re.compile(r"^call\s+(?P<arg>.+)$", _FLAGS)),
]
_LEADING_COMMENT = re.compile(r"^\s*(?:/\*(?!!).*?\*/|--[ \t][^\n]*(?:\n|$)|#[^\n]*(?:\n|$))", re.DOTALL)


@dataclass(frozen=True)
class Command:
    kind: str           # submit, result, delete, kill, cancel, processlist, call
    arg: str | None     # the query (submit), the id, or the procedure text (call)
    option: str = ""    # KILL's QUERY/CONNECTION; FULL for the process list


def strip_statement(sql: str) -> str:
    """The statement without leading comments, surrounding blanks and trailing semicolons."""
    text = sql
    while True:
        m = _LEADING_COMMENT.match(text)
        if not m:
            break
        text = text[m.end():]
    return text.strip().rstrip(";").rstrip()


def classify(sql: str) -> Command | None:
    """The Qserv statement ``sql`` is, or None for anything else."""
    text = strip_statement(sql)
    for kind, pattern in _PATTERNS:
        m = pattern.match(text)
        if m:
            groups = m.groupdict()
            option = (groups.get("kind") or groups.get("full") or "").strip().upper()
            return Command(kind, groups.get("arg"), option)
    return None
