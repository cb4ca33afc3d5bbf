"""The columns of the monitored tables, read from the source server, to check rules against.

`rules check`, `config check` and the streams worker at start check that a rule's {after.COL}
placeholders name columns, and that a required parameter bound by name has a column to bind to,
when the table exists. The server may be unreachable where rules are checked (a laptop, CI):
then nothing is checked against columns, and the reason is kept for the caller to say so.
"""

from __future__ import annotations

import logging
from typing import Any

import pymysql

from cdc.source import connection_settings
from schemas.settings import Settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 3  # a check, not a reader: an unreachable server must not hold it up long


class TableColumns:
    """Callable (db, table) -> the table's column names, or None when it does not exist or the
    server cannot be asked (`unreachable` then says why). One connection, opened on first use."""

    def __init__(self, settings: Settings):
        self._settings = settings
        self._conn: Any = None
        self._cache: dict[tuple[str, str], frozenset[str] | None] = {}
        self.unreachable: str | None = None

    def __call__(self, db: str, table: str) -> frozenset[str] | None:
        key = (db, table)
        if key not in self._cache:
            self._cache[key] = self._load(db, table)
        return self._cache[key]

    def _load(self, db: str, table: str) -> frozenset[str] | None:
        if self.unreachable is not None:
            return None
        try:
            if self._conn is None:
                self._conn = pymysql.connect(
                    **{**connection_settings(self._settings), "connect_timeout": CONNECT_TIMEOUT_S}
                )
            with self._conn.cursor() as cur:
                cur.execute(
                    "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                    (db, table),
                )
                names = frozenset(str(name) for (name,) in cur.fetchall())
        except (pymysql.err.MySQLError, OSError, ValueError) as e:  # refused, TLS files, access denied
            # pymysql's messages name host, port and user at most, never the password.
            why = e.args[-1] if isinstance(e, pymysql.err.MySQLError) and e.args else e
            self.unreachable = f"columns not checked: cannot read them from MySQL ({type(e).__name__}: {why})"
            log.warning("%s", self.unreachable)
            self.close()
            return None
        return names or None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
            self._conn = None
