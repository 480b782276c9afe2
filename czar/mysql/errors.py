"""qengine errors as MySQL errors: the server error code and SQLSTATE a MySQL client expects,
with qengine's message (position and hints included)."""
from __future__ import annotations

import logging
import re
from enum import IntEnum

from mysql_mimic.errors import SQLSTATES, MysqlError

from qengine.errors import QEngineError, QueryError, QuerySyntaxError
from qengine.users import AuthError, LimitError

log = logging.getLogger(__name__)

__all__ = ["Code", "mysql_error", "to_mysql_error"]


class Code(IntEnum):
    """MySQL server error codes (https://dev.mysql.com/doc/mysql-errors/8.0/en/server-error-reference.html)."""

    NO_DB_ERROR = 1046            # No database selected
    BAD_DB_ERROR = 1049           # Unknown database
    NON_UNIQ_ERROR = 1052         # Column is ambiguous
    BAD_FIELD_ERROR = 1054        # Unknown column
    PARSE_ERROR = 1064            # SQL syntax
    EMPTY_QUERY = 1065
    NO_SUCH_THREAD = 1094         # Unknown thread id (KILL)
    UNKNOWN_ERROR = 1105
    NONUNIQ_TABLE = 1066          # Not unique table/alias
    NO_SUCH_TABLE = 1146          # Table doesn't exist
    NOT_SUPPORTED_YET = 1235
    QUERY_INTERRUPTED = 1317      # Query execution was interrupted (KILL QUERY, CANCEL)
    UNKNOWN_TABLE = 1109          # Unknown table in a qualified column (e.g. t.x with no t)
    WRONG_ARGUMENTS = 1210        # Incorrect arguments to a function
    RESULT_TOO_LARGE = 1104       # ER_TOO_BIG_SELECT
    QUERY_TIMEOUT = 3024          # maximum statement execution time exceeded
    ACCESS_DENIED = 1045          # Access denied for user
    TOO_MANY_QUERIES = 1226       # ER_USER_LIMIT_REACHED: a resource limit of the user


# mysql-mimic sends HY000 for codes it does not know; give clients the standard SQLSTATEs.
SQLSTATES.update({
    Code.BAD_DB_ERROR: b"42000", Code.NON_UNIQ_ERROR: b"23000", Code.BAD_FIELD_ERROR: b"42S22",
    Code.NO_SUCH_TABLE: b"42S02", Code.UNKNOWN_TABLE: b"42S02", Code.NONUNIQ_TABLE: b"42000",
    Code.QUERY_INTERRUPTED: b"70100", Code.NO_SUCH_THREAD: b"HY000", Code.WRONG_ARGUMENTS: b"HY000",
    Code.QUERY_TIMEOUT: b"HY000", Code.RESULT_TOO_LARGE: b"42000", Code.ACCESS_DENIED: b"28000",
    Code.TOO_MANY_QUERIES: b"42000",
})

# QueryError has no subclasses per kind yet: the kind is read from the planner's message.
_KINDS: list[tuple[re.Pattern, Code]] = [
    (re.compile(r"^unknown table or alias", re.IGNORECASE), Code.UNKNOWN_TABLE),
    (re.compile(r"^unknown table|^table name .* is ambiguous", re.IGNORECASE), Code.NO_SUCH_TABLE),
    (re.compile(r"^unknown column", re.IGNORECASE), Code.BAD_FIELD_ERROR),
    (re.compile(r"^column .* is ambiguous", re.IGNORECASE), Code.NON_UNIQ_ERROR),
    (re.compile(r"alias .* is used twice", re.IGNORECASE), Code.NONUNIQ_TABLE),
    (re.compile(r"cancelled|interrupted", re.IGNORECASE), Code.QUERY_INTERRUPTED),
    (re.compile(r"time limit|timed out|deadline", re.IGNORECASE), Code.QUERY_TIMEOUT),
    (re.compile(r"not supported|only SELECT|not allowed|only one statement|cannot be translated", re.IGNORECASE),
     Code.NOT_SUPPORTED_YET),
    (re.compile(r"takes .*arguments", re.IGNORECASE), Code.WRONG_ARGUMENTS),
]


def mysql_error(code: Code, message: str) -> MysqlError:
    return MysqlError(message, code=code)  # type: ignore[arg-type]  # any int code is sent as is


def to_mysql_error(exc: BaseException) -> MysqlError:
    """The MySQL error for an exception raised while answering a statement."""
    if isinstance(exc, MysqlError):
        return exc
    if isinstance(exc, QuerySyntaxError):
        return mysql_error(Code.PARSE_ERROR, f"You have an error in your SQL syntax: {exc}")
    if isinstance(exc, QueryError):
        reason = exc.reason or str(exc)
        for pattern, code in _KINDS:
            if pattern.search(reason):
                return mysql_error(code, str(exc))
        return mysql_error(Code.UNKNOWN_ERROR, str(exc))
    if isinstance(exc, LimitError):
        return mysql_error(Code.TOO_MANY_QUERIES, str(exc))
    if isinstance(exc, AuthError):
        return mysql_error(Code.ACCESS_DENIED, str(exc))
    if isinstance(exc, QEngineError):
        return mysql_error(Code.UNKNOWN_ERROR, str(exc))
    log.exception("internal error answering a MySQL client", exc_info=exc)
    return mysql_error(Code.UNKNOWN_ERROR, f"internal error: {exc!r}")
