"""The czar's MySQL wire-protocol front end (Qserv's native interface).

>>> handle = start_mysql_server(czar, "127.0.0.1", 0)   # background thread; handle.port
>>> handle.stop()
"""
from czar.mysql.server import (
    DEFAULT_PORT,
    MySQLServerHandle,
    serve_mysql,
    start_mysql_server,
)

__all__ = ["DEFAULT_PORT", "MySQLServerHandle", "serve_mysql", "start_mysql_server"]
