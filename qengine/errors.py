"""One exception hierarchy for qengine; front ends map these to TAP/MySQL/CLI messages."""
from __future__ import annotations


class QEngineError(Exception):
    """Base of every error qengine raises on purpose (bad input, bad config, refused query)."""


class ConfigError(QEngineError):
    """A configuration value or file is invalid."""


class CatalogError(QEngineError):
    """A catalogue definition is malformed or a table/column is unknown.

    Messages name the file, the table and the key at fault.
    """


class CoordinateError(QEngineError, ValueError):
    """Positions that cannot be placed on the sky (NaN, |dec| > 90, non-numeric).

    ``rows`` holds the indices (within the array given) of the offending rows, so that
    ingest can report or reject them one by one.
    """

    def __init__(self, message: str, rows: "list[int] | None" = None) -> None:
        super().__init__(message)
        self.rows = list(rows or [])


class RegionError(QEngineError, ValueError):
    """A spatial region is ill-defined (negative radius, degenerate polygon, ...)."""


class IngestError(QEngineError):
    """Input that cannot be ingested. Names the file, the line/row and the column at fault.

    ``line`` is 1-based: the line number in a text file (header included), otherwise the
    row number within the file. The transaction that met it is rolled back.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: str | None = None) -> None:
        where = ":".join(str(p) for p in (file, line) if p is not None)
        col = f" column {column!r}:" if column else ""
        super().__init__(f"{where}:{col} {message}" if where else f"{col} {message}".strip())
        self.file, self.line, self.column, self.reason = file, line, column, message


class QueryError(QEngineError):
    """A query that cannot be run as written: unknown table/column, unsupported construct,
    refused statement. ``position`` is (line, column), 1-based, when known."""

    def __init__(self, message: str, *, line: int | None = None, column: int | None = None,
                 token: str | None = None) -> None:
        where = f"line {line}, column {column}: " if line is not None and column is not None else ""
        near = f" (near {token!r})" if token else ""
        super().__init__(f"{where}{message}{near}")
        self.line, self.column, self.token, self.reason = line, column, token, message


class QuerySyntaxError(QueryError):
    """The query does not parse in its language (ADQL or Qserv's MySQL dialect)."""
