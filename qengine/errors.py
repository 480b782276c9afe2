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
