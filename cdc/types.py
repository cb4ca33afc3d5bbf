"""MySQL values (as mysql-replication decodes them) -> JSON values of the row-change envelope.

| MySQL type                         | JSON                                   |
|------------------------------------|----------------------------------------|
| TINYINT..BIGINT (signed/unsigned)  | number                                 |
| DECIMAL / NUMERIC                  | string, exact digits (no float)        |
| FLOAT / DOUBLE                     | number                                 |
| BIT(n)                             | number (the bits as an unsigned int)   |
| DATE                               | "YYYY-MM-DD"                           |
| TIME                               | "[-]HH:MM:SS[.ffffff]" (may be negative or > 24h) |
| DATETIME(0..6)                     | "YYYY-MM-DDTHH:MM:SS[.ffffff]" (no zone: as stored) |
| TIMESTAMP(0..6)                    | "YYYY-MM-DDTHH:MM:SS[.ffffff]Z" (UTC)  |
| YEAR                               | number                                 |
| CHAR/VARCHAR/TEXT (any charset)    | string                                 |
| BINARY/VARBINARY/BLOB              | base64 string                          |
| JSON                               | parsed JSON                            |
| ENUM                               | string                                 |
| SET                                | string, members comma-separated        |
| zero dates ("0000-00-00")          | null                                   |
| NULL                               | null                                   |
"""
from __future__ import annotations

import base64
import datetime as dt
from decimal import Decimal
from typing import Any


def _time(value: dt.timedelta) -> str:
    # TIME can be negative and exceed 24h, so it is not a time of day: render it as MySQL does.
    total_us = value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds
    sign = "-" if total_us < 0 else ""
    total_us = abs(total_us)
    seconds, micros = divmod(total_us, 1_000_000)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    base = f"{sign}{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{base}.{micros:06d}" if micros else base


def to_json_value(value: Any) -> Any:
    """Convert one decoded column value; values already JSON-native pass through untouched."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            return value.astimezone(dt.timezone.utc).replace(tzinfo=None).isoformat() + "Z"
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


def row_to_json(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {name: to_json_value(v) for name, v in row.items()}
