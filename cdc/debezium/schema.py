"""schemas.enable: the Kafka Connect schemas Debezium's JsonConverter wraps key and value in.

`{"schema": ..., "payload": ...}`: the key's schema is a struct `<prefix>.<db>.<table>.Key` of the
primary key's fields; the value's an `...Envelope` (version 2) of before/after (`...Value`), the
connector's `source` block, the `transaction` block and op/ts_*. Field types and logical names per
column as Debezium 2.7's MySQL connector declares them (checked against it by
tests/integration/test_debezium_compat.py); nullability and defaults come from information_schema,
as the binlog carries neither. Both schemas are serialized once per table map; a message is then
the schema's bytes and the payload's spliced together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson
from pymysqlreplication.constants import FIELD_TYPE

from cdc.debezium.values import converter_for
from cdc.types import STRING_TYPES
from schemas.debezium import DebeziumOptions

Facts = dict[str, tuple[bool, str | None]]  # column -> (nullable, information_schema COLUMN_DEFAULT)


def _string(name: str) -> dict[str, Any]:
    return {"type": "string", "optional": False, "field": name}


def _int64(name: str, optional: bool = False) -> dict[str, Any]:
    return {"type": "int64", "optional": optional, "field": name}


SOURCE_SCHEMA: dict[str, Any] = {
    "type": "struct",
    "fields": [
        _string("version"),
        _string("connector"),
        _string("name"),
        _int64("ts_ms"),
        {
            "type": "string",
            "optional": True,
            "name": "io.debezium.data.Enum",
            "version": 1,
            "parameters": {"allowed": "true,last,false,incremental"},
            "default": "false",
            "field": "snapshot",
        },
        _string("db"),
        {"type": "string", "optional": True, "field": "sequence"},
        _int64("ts_us", True),
        _int64("ts_ns", True),
        {"type": "string", "optional": True, "field": "table"},
        _int64("server_id"),
        {"type": "string", "optional": True, "field": "gtid"},
        _string("file"),
        _int64("pos"),
        {"type": "int32", "optional": False, "field": "row"},
        _int64("thread", True),
        {"type": "string", "optional": True, "field": "query"},
    ],
    "optional": False,
    "name": "io.debezium.connector.mysql.Source",
    "field": "source",
}
TRANSACTION_SCHEMA: dict[str, Any] = {
    "type": "struct",
    "fields": [_string("id"), _int64("total_order"), _int64("data_collection_order")],
    "optional": True,
    "name": "event.block",
    "version": 1,
    "field": "transaction",
}
_INTEGERS = {
    FIELD_TYPE.TINY: ("int16", "int16"),
    FIELD_TYPE.SHORT: ("int16", "int32"),
    FIELD_TYPE.INT24: ("int32", "int32"),
    FIELD_TYPE.LONG: ("int32", "int64"),
    FIELD_TYPE.LONGLONG: ("int64", "int64"),
}
_BINARY = STRING_TYPES
_SRID = {"type": "int32", "optional": True, "field": "srid"}
GEOMETRY_SCHEMA: dict[str, Any] = {
    "type": "struct",
    "fields": [{"type": "bytes", "optional": False, "field": "wkb"}, _SRID],
    "name": "io.debezium.data.geometry.Geometry",
    "version": 1,
    "doc": "Geometry",
}
POINT_SCHEMA: dict[str, Any] = {
    "type": "struct",
    "fields": [
        {"type": "double", "optional": False, "field": "x"},
        {"type": "double", "optional": False, "field": "y"},
        {"type": "bytes", "optional": True, "field": "wkb"},
        _SRID,
    ],
    "name": "io.debezium.data.geometry.Point",
    "version": 1,
    "doc": "Geometry (POINT)",
}


def _logical(type_: str, name: str, **parameters: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": type_, "name": name, "version": 1}
    if parameters:
        out["parameters"] = parameters
    return out


def _decimal(precision: int, scale: int) -> dict[str, Any]:
    return _logical(
        "bytes",
        "org.apache.kafka.connect.data.Decimal",
        scale=str(scale),
        **{"connect.decimal.precision": str(precision)},
    )


def _temporal(column: Any, options: DebeziumOptions) -> dict[str, Any] | None:
    t, connect = column.type, options.time_precision_mode == "connect"
    if t in (FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE):
        return _logical("int32", "org.apache.kafka.connect.data.Date" if connect else "io.debezium.time.Date")
    if t in (FIELD_TYPE.TIME, FIELD_TYPE.TIME2):
        return (
            _logical("int32", "org.apache.kafka.connect.data.Time")
            if connect
            else _logical("int64", "io.debezium.time.MicroTime")
        )
    if t in (FIELD_TYPE.DATETIME, FIELD_TYPE.DATETIME2):
        if connect:
            return _logical("int64", "org.apache.kafka.connect.data.Timestamp")
        micro = (getattr(column, "fsp", 0) or 0) > 3
        return _logical("int64", "io.debezium.time.MicroTimestamp" if micro else "io.debezium.time.Timestamp")
    if t in (FIELD_TYPE.TIMESTAMP, FIELD_TYPE.TIMESTAMP2):
        return _logical("string", "io.debezium.time.ZonedTimestamp")
    if t == FIELD_TYPE.YEAR:
        return _logical("int32", "io.debezium.time.Year")
    return None


def _numeric(column: Any, options: DebeziumOptions) -> dict[str, Any] | None:
    t, unsigned = column.type, getattr(column, "unsigned", False)
    if t == FIELD_TYPE.LONGLONG and unsigned and options.bigint_unsigned_handling_mode == "precise":
        return _decimal(20, 0)
    if t in _INTEGERS:
        return {"type": _INTEGERS[t][1 if unsigned else 0]}
    if t in (FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.DECIMAL):
        mode = options.decimal_handling_mode
        return {"type": mode} if mode in ("string", "double") else _decimal(column.precision, column.decimals)
    if t == FIELD_TYPE.FLOAT:
        return {"type": "float"}
    if t == FIELD_TYPE.DOUBLE:
        return {"type": "double"}
    if t == FIELD_TYPE.BIT:
        return (
            {"type": "boolean"}
            if column.bits == 1
            else _logical("bytes", "io.debezium.data.Bits", length=str(column.bits))
        )
    return None


def field_type(column: Any, options: DebeziumOptions, is_json: bool = False) -> dict[str, Any]:
    """type/name/version/parameters of one column's field (without optional, default and field)."""
    found = _numeric(column, options) or _temporal(column, options)
    if found is not None:
        return found
    t = column.type
    if t == FIELD_TYPE.GEOMETRY:
        return dict(POINT_SCHEMA if getattr(column, "geometry", None) == "point" else GEOMETRY_SCHEMA)
    if t == FIELD_TYPE.ENUM:
        members = [m for m in column.enum_values or () if m]  # the library lists the invalid value '' first
        return _logical("string", "io.debezium.data.Enum", allowed=",".join(members))
    if t == FIELD_TYPE.SET:
        return _logical("string", "io.debezium.data.EnumSet", allowed=",".join(column.set_values or ()))
    if t == FIELD_TYPE.JSON:
        return _logical("string", "io.debezium.data.Json")
    if t in _BINARY and getattr(column, "character_set_name", None) == "binary" and not is_json:
        return {"type": "bytes" if options.binary_handling_mode == "bytes" else "string"}
    return {"type": "string"}  # text; MariaDB's JSON (LONGTEXT); anything else as its text


_QUOTED = (
    FIELD_TYPE.STRING,
    FIELD_TYPE.VARCHAR,
    FIELD_TYPE.VAR_STRING,
    FIELD_TYPE.BLOB,
    FIELD_TYPE.ENUM,
    FIELD_TYPE.SET,
    FIELD_TYPE.DATE,
    FIELD_TYPE.TIME2,
    FIELD_TYPE.DATETIME2,
)


def _default_value(column: Any, text: str | None, options: DebeziumOptions) -> Any:
    """A column's DEFAULT as Debezium writes it in the schema; None for none, NULL or an expression
    (CURRENT_TIMESTAMP and the like: not written)."""
    if text is None or text == "NULL":
        return None
    t = column.type
    value: Any
    if t in _QUOTED and text.startswith("'") and text.endswith("'"):
        if getattr(column, "character_set_name", None) == "binary":
            return None
        value = text[1:-1].replace("''", "'")
        if t == FIELD_TYPE.DATETIME2:
            value = value.replace(" ", "T")
    elif t in _INTEGERS:
        value = int(text)
    elif t in (FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.FLOAT, FIELD_TYPE.DOUBLE):
        value = text if t == FIELD_TYPE.NEWDECIMAL else float(text)
    else:
        return None
    convert: Callable[[Any], Any] | None = converter_for(column, options)
    return convert(value) if convert is not None else value


def column_defaults(columns: Sequence[Any], options: DebeziumOptions, facts: Facts) -> dict[str, Any]:
    """{column: its non-null DEFAULT as Debezium writes it}. JsonConverter writes a null field as its
    schema's default (replace.null.with.default, true by default), with or without schemas.enable."""
    out = {}
    for column in columns:
        default = _default_value(column, facts.get(column.name, (True, None))[1], options)
        if default is not None:
            out[column.name] = default
    return out


def _field(column: Any, options: DebeziumOptions, facts: Facts, is_json: bool, key: bool) -> dict[str, Any]:
    nullable, default_text = facts.get(column.name, (True, None))
    out = {**field_type(column, options, is_json), "optional": nullable and not key}
    default = _default_value(column, default_text, options)
    if default is not None:
        out["default"] = default
    out["field"] = column.name
    return out


def table_schemas(
    columns: Sequence[Any],
    key_columns: Sequence[str],
    options: DebeziumOptions,
    facts: Facts,
    json_columns: frozenset[str],
    prefix: str,
) -> tuple[bytes, bytes]:
    """(key schema, value schema) of one table map, serialized."""
    fields = [_field(c, options, facts, c.name in json_columns, key=False) for c in columns]
    by_name = {c.name: c for c in columns}
    key_fields = [_field(by_name[k], options, facts, k in json_columns, key=True) for k in key_columns if k in by_name]
    row = {"type": "struct", "fields": fields, "optional": True, "name": f"{prefix}.Value"}
    envelope = {
        "type": "struct",
        "fields": [
            {**row, "field": "before"},
            {**row, "field": "after"},
            SOURCE_SCHEMA,
            TRANSACTION_SCHEMA,
            _string("op"),
            _int64("ts_ms", True),
            _int64("ts_us", True),
            _int64("ts_ns", True),
        ],
        "optional": False,
        "name": f"{prefix}.Envelope",
        "version": 2,
    }
    key = {"type": "struct", "fields": key_fields, "optional": False, "name": f"{prefix}.Key"}
    return orjson.dumps(key), orjson.dumps(envelope)


def wrapped(schema: bytes, payload: bytes | None) -> bytes | None:
    """JsonConverter's `{"schema": ..., "payload": ...}`; a tombstone stays null."""
    return None if payload is None else b'{"schema":' + schema + b',"payload":' + payload + b"}"
