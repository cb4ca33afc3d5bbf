"""cdc/rowdecode.py against mysql-replication + RowConverter on the same binlog of the real MariaDB.

Every type family of tests/support/cdc.py (FAMILIES), as insert, update and delete, plus NULLs and the
MINIMAL and NOBLOB row images: both decodings must give identical (before, after) rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, TableMapEvent, UpdateRowsEvent, WriteRowsEvent

from cdc import tablemaps
from cdc.rowdecode import RowDecoder
from cdc.schema_info import SchemaInfo
from cdc.source import connection_settings, detect_server
from cdc.types import RowConverter
from tests.support import execute, isolated_settings, mysql
from tests.support.cdc import FAMILIES, insert_family_rows

MIXED = "mixed (id INT PRIMARY KEY, a INT, b VARCHAR(10), c DECIMAL(5,2), d DATETIME(3), e TEXT, f DATETIME)"
EVENTS = 4 * len(FAMILIES) + 4


@pytest.fixture(scope="module")
def binlog(stack: None) -> Iterator[tuple[Any, str, str]]:
    """(settings, database, GTID position before the writes) of a binlog holding every case."""
    settings = isolated_settings("rowdec")
    db = settings.mysql.database
    ddl = [f"CREATE DATABASE {db}", f"CREATE TABLE {db}.{MIXED}"]
    for family, cols in FAMILIES.items():
        defs = ", ".join(f"c{i} {t}" for i, (t, _, _) in enumerate(cols))
        ddl.append(f"CREATE TABLE {db}.f_{family} (id INT PRIMARY KEY, {defs})")
    execute(ddl)
    try:
        _, start = detect_server(settings)
        conn = mysql(db)
        with conn.cursor() as cur:
            insert_family_rows(cur)
            for family in FAMILIES:
                cur.execute(f"UPDATE f_{family} SET id = 3 WHERE id = 1")
                cur.execute(f"DELETE FROM f_{family} WHERE id = 3")
            cur.execute(
                "INSERT INTO mixed VALUES (1, NULL, 'x', -0.5, '2020-01-01 00:00:00.5', NULL, '0999-02-03 04:05:06'),"
                " (2, 5, NULL, 999.99, NULL, 'y', '2024-02-30 00:00:00'), (3, NULL, NULL, NULL, NULL, NULL, NULL)"
            )
            cur.execute("SET SESSION binlog_row_image = 'MINIMAL'")
            cur.execute("UPDATE mixed SET a = 7 WHERE id < 3")
            cur.execute("DELETE FROM mixed WHERE id = 3")
            cur.execute("SET SESSION binlog_row_image = 'NOBLOB'")
            cur.execute("UPDATE mixed SET b = 'z'")
        conn.close()
        yield settings, db, start.gtid_set
    finally:
        execute(f"DROP DATABASE IF EXISTS {db}")


def decoded(settings: Any, db: str, gtid: str, fast: bool) -> list[tuple[str, str, list]]:
    info = SchemaInfo(connection_settings(settings), True)
    stream = BinLogStreamReader(
        connection_settings=connection_settings(settings),
        server_id=settings.mysql.server_id + int(fast),
        blocking=True,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        only_schemas=[db],
        is_mariadb=True,
        auto_position=gtid,
    )
    out: list[tuple[str, str, list]] = []
    try:
        for event in stream:
            json_columns = info.json_columns(event.schema, event.table)
            decoder = RowDecoder(event.columns, json_columns) if fast else RowConverter(event.columns, json_columns)
            out.append((event.table, type(event).__name__, list(decoder.rows(event))))
            if len(out) >= EVENTS:
                return out
    finally:
        stream.close()
        info.close()
    return out


def test_fast_decoding_equals_library_decoding(binlog: tuple[Any, str, str]) -> None:
    library = decoded(*binlog, fast=False)
    fast = decoded(*binlog, fast=True)
    assert len(library) == EVENTS
    for lib, own in zip(library, fast, strict=True):
        assert own == lib
    mixed = [rows for table, kind, rows in fast if table == "mixed" and kind == "WriteRowsEvent"][0]
    assert mixed[0][1]["f"] == "0999-02-03T04:05:06"  # year < 1000 keeps its leading zero
    assert mixed[1][1]["f"] is None  # an invalid date stored with sql_mode='' is null, as the library says


def table_maps(settings: Any, db: str, gtid: str) -> list[tuple[str, Any, list[dict], int]]:
    """(table, primary key, column definitions, the column list itself) per rows event."""
    stream = BinLogStreamReader(
        connection_settings=connection_settings(settings),
        server_id=settings.mysql.server_id + 2,
        blocking=True,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        only_schemas=[db],
        is_mariadb=True,
        auto_position=gtid,
    )
    out = []
    try:
        for event in stream:
            out.append((event.table, event.primary_key, [c.data for c in event.columns], event.columns))
            if len(out) >= EVENTS:
                return out
    finally:
        stream.close()
    return out


def test_cached_table_maps_equal_fresh_parses(binlog: tuple[Any, str, str]) -> None:
    cached = table_maps(*binlog)
    TableMapEvent.__init__ = tablemaps._original_init  # type: ignore[method-assign]
    try:
        fresh = table_maps(*binlog)
    finally:
        tablemaps.apply()
    assert len(cached) == EVENTS
    assert [c[:3] for c in cached] == [f[:3] for f in fresh]
    # each family's 4 statements repeat one table map: parsed once with the cache, 4 times without
    integers = [id(c[3]) for c in cached if c[0] == "f_integers"]  # the lists are alive: ids are distinct objects
    assert len(integers) == 4 and len(set(integers)) == 1
    assert len({id(f[3]) for f in fresh if f[0] == "f_integers"}) == 4
