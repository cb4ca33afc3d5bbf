"""Column values as a SELECT returns them -> the same JSON values streaming gives (cdc/types.py table).

The snapshot reads with pymysql's conversions turned off: every value arrives as the server's text
(binary-charset columns, BIT included, as bytes). Text is exact where Python objects are not
(DECIMAL digits, TIME beyond 24h, zero dates), so each column only needs reshaping into the
streaming form. FLOAT is selected as CAST(... AS DOUBLE): its text form is rounded to 6 digits,
the double is the stored float32, which cdc/types.py's _float32 renders exactly as streaming does.
Sessions run with time_zone '+00:00', so TIMESTAMP text is UTC.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import orjson
from pymysql.converters import conversions

from cdc.types import _base64, _float32, _json_text

Converter = Callable[[Any], Any]

# pymysql `conv` keeping the encoders (keyed by python type, for query parameters) and dropping every
# decoder (keyed by field type): result values stay as the server's text, or bytes for binary columns.
TEXT_RESULTS: dict[int | type[Any], Callable[[Any], str] | Callable[[str], Any]] = {
    k: v for k, v in conversions.items() if not isinstance(k, int)
}

INTEGERS = frozenset({"tinyint", "smallint", "mediumint", "int", "integer", "bigint"})
TEXTS = frozenset({"char", "varchar", "tinytext", "text", "mediumtext", "longtext", "enum", "set"})
# information_schema's DATA_TYPE of the spatial columns (the binlog calls each of them GEOMETRY)
SPATIAL = frozenset(
    {
        "geometry",
        "point",
        "linestring",
        "polygon",
        "multipoint",
        "multilinestring",
        "multipolygon",
        "geometrycollection",
    }
)
BINARIES = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}) | SPATIAL


@dataclass(frozen=True)
class SnapshotColumn:
    name: str
    data_type: str  # information_schema.COLUMNS.DATA_TYPE, lower case
    charset: str | None
    is_json: bool

    def select_expression(self) -> str:
        quoted = quote_identifier(self.name)
        return f"CAST({quoted} AS DOUBLE)" if self.data_type == "float" else quoted


def quote_identifier(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _is_zero_date(text: str) -> bool:
    return text.startswith("0000-00-00")


def _text(value: Any) -> Any:
    return _base64(value) if isinstance(value, (bytes, bytearray)) else value


def converter_for(column: SnapshotColumn) -> Converter:
    t = column.data_type
    if column.is_json or t == "json":
        return _json_text
    if t in INTEGERS:
        return int
    if t == "year":
        return lambda v: None if int(v) == 0 else int(v)
    if t in ("decimal", "numeric"):
        return lambda v: v.decode() if isinstance(v, bytes) else v
    if t == "float":
        return lambda v: _float32(float(v))
    if t in ("double", "real", "double precision"):
        return float
    if t == "bit":
        return lambda v: int.from_bytes(v, "big") if isinstance(v, (bytes, bytearray)) else int(v)
    if t == "date":
        return lambda v: None if _is_zero_date(v) else v
    if t == "time":
        return lambda v: v
    if t == "datetime":
        return lambda v: None if _is_zero_date(v) else v.replace(" ", "T")
    if t == "timestamp":
        return lambda v: None if _is_zero_date(v) else v.replace(" ", "T") + "Z"
    if t in BINARIES:
        return _base64
    return _text  # char..text, enum, set: text; a binary-charset text column arrives as bytes -> base64


class SnapshotRowConverter:
    """Converts SELECTed rows (tuples in `columns` order) of one table into envelope dicts."""

    def __init__(self, columns: list[SnapshotColumn]):
        self.columns = columns
        self._names = [c.name for c in columns]
        self._converters = [converter_for(c) for c in columns]

    def __call__(self, row: tuple[Any, ...]) -> dict[str, Any]:
        return {
            name: None if value is None else conv(value)
            for name, conv, value in zip(self._names, self._converters, row, strict=True)
        }


def load_columns(cursor: Any, db: str, table: str, json_columns: Collection[str]) -> list[SnapshotColumn]:
    cursor.execute(
        "SELECT COLUMN_NAME, DATA_TYPE, CHARACTER_SET_NAME FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
        (db, table),
    )
    return [
        SnapshotColumn(_s(name), _s(data_type).lower(), _s(charset) if charset else None, _s(name) in json_columns)
        for name, data_type, charset in cursor.fetchall()
    ]


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def key_json(row: dict[str, Any], pk_columns: list[str]) -> bytes:
    """The Kafka key, byte for byte as streaming builds it (same partition, so per-key order holds)."""
    return orjson.dumps({c: row.get(c) for c in pk_columns})
