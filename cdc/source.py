"""The source server: how to connect to it, which kind it is and where its binlog ends now.

Used by the reader (cdc/reader.py) and the snapshot (cdc/snapshot.py) alike; the snapshot must not
import the reader (the reader checks the snapshot's progress at start).
"""

from __future__ import annotations

from typing import Any

import pymysql
from pymysql.cursors import DictCursor

from cdc.checkpoint import Position
from schemas.settings import Settings


def connection_settings(settings: Settings) -> dict[str, Any]:
    return {
        "host": settings.mysql.host,
        "port": settings.mysql.port,
        "user": settings.mysql.user,
        "password": settings.mysql.password.get_secret_value(),
        "charset": "utf8mb4",
        "connect_timeout": 10,
        "read_timeout": settings.mysql.read_timeout_s,
        "write_timeout": settings.mysql.read_timeout_s,
        # mysql.ssl: pymysql then requires TLS (refuses a server without it) for every connection.
        **({"ssl": settings.mysql.ssl.pymysql_ssl()} if settings.mysql.ssl is not None else {}),
    }


def _selected(cur: DictCursor, sql: str, column: str) -> Any:
    """The value of `column` in the one row `sql` returns (None when it returns none)."""
    cur.execute(sql)
    row = cur.fetchone()
    return row[column] if row is not None else None


def detect_server(settings: Settings) -> tuple[bool, Position]:
    """(is_mariadb, current end of the binlog) — where a reader with no checkpoint starts."""
    conn = pymysql.connect(**connection_settings(settings), cursorclass=DictCursor)
    try:
        with conn.cursor() as cur:
            is_mariadb = "mariadb" in str(_selected(cur, "SELECT VERSION() AS v", "v") or "").lower()
            if settings.mysql.is_mariadb is not None:
                is_mariadb = settings.mysql.is_mariadb
            try:
                cur.execute("SHOW MASTER STATUS")
            except pymysql.err.ProgrammingError:  # MySQL 8.4 renamed it
                cur.execute("SHOW BINARY LOG STATUS")
            status = cur.fetchone()
            if status is None:
                raise RuntimeError("binary logging is off on the source server (log_bin)")
            if is_mariadb:
                gtid = _selected(cur, "SELECT @@global.gtid_binlog_pos AS g", "g") or ""
            else:
                gtid = status.get("Executed_Gtid_Set") or None
            return is_mariadb, Position(file=status["File"], pos=int(status["Position"]), gtid_set=gtid)
    finally:
        conn.close()
