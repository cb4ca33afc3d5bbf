"""What the binlog does not say about a table, looked up in information_schema.

MariaDB's JSON is LONGTEXT with a `CHECK (json_valid(col))` constraint: its binlog column is a
plain utf8mb4 BLOB. The constraint is the only way to know the column holds JSON.
The lookup reflects the table *now*; after DDL the cache is cleared so the next rows re-read it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pymysql

log = logging.getLogger(__name__)

JSON_VALID = re.compile(r"^\s*json_valid\(\s*`?([^`()]+)`?\s*\)\s*$", re.IGNORECASE)


class SchemaInfo:
    def __init__(self, connection_settings: dict[str, Any], is_mariadb: bool):
        self._settings = connection_settings
        self._is_mariadb = is_mariadb
        self._conn: pymysql.connections.Connection | None = None
        self._json: dict[tuple[str, str], frozenset[str]] = {}
        self._columns: dict[tuple[str, str], dict[str, tuple[bool, str | None]]] = {}
        self._keys: dict[tuple[str, str], tuple[str, ...]] = {}
        self._points: dict[tuple[str, str], frozenset[str]] = {}

    def invalidate(self) -> None:
        self._json.clear()
        self._columns.clear()
        self._keys.clear()
        self._points.clear()

    def column_facts(self, db: str, table: str) -> dict[str, tuple[bool, str | None]]:
        """{column: (nullable, COLUMN_DEFAULT as information_schema spells it)}: the Debezium format's
        schemas (schemas.enable) say both, and the binlog says neither."""
        key = (db, table)
        cached = self._columns.get(key)
        if cached is None:
            rows = self._query(
                "SELECT COLUMN_NAME, IS_NULLABLE, COLUMN_DEFAULT FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
                (db, table),
            )
            cached = self._columns[key] = {name: (nullable == "YES", default) for name, nullable, default in rows}
        return cached

    def primary_key(self, db: str, table: str) -> tuple[str, ...]:
        """The primary key's columns in key order (the binlog lists them in table order); Debezium's
        keys follow the key's order."""
        key = (db, table)
        cached = self._keys.get(key)
        if cached is None:
            rows = self._query(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s "
                "AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
                (db, table),
            )
            cached = self._keys[key] = tuple(name for (name,) in rows)
        return cached

    def point_columns(self, db: str, table: str) -> frozenset[str]:
        """Columns declared POINT: the binlog calls every spatial column GEOMETRY, Debezium writes a
        POINT's value and schema with x and y."""
        key = (db, table)
        cached = self._points.get(key)
        if cached is None:
            rows = self._query(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
                "AND DATA_TYPE = 'point'",
                (db, table),
            )
            cached = self._points[key] = frozenset(name for (name,) in rows)
        return cached

    def json_columns(self, db: str, table: str) -> frozenset[str]:
        if not self._is_mariadb:
            return frozenset()  # MySQL's JSON has its own binlog type
        key = (db, table)
        cached = self._json.get(key)
        if cached is None:
            cached = self._json[key] = self._load_json_columns(db, table)
        return cached

    def _load_json_columns(self, db: str, table: str) -> frozenset[str]:
        rows = self._query(
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s",
            (db, table),
        )
        return frozenset(m.group(1) for (clause,) in rows if (m := JSON_VALID.match(clause)))

    def _query(self, sql: str, args: tuple[str, ...]) -> tuple[tuple[Any, ...], ...]:
        """Rows of one query, reconnecting once if the connection went away."""
        for attempt in (1, 2):
            try:
                if self._conn is None:
                    self._conn = pymysql.connect(**self._settings, autocommit=True)
                with self._conn.cursor() as cur:
                    cur.execute(sql, args)
                    return tuple(cur.fetchall())
            except pymysql.err.MySQLError:
                self.close()
                if attempt == 2:
                    raise
        return ()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
            self._conn = None
