"""cdcflow's JSON values of one column -> the value Debezium's MySQL connector writes for it.

The reader decodes rows once (cdc/rowdecode.py); in debezium mode each column then gets one more
converter, chosen once per table map from the binlog column definition and the Debezium options
(names and defaults as Debezium's). Shapes as Debezium 2.7's MySqlValueConverters + JsonConverter
(schemas.enable=false) write them, checked against the real connector by
tests/integration/test_debezium_compat.py:

| MySQL type            | default (adaptive_time_microseconds, precise, long, bytes)          |
|-----------------------|---------------------------------------------------------------------|
| DATE                  | days since 1970-01-01                                               |
| TIME(fsp)             | microseconds (negative and > 24 h kept); connect: ms, null off 0-24h|
| DATETIME(0..3)        | epoch milliseconds; DATETIME(4..6): epoch microseconds; connect: ms |
| TIMESTAMP(fsp)        | "…Z" string in UTC, as cdcflow                                      |
| DECIMAL               | base64 of the unscaled two's-complement big-endian integer;        |
|                       | string: "1234.56"; double: a JSON number                            |
| BIGINT UNSIGNED       | long: wrapped into a signed 64-bit number; precise: decimal bytes   |
| BIT(1)                | true/false; BIT(n>1): base64 of (n+7)//8 little-endian bytes        |
| JSON                  | the JSON text (the reader hands it over undecoded in this mode)     |
| BINARY/VARBINARY/BLOB | bytes/base64: base64; base64-url-safe; hex                          |
| GEOMETRY and kin      | {"wkb": base64 WKB, "srid": SRID or null for 0}; POINT: x, y first  |
| everything else       | as cdcflow (numbers, strings, ENUM/SET strings)                     |
"""

from __future__ import annotations

import base64
import datetime as dt
import struct
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from pymysqlreplication.constants import FIELD_TYPE

from cdc.types import STRING_TYPES
from schemas.debezium import DebeziumOptions

Converter = Callable[[Any], Any]
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_EPOCH, _MICROSECOND = dt.datetime(1970, 1, 1), dt.timedelta(microseconds=1)
_TIMES = (FIELD_TYPE.TIME, FIELD_TYPE.TIME2)
_DATETIMES = (FIELD_TYPE.DATETIME, FIELD_TYPE.DATETIME2)
_BINARY_TYPES = STRING_TYPES


def days(text: str) -> int:
    """'YYYY-MM-DD' -> days since the epoch (io.debezium.time.Date)."""
    return dt.date.fromisoformat(text).toordinal() - _EPOCH_ORDINAL


def _micros_of_fraction(text: str) -> int:
    return int((text + "000000")[:6]) if text else 0


def time_micros(text: str) -> int:
    """'[-]HHH:MM:SS[.f]' -> signed microseconds (io.debezium.time.MicroTime)."""
    negative = text.startswith("-")
    clock, _, fraction = text.lstrip("-").partition(".")
    hours, minutes, seconds = (int(p) for p in clock.split(":"))
    total = ((hours * 60 + minutes) * 60 + seconds) * 1_000_000 + _micros_of_fraction(fraction)
    return -total if negative else total


def datetime_micros(text: str) -> int:
    """'YYYY-MM-DDTHH:MM:SS[.f]' (no zone: as stored) -> microseconds since the epoch."""
    return (dt.datetime.fromisoformat(text) - _EPOCH) // _MICROSECOND


def unscaled_bytes(value: int) -> str:
    """Java's BigInteger.toByteArray() (shortest two's complement, big-endian), base64 as JsonConverter writes bytes."""
    size = value.bit_length() // 8 + 1
    return base64.b64encode(value.to_bytes(size, "big", signed=True)).decode("ascii")


def _decimal(options: DebeziumOptions, scale: int) -> Converter:
    mode = options.decimal_handling_mode
    if mode == "string":
        return lambda v: v
    if mode == "double":
        return float
    return lambda v: unscaled_bytes(unscaled(v, scale))


def unscaled(text: str, scale: int) -> int:
    """'-1.50' at scale 2 -> -150, digit by digit (Decimal arithmetic would round past 28 digits)."""
    whole, _, fraction = text.partition(".")
    return int(whole + fraction.ljust(scale, "0")[:scale])


def _bytes(options: DebeziumOptions) -> Converter:
    mode = options.binary_handling_mode
    if mode == "hex":
        return lambda v: base64.b64decode(v).hex()
    if mode == "base64-url-safe":
        return lambda v: base64.urlsafe_b64encode(base64.b64decode(v)).decode("ascii")
    return lambda v: v  # bytes and base64 are both base64 text in JSON


def _bits(column: Any) -> Converter:
    if column.bits == 1:
        return bool
    size = (column.bits + 7) // 8
    return lambda v: base64.b64encode(int(v).to_bytes(size, "little")).decode("ascii")


def _json_text(value: Any) -> Any:
    # MariaDB JSON is text and arrives as written; MySQL's binary JSON arrives decoded.
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def _connect_time(text: str) -> int | None:
    # Kafka Connect's Time is a time of day: Debezium writes null for a negative TIME or one of 24 h or more.
    micros = time_micros(text)
    return micros // 1000 if 0 <= micros < 86_400_000_000 else None


def _wrap_signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _temporal(column: Any, options: DebeziumOptions) -> Converter | None:
    connect = options.time_precision_mode == "connect"
    if column.type in (FIELD_TYPE.DATE, FIELD_TYPE.NEWDATE):
        return days
    if column.type in _TIMES:
        return _connect_time if connect else time_micros
    if column.type in _DATETIMES:
        if connect or (getattr(column, "fsp", 0) or 0) <= 3:
            return lambda v: datetime_micros(v) // 1000
        return datetime_micros
    return None


class DeclaredGeometry:
    """A binlog GEOMETRY column with its declared type (`geometry`: point, linestring, ...), which the
    binlog does not say and Debezium's value and schema depend on (POINT gets x and y)."""

    def __init__(self, column: Any, geometry: str):
        self._column, self.geometry = column, geometry

    def __getattr__(self, name: str) -> Any:
        return getattr(self._column, name)


def _geometry(point: bool) -> Converter:
    def convert(value: str) -> dict[str, Any]:
        raw = base64.b64decode(value)  # MySQL's stored form: the SRID (4 bytes little-endian), then the WKB
        srid, wkb = int.from_bytes(raw[:4], "little"), raw[4:]
        out = {"wkb": base64.b64encode(wkb).decode("ascii"), "srid": srid or None}
        if not point:
            return out
        x, y = struct.unpack("<dd" if wkb[:1] == b"\x01" else ">dd", wkb[5:21])
        return {"x": x, "y": y, **out}

    return convert


def converter_for(column: Any, options: DebeziumOptions, is_json: bool = False) -> Converter | None:
    """The converter of one column; None where Debezium writes what cdcflow does."""
    t = column.type
    if t == FIELD_TYPE.GEOMETRY:
        return _geometry(getattr(column, "geometry", None) == "point")
    if is_json or t == FIELD_TYPE.JSON:
        return _json_text
    if t in (FIELD_TYPE.NEWDECIMAL, FIELD_TYPE.DECIMAL):
        return _decimal(options, column.decimals)
    if t == FIELD_TYPE.LONGLONG and getattr(column, "unsigned", False):
        if options.bigint_unsigned_handling_mode == "precise":
            return lambda v: unscaled_bytes(int(v))
        return _wrap_signed
    if t == FIELD_TYPE.BIT:
        return _bits(column)
    if t in _BINARY_TYPES and getattr(column, "character_set_name", None) == "binary":
        return None if options.binary_handling_mode in ("bytes", "base64") else _bytes(options)
    return _temporal(column, options)


class RowValues:
    """Converts the cdcflow images of one table map to Debezium's; built once per table map."""

    def __init__(
        self,
        columns: Sequence[Any],
        options: DebeziumOptions,
        json_columns: frozenset[str] = frozenset(),
        defaults: dict[str, Any] | None = None,
    ):
        self._converters = [
            (c.name, conv) for c in columns if (conv := converter_for(c, options, c.name in json_columns)) is not None
        ]
        # NULL in a column with a DEFAULT: JsonConverter writes the default (replace.null.with.default)
        self._defaults = list((defaults or {}).items())

    def __call__(self, row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None
        for name, convert in self._converters:
            value = row.get(name)
            if value is not None:
                row[name] = convert(value)
        for name, default in self._defaults:
            if name in row and row[name] is None:
                row[name] = default
        return row
