"""MySQL values (as mysql-replication decodes them) -> JSON values of the row-change envelope.

The python value alone is ambiguous (BIT arrives as a "0101" string, TIMESTAMP as a naive
datetime, YEAR 0000 as 1900, an empty SET as None, MariaDB JSON as text), so each column gets a
converter chosen from its binlog column definition (binlog_row_metadata=FULL gives names, charsets
and SET/ENUM members). Converters are built once per table map, not per row.

| MySQL type                         | JSON                                                        |
|------------------------------------|-------------------------------------------------------------|
| TINYINT..BIGINT (signed/unsigned)  | number (BIGINT UNSIGNED up to 18446744073709551615)         |
| DECIMAL / NUMERIC                  | string, exact digits and scale ("-1.50"), never a float     |
| FLOAT                              | number, shortest decimal that is the same float32 (1.1)     |
| DOUBLE                             | number                                                      |
| BIT(n)                             | number (the bits as an unsigned int)                        |
| DATE                               | "YYYY-MM-DD"                                                |
| TIME(fsp)                          | "[-]HH:MM:SS[.f]" with fsp digits; may be negative or > 24h |
| DATETIME(fsp)                      | "YYYY-MM-DDTHH:MM:SS[.f]" with fsp digits, no zone (as stored) |
| TIMESTAMP(fsp)                     | "YYYY-MM-DDTHH:MM:SS[.f]Z" with fsp digits, UTC             |
| YEAR                               | number; YEAR 0000 -> null                                   |
| CHAR/VARCHAR/TEXT (any charset)    | string                                                      |
| BINARY(n)                          | base64 of the n bytes (right-padded with 0x00, as stored)   |
| VARBINARY/BLOB, binary-charset text| base64 string                                               |
| JSON (MySQL; MariaDB json_valid)   | parsed JSON                                                 |
| ENUM                               | string ("" for the invalid-value index 0)                   |
| SET                                | string, members in column-definition order, comma-separated; empty set -> "" |
| GEOMETRY                           | base64 of the WKB bytes                                     |
| zero dates (0000-00-00 ..., TIMESTAMP 0) | null                                                  |
| NULL                               | null                                                        |
"""

from __future__ import annotations

import base64
import datetime as dt
import struct
from collections.abc import Callable, Collection, Iterator, Sequence
from decimal import Decimal
from typing import Any

import orjson
from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.row_event import UpdateRowsEvent, WriteRowsEvent

Converter = Callable[[Any], Any]
EPOCH = dt.datetime(1970, 1, 1)


def _fraction(micros: int, fsp: int) -> str:
    # Render exactly the column's declared fractional digits, as MySQL itself displays them.
    return f".{micros:06d}"[: fsp + 1] if fsp else ""


def _time(value: dt.timedelta, fsp: int = 6) -> str:
    # TIME can be negative and exceed 24h, so it is not a time of day: render it as MySQL does.
    total_us = value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds
    sign = "-" if total_us < 0 else ""
    seconds, micros = divmod(abs(total_us), 1_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours:02d}:{minutes:02d}:{secs:02d}{_fraction(micros, fsp)}"


def _datetime(value: dt.datetime, fsp: int) -> str:
    # Not strftime: it drops the year's leading zeros (year 999 -> "999-...") and is slower.
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
        f"{value.second:02d}" + _fraction(value.microsecond, fsp)
    )


def _float32(value: float) -> float:
    # FLOAT is 4 bytes: 1.1 arrives as 1.100000023841858. Give the shortest decimal that is the
    # same float32, which is what MySQL prints and what the user wrote.
    packed = struct.pack("<f", value)
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if struct.pack("<f", candidate) == packed:
            return candidate
    return value


def _base64(value: Any) -> Any:
    if isinstance(value, str):  # a binary-charset column the library decoded anyway
        value = value.encode("utf-8", "surrogateescape")
    return base64.b64encode(bytes(value)).decode("ascii")


def _json_text(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8")
    if isinstance(value, str):
        return orjson.loads(value) if value else None
    return to_json_value(value)  # MySQL binary JSON, already decoded by the library


def to_json_value(value: Any) -> Any:
    """Type-blind fallback for one decoded value (used where no column definition is known)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"
        return value.isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return _time(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset)):
        return ",".join(sorted(value))
    if isinstance(value, dict):
        return {_json_key(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    return str(value)


def _json_key(key: Any) -> str:
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)


def _identity(value: Any) -> Any:
    return value


def _decimal_text(value: Decimal) -> str:
    return format(value, "f")


def _bit_number(value: Any) -> int:
    return int(value, 2) if isinstance(value, str) else int.from_bytes(value, "big")


def _year(value: int) -> int | None:
    return None if value == 1900 else value  # the library decodes YEAR 0000 as 1900 (never a valid YEAR)


def _iso_date(value: dt.date) -> str:
    return value.isoformat()


def _fsp(column: Any) -> int:
    return getattr(column, "fsp", 0) or 0


def _time_column(column: Any) -> Converter:
    fsp = _fsp(column)
    return lambda v: _time(v, fsp)


def _datetime_column(column: Any) -> Converter:
    fsp = _fsp(column)
    return lambda v: _datetime(v, fsp)


def _timestamp_column(column: Any) -> Converter:
    fsp = _fsp(column)
    # A real TIMESTAMP starts at 1970-01-01 00:00:01 UTC, so epoch 0 is the zero date.
    return lambda v: None if v == EPOCH else _datetime(v, fsp) + "Z"


def _set_column(column: Any) -> Converter:
    order = {m: i for i, m in enumerate(column.set_values or ())}
    return lambda v: ",".join(sorted(v, key=lambda m: order.get(m, len(order))))


def _string_column(column: Any) -> Converter:
    if getattr(column, "character_set_name", None) == "binary":
        if column.type == FIELD_TYPE.STRING and getattr(column, "max_length", 0):
            # BINARY(n) is stored right-padded with 0x00; the binlog drops the padding.
            width = column.max_length
            return lambda v: _base64(bytes(v).ljust(width, b"\0") if isinstance(v, bytes) else v)
        return _base64
    return lambda v: v if isinstance(v, str) else to_json_value(v)


def _always(converter: Converter) -> Callable[[Any], Converter]:
    return lambda _column: converter


# Text and blob columns: text under a character set, bytes under `binary` (decoded per column).
STRING_TYPES = (
    FIELD_TYPE.STRING,
    FIELD_TYPE.VARCHAR,
    FIELD_TYPE.VAR_STRING,
    FIELD_TYPE.BLOB,
    FIELD_TYPE.TINY_BLOB,
    FIELD_TYPE.MEDIUM_BLOB,
    FIELD_TYPE.LONG_BLOB,
)


# field type -> the converter of a column of that type, from its definition (other types: to_json_value)
_CONVERTERS: dict[int, Callable[[Any], Converter]] = {
    **dict.fromkeys(
        (
            FIELD_TYPE.TINY,
            FIELD_TYPE.SHORT,
            FIELD_TYPE.INT24,
            FIELD_TYPE.LONG,
            FIELD_TYPE.LONGLONG,
            FIELD_TYPE.DOUBLE,
            FIELD_TYPE.ENUM,
        ),
        _always(_identity),
    ),
    FIELD_TYPE.FLOAT: _always(_float32),
    FIELD_TYPE.NEWDECIMAL: _always(_decimal_text),
    FIELD_TYPE.DECIMAL: _always(_decimal_text),
    FIELD_TYPE.BIT: _always(_bit_number),
    FIELD_TYPE.YEAR: _always(_year),
    FIELD_TYPE.DATE: _always(_iso_date),
    FIELD_TYPE.NEWDATE: _always(_iso_date),
    FIELD_TYPE.TIME: _time_column,
    FIELD_TYPE.TIME2: _time_column,
    FIELD_TYPE.DATETIME: _datetime_column,
    FIELD_TYPE.DATETIME2: _datetime_column,
    FIELD_TYPE.TIMESTAMP: _timestamp_column,
    FIELD_TYPE.TIMESTAMP2: _timestamp_column,
    FIELD_TYPE.SET: _set_column,
    FIELD_TYPE.GEOMETRY: _always(_base64),
    **dict.fromkeys(STRING_TYPES, _string_column),
}


def converter_for(column: Any, is_json: bool = False) -> Converter:
    """The converter of one binlog column definition (a pymysqlreplication Column)."""
    if is_json or column.type == FIELD_TYPE.JSON:
        return _json_text
    build = _CONVERTERS.get(column.type)
    return build(column) if build is not None else to_json_value


class RowConverter:
    """Converts the rows of one table map: a converter per column, chosen once."""

    def __init__(self, columns: Sequence[Any], json_columns: Collection[str] = ()):
        self.columns = columns
        self._by_name = {c.name: (converter_for(c, c.name in json_columns), c.type) for c in columns}

    def __call__(self, row: dict[str, Any] | None, none_sources: dict[str, str] | None = None) -> dict[str, Any] | None:
        if row is None:
            return None
        out: dict[str, Any] = {}
        by_name = self._by_name
        for name, value in row.items():
            conv = by_name.get(name)
            if value is None:
                # mysql-replication gives None for an empty SET too; it tells them apart only here.
                if (
                    conv is not None
                    and conv[1] == FIELD_TYPE.SET
                    and none_sources
                    and none_sources.get(name) == "empty set"
                ):
                    out[name] = ""
                else:
                    out[name] = None
            elif conv is None:
                out[name] = to_json_value(value)
            else:
                out[name] = conv[0](value)
        return out

    def rows(self, event: Any) -> Iterator[tuple[dict[str, Any] | None, dict[str, Any] | None]]:
        """(before, after) per row of a rows event, decoded by the library (cdc/rowdecode.py's fallback)."""
        if isinstance(event, UpdateRowsEvent):
            for row in event.rows:
                yield (
                    self(row["before_values"], row.get("before_none_sources")),
                    self(row["after_values"], row.get("after_none_sources")),
                )
        elif isinstance(event, WriteRowsEvent):
            for row in event.rows:
                yield None, self(row["values"], row.get("none_sources"))
        else:
            for row in event.rows:
                yield self(row["values"], row.get("none_sources")), None


def row_to_json(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """Type-blind conversion of a row (kept for callers without column definitions)."""
    if row is None:
        return None
    return {name: to_json_value(v) for name, v in row.items()}
