"""Run one TAP query: TAP_SCHEMA locally, everything else on the czar (with MAXREC and
uploads), and say whether the result was cut at MAXREC."""
from __future__ import annotations

import logging
from dataclasses import dataclass

import pyarrow as pa

from czar.dialects import parse
from czar.engine import Czar
from czar.tap.params import TapParams
from czar.tap.tap_schema import TapSchema
from qengine.errors import QueryError
from qengine.users import Principal

__all__ = ["Result", "run_query"]

log = logging.getLogger(__name__)

OVERFLOW_KEY = b"qengine.overflow"


@dataclass
class Result:
    table: pa.Table
    overflow: bool


def run_query(czar: Czar, tap_schema: TapSchema, params: TapParams, uploads: dict[str, pa.Table],
              *, query_id: str | None = None, timeout: float = 0.0, user: Principal | None = None,
              frontend: str = "tap", client: str | None = None) -> Result:
    """The answer to ``params`` (first MAXREC rows and the overflow flag); ``tap_schema`` is the
    one ``user`` sees, whose grants and limits apply (None: trusted)."""
    tree = parse(params.query, "adql" if params.lang == "adql" else params.lang)
    reads_ts, reads_upload, reads_other = TapSchema.references(tree)
    if reads_ts:
        if reads_upload or reads_other:
            raise QueryError("TAP_SCHEMA tables cannot be combined with catalogue or uploaded tables "
                             "in one query")
        if params.lang != "adql":
            raise QueryError("TAP_SCHEMA is queried in ADQL")
        table, overflow = tap_schema.query(tree, params.maxrec)
        return Result(table, overflow)
    if reads_upload and not uploads:
        raise QueryError("the query reads TAP_UPLOAD tables but the request has no UPLOAD parameter")
    table = czar.query(params.query, lang=params.lang, timeout=timeout, query_id=query_id,
                       maxrec=params.maxrec, uploads=uploads or None, user=user, frontend=frontend, client=client)
    return Result(table, (table.schema.metadata or {}).get(OVERFLOW_KEY) == b"true")
