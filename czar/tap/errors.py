"""TAP's own errors, in qengine's hierarchy so that every front end maps them alike."""
from __future__ import annotations

from qengine.errors import QEngineError, QueryError

__all__ = ["TapParamError", "UploadError", "message_of"]


class TapParamError(QEngineError):
    """A TAP/UWS request parameter is missing, repeated or malformed (a protocol error)."""


class UploadError(QEngineError):
    """A table given with UPLOAD cannot be read, fetched, or is too large."""


def message_of(exc: BaseException) -> str:
    """What the error VOTable says: the problem, and where in the query when known."""
    if isinstance(exc, QueryError):
        return str(exc)  # already "line L, column C: reason (near 'token')"
    if isinstance(exc, QEngineError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"
