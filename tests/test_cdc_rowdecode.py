"""cdc/rowdecode.py against mysql-replication + RowConverter on the same binlog of the real MariaDB.

Every type family of tests/test_cdc_types.py, as insert, update and delete, plus NULLs and the
MINIMAL and NOBLOB row images: both decodings must give identical (before, after) rows.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, TableMapEvent, UpdateRowsEvent, WriteRowsEvent

from cdc import tablemaps
from cdc.reader import connection_settings, detect_server
from cdc.rowdecode import DECIMAL_BYTES, RowDecoder, decoder_for
from cdc.schema_info import SchemaInfo
from cdc.types import RowConverter
from tests.support import execute, isolated_settings, mysql
from tests.test_cdc_types import FAMILIES, insert_family_rows

pytestmark = pytest.mark.integration

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
    for lib, own in zip(library, fast):
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


def mysql_decimal_bytes(value: Decimal, precision: int, scale: int) -> bytes:
    """MySQL's decimal2bin, written from its storage-format description, as a reference encoder."""
    text = format(value.copy_abs(), f".{scale}f")
    int_digits, _, frac_digits = text.partition(".")
    integral = precision - scale
    int_digits = int_digits.rjust(integral, "0")[-integral:] if integral else ""
    out = b""
    if integral % 9:
        out += int(int_digits[: integral % 9]).to_bytes(DECIMAL_BYTES[integral % 9], "big")
    for i in range(integral % 9, integral, 9):
        out += int(int_digits[i : i + 9]).to_bytes(4, "big")
    for i in range(0, scale - scale % 9, 9):
        out += int(frac_digits[i : i + 9]).to_bytes(4, "big")
    if scale % 9:
        out += int(frac_digits[scale - scale % 9 :]).to_bytes(DECIMAL_BYTES[scale % 9], "big")
    packed = bytearray(b ^ 0xFF for b in out) if value.is_signed() else bytearray(out)
    packed[0] ^= 0x80
    return bytes(packed)


class DecimalColumn:
    type = 246  # NEWDECIMAL
    name = "d"

    def __init__(self, precision: int, decimals: int) -> None:
        self.precision, self.decimals = precision, decimals


def test_decimal_decoder_is_exact_for_every_precision_and_scale() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        precision = rng.randint(1, 65)
        scale = rng.randint(0, min(precision, 30))
        whole = rng.randint(0, 10 ** (precision - scale) - 1) if precision > scale else 0
        frac = rng.randint(0, 10**scale - 1) if scale else 0
        sign = "-" if rng.random() < 0.5 and (whole or frac) else ""
        value = Decimal(f"{sign}{whole}.{frac:0{scale}d}" if scale else f"{sign}{whole}")
        packed = mysql_decimal_bytes(value, precision, scale)
        decoded, end = decoder_for(DecimalColumn(precision, scale))(b"\x00" + packed + b"\x00", 1)
        assert (decoded, end) == (format(value, "f"), 1 + len(packed)), (precision, scale, value)
