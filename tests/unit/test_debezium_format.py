"""cdc.format=debezium's pure parts: value conversions, the messages of one row, event ids, and that the
worker's parsing takes Debezium's envelope. Field-by-field equality with the real connector is
tests/integration/test_debezium_compat.py's job; these pin the arithmetic and the edge cases."""

from __future__ import annotations

import base64
import struct
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from pymysqlreplication.constants import FIELD_TYPE

from cdc.debezium.envelope import NEW_KEY_HEADER, OLD_KEY_HEADER, messages
from cdc.debezium.schema import field_type, table_schemas, wrapped
from cdc.debezium.snapshot_rows import column_definition, snapshot_marker
from cdc.debezium.values import (
    DeclaredGeometry,
    RowValues,
    datetime_micros,
    days,
    time_micros,
    unscaled,
    unscaled_bytes,
)
from schemas.debezium import DebeziumOptions
from schemas.row_change import debezium_event_id
from streams.events import facts
from streams.row_changes import binlog_order
from streams.row_checks import parse_change


def column(name: str, type_: int, **extra: Any) -> SimpleNamespace:
    return SimpleNamespace(name=name, type=type_, **extra)


def test_dates_and_times_as_debezium_counts_them() -> None:
    assert days("1970-01-01") == 0 and days("2024-02-29") == 19782 and days("1000-01-01") == -354285
    assert time_micros("-838:59:59") == -3020399000000 and time_micros("-00:00:00.500000") == -500000
    assert time_micros("25:00:00.123") == 90000123000
    assert datetime_micros("2024-01-02T03:04:05.123456") == 1704164645123456
    assert datetime_micros("1000-01-01T00:00:00") == -30610224000000000


@pytest.mark.parametrize(
    ("text", "scale", "expected"),
    [("-1.50", 2, "/2o="), ("0", 0, "AA=="), ("-12345678901234567890.1234567890", 10, "/nEW8Ak8jB8RscD1Lg==")],
)
def test_decimal_bytes_are_javas_big_integer(text: str, scale: int, expected: str) -> None:
    assert unscaled_bytes(unscaled(text, scale)) == expected  # the real connector's output for these


def test_row_values_follow_the_options() -> None:
    cols = [
        column("d", FIELD_TYPE.NEWDECIMAL, decimals=2),
        column("t", FIELD_TYPE.TIME2, fsp=0),
        column("dt", FIELD_TYPE.DATETIME2, fsp=6),
        column("u", FIELD_TYPE.LONGLONG, unsigned=True),
        column("b", FIELD_TYPE.BIT, bits=10),
        column("one", FIELD_TYPE.BIT, bits=1),
        column("bin", FIELD_TYPE.BLOB, character_set_name="binary"),
    ]
    row = {"d": "-1.50", "t": "25:00:00", "dt": "1970-01-01T00:00:00.000001", "u": 2**64 - 1, "b": 513, "one": 1}
    default = RowValues(cols, DebeziumOptions())
    assert default({**row, "bin": "AP8="}) == {
        **{"d": "/2o=", "t": 90000000000, "dt": 1, "u": -1, "b": "AQI=", "one": True},
        "bin": "AP8=",
    }
    options = DebeziumOptions.model_validate(
        {
            "decimal.handling.mode": "string",
            "time.precision.mode": "connect",
            "bigint.unsigned.handling.mode": "precise",
            "binary.handling.mode": "hex",
        }
    )
    converted = RowValues(cols, options)({**row, "bin": "AP8="})
    assert converted is not None
    assert (converted["d"], converted["t"], converted["dt"], converted["bin"]) == ("-1.50", None, 0, "00ff")
    assert base64.b64decode(converted["u"]) == b"\x00" + b"\xff" * 8


def _decoded(found: list[Any]) -> list[tuple[Any, Any, Any]]:
    return [(orjson.loads(m.key) if m.key else None, m.value and orjson.loads(m.value)["op"], m.headers) for m in found]


def test_a_key_change_is_a_delete_tombstone_and_create() -> None:
    source = {"server_id": 1, "file": "f.000001", "pos": 10, "row": 0}
    found = list(messages("u", {"id": 2, "x": 1}, {"id": 3, "x": 1}, ("id",), source, 0, tombstones=True))
    assert _decoded(found) == [
        ({"id": 2}, "d", [(NEW_KEY_HEADER, b'{"id":3}')]),
        ({"id": 2}, None, [(NEW_KEY_HEADER, b'{"id":3}')]),
        ({"id": 3}, "c", [(OLD_KEY_HEADER, b'{"id":2}')]),
    ]
    same_key = list(messages("u", {"id": 2, "x": 1}, {"id": 2, "x": 2}, ("id",), source, 0, tombstones=True))
    assert _decoded(same_key) == [({"id": 2}, "u", None)]
    delete = list(messages("d", {"id": 2}, None, ("id",), source, 0, tombstones=False))
    assert _decoded(delete) == [({"id": 2}, "d", None)]


def test_event_ids_unique_per_half_and_in_binlog_order() -> None:
    def change(op: str, pos: int, row: int) -> dict[str, Any]:
        return {"op": op, "source": {"server_id": 7, "file": "b.000002", "pos": pos, "row": row}}

    changes = [change("c", 100, 0), change("c", 100, 1), change("d", 200, 0), change("c", 200, 0)]
    ids = [debezium_event_id(c) or "" for c in changes]
    assert len(set(ids)) == 4 and ids[2] == "7:b.000002:200:0" and ids[3] == "7:b.000002:200:1"
    orders = [binlog_order(i) for i in ids]
    assert orders == sorted(o for o in orders if o is not None)
    assert debezium_event_id({"op": "c", "source": {"db": "x"}}) is None


def test_the_worker_reads_debezium_envelopes() -> None:
    value = {
        "before": None,
        "after": {"id": 1},
        "source": {"server_id": 1, "db": "shop", "table": "t", "file": "m.000001", "pos": 4, "row": 0},
        "transaction": None,
        "op": "c",
        "ts_ms": 1,
    }
    _, source, event_id = parse_change(orjson.dumps(value))
    assert (source["table"], event_id) == ("t", "1:m.000001:4:1")
    seen = facts(orjson.dumps(value))
    assert (seen.kind, seen.table, seen.event_id) == ("row_change", "shop.t", "1:m.000001:4:1")
    assert seen.value["event_id"] == "1:m.000001:4:1"  # replay's matcher reads it from the change


def test_snapshot_markers_with_debezium_precedence() -> None:
    """source.snapshot of a table's rows (first table, last table, one-row table) as Debezium 2.7 writes them."""
    rows = 3

    def markers(first: bool, last: bool, n: int = rows) -> list[str]:
        return [snapshot_marker(first, last, i == 0, i == n - 1) for i in range(n)]

    assert markers(True, False) == ["first", "true", "last_in_data_collection"]
    assert markers(False, False) == ["first_in_data_collection", "true", "last_in_data_collection"]
    assert markers(False, True) == ["first_in_data_collection", "true", "last"]
    assert markers(False, False, 1) == ["last_in_data_collection"]
    assert markers(True, True, 1) == ["last"]


def test_snapshot_read_ids_tell_rows_apart_and_are_no_binlog_places() -> None:
    """Snapshot reads share one binlog place (row 0): the id comes from the row, stable when re-sent."""

    def read(after: dict[str, Any], ts_ms: int = 1_000) -> dict[str, Any]:
        source = {"server_id": 0, "file": "b.000002", "pos": 4, "row": 0, "ts_ms": ts_ms, "db": "d", "table": "t"}
        return {"op": "r", "before": None, "after": after, "source": {**source, "snapshot": "true"}}

    ids = [debezium_event_id(read({"id": i, "x": "a"})) or "" for i in range(3)]
    assert len(set(ids)) == 3 and all(i.startswith("snapshot:0:b.000002:4:1000:d.t:") for i in ids)
    assert all(binlog_order(i) is None for i in ids)  # the worker must not drop them as re-sends of pos 4
    assert debezium_event_id(read({"x": "a", "id": 0})) == ids[0]  # re-sent: same id, whatever the key order
    assert debezium_event_id(read({"id": 0, "x": "a"}, ts_ms=2_000)) != ids[0]  # another snapshot


def test_column_definitions_from_information_schema() -> None:
    """What the snapshot gives the streaming converters instead of the binlog's column definitions."""
    enum = column_definition("e", "enum", "enum('a','it''s')", (None, None, None, "utf8mb4"))
    assert (enum.type, enum.enum_values, enum.character_set_name) == (FIELD_TYPE.ENUM, ("a", "it's"), "utf8mb4")
    big = column_definition("n", "bigint", "bigint(20) unsigned", (20, 0, None, None))
    assert (big.type, big.unsigned) == (FIELD_TYPE.LONGLONG, True)
    assert column_definition("b", "bit", "bit(10)", (10, None, None, None)).bits == 10
    assert column_definition("t", "datetime", "datetime(6)", (None, None, 6, None)).fsp == 6
    blob = column_definition("x", "mediumblob", "mediumblob", (None, None, None, None))
    assert (blob.type, blob.character_set_name) == (FIELD_TYPE.BLOB, "binary")
    text = column_definition("x", "longtext", "longtext", (None, None, None, "utf8mb4"))
    assert (text.type, text.character_set_name) == (FIELD_TYPE.BLOB, "utf8mb4")
    d = column_definition("d", "decimal", "decimal(30,10)", (30, 10, None, None))
    assert (d.type, d.precision, d.decimals) == (FIELD_TYPE.NEWDECIMAL, 30, 10)


def test_schemas_enable_round_trips_to_cdcflow_values_for_rules() -> None:
    """cdcflow values -> Debezium's (schemas.enable) -> what the worker's rules see: the same values."""
    cols = [
        column("id", FIELD_TYPE.LONG),
        column("d", FIELD_TYPE.NEWDECIMAL, precision=30, decimals=10),
        column("day", FIELD_TYPE.DATE),
        column("at", FIELD_TYPE.DATETIME2, fsp=3),
        column("at6", FIELD_TYPE.DATETIME2, fsp=6),
        column("t", FIELD_TYPE.TIME2, fsp=6),
    ]
    row = {
        "id": 1,
        "d": "-12345678901234567890.1234567890",
        "day": "1000-01-01",
        "at": "2024-01-02T03:04:05.120",
        "at6": "2024-01-02T03:04:05.000001",
        "t": "-838:59:58.999999",
    }
    options = DebeziumOptions.model_validate({"schemas.enable": True})
    key_schema, value_schema = table_schemas(cols, ["id"], options, {"id": (False, None)}, frozenset(), "p.db.t")
    source = {"server_id": 1, "db": "db", "table": "t", "file": "m.000001", "pos": 4, "row": 0}
    (message,) = messages("c", None, RowValues(cols, options)(dict(row)), ("id",), source, 0, tombstones=True)
    value = wrapped(value_schema, message.value)
    assert value is not None and orjson.loads(value)["schema"]["name"] == "p.db.t.Envelope"
    change, _, event_id = parse_change(value)
    assert change["after"] == {**row, "at": "2024-01-02T03:04:05.120"} and event_id == "1:m.000001:4:1"
    assert orjson.loads(wrapped(key_schema, message.key) or b"")["payload"] == {"id": 1}


def test_geometry_as_debezium_writes_it() -> None:
    """MySQL's stored form (SRID, then WKB) -> {wkb, srid}; a column declared POINT also gets x and y."""
    wkb = bytes.fromhex("0101000000") + struct.pack("<dd", 1.5, -2.25)
    stored = base64.b64encode((4326).to_bytes(4, "little") + wkb).decode()
    geometry = column("g", FIELD_TYPE.GEOMETRY)
    point = DeclaredGeometry(column("p", FIELD_TYPE.GEOMETRY), "point")
    row = RowValues([geometry, point], DebeziumOptions())({"g": stored, "p": stored})
    assert row == {
        "g": {"wkb": base64.b64encode(wkb).decode(), "srid": 4326},
        "p": {"x": 1.5, "y": -2.25, "wkb": base64.b64encode(wkb).decode(), "srid": 4326},
    }
    srid_0 = base64.b64encode(bytes(4) + wkb).decode()
    assert RowValues([geometry], DebeziumOptions())({"g": srid_0})["g"]["srid"] is None  # type: ignore[index]
    assert field_type(point, DebeziumOptions())["name"] == "io.debezium.data.geometry.Point"
    assert field_type(geometry, DebeziumOptions())["name"] == "io.debezium.data.geometry.Geometry"
