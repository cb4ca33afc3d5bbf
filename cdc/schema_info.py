"""What the binlog does not say about a table, looked up in information_schema.

MariaDB's JSON is LONGTEXT with a `CHECK (json_valid(col))` constraint: its binlog column is a
plain utf8mb4 BLOB. The constraint is the only way to know the column holds JSON.
The lookup reflects the table *now*; after DDL the cache is cleared so the next rows re-read it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

import pymysql

log = logging.getLogger(__name__)

T = TypeVar("T")
Rows = tuple[tuple[Any, ...], ...]

JSON_VALID = re.compile(r"^\s*json_valid\(\s*`?([^`()]+)`?\s*\)\s*$", re.IGNORECASE)


class SchemaInfo:
    def __init__(self, connection_settings: dict[str, Any], is_mariadb: bool):
        self._settings = connection_settings
        self._is_mariadb = is_mariadb
        self._conn: pymysql.connections.Connection | None = None
        self._facts: dict[tuple[str, str, str], Any] = {}  # (what, db, table) -> what was read

    def invalidate(self) -> None:
        self._facts.clear()

    def column_facts(self, db: str, table: str) -> dict[str, tuple[bool, str | None]]:
        """{column: (nullable, COLUMN_DEFAULT as information_schema spells it)}: the Debezium format's
        schemas (schemas.enable) say both, and the binlog says neither."""
        sql = (
            "SELECT COLUMN_NAME, IS_NULLABLE, COLUMN_DEFAULT FROM information_schema.COLUMNS "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s"
        )
        return self._per_table(
            "columns",
            db,
            table,
            lambda rows: {name: (nullable == "YES", default) for name, nullable, default in rows},
            sql,
        )

    def primary_key(self, db: str, table: str) -> tuple[str, ...]:
        """The primary key's columns in key order (the binlog lists them in table order); Debezium's
        keys follow the key's order."""
        sql = (
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION"
        )
        return self._per_table("key", db, table, lambda rows: tuple(name for (name,) in rows), sql)

    def point_columns(self, db: str, table: str) -> frozenset[str]:
        """Columns declared POINT: the binlog calls every spatial column GEOMETRY, Debezium writes a
        POINT's value and schema with x and y."""
        sql = (
            "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
            "AND DATA_TYPE = 'point'"
        )
        return self._per_table("points", db, table, lambda rows: frozenset(name for (name,) in rows), sql)

    def json_columns(self, db: str, table: str) -> frozenset[str]:
        if not self._is_mariadb:
            return frozenset()  # MySQL's JSON has its own binlog type
        sql = (
            "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = %s AND TABLE_NAME = %s"
        )
        return self._per_table(
            "json", db, table, lambda rows: frozenset(m.group(1) for (c,) in rows if (m := JSON_VALID.match(c))), sql
        )

    def _per_table(self, what: str, db: str, table: str, shape: Callable[[Rows], T], sql: str) -> T:
        """`shape` of the rows `sql` gives for the table, read once until invalidate()."""
        key = (what, db, table)
        if key not in self._facts:
            self._facts[key] = shape(self._query(sql, (db, table)))
        return cast(T, self._facts[key])

    def _query(self, sql: str, args: tuple[str, ...]) -> Rows:
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
