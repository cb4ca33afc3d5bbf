"""A Debezium-format change (`cdc.format: debezium`) as the rest of cdcflow sees it.

With `schemas.enable` the message is `{"schema", "payload"}` and the schema names each field's
logical type, so the images can be given back cdcflow's values (schemas/row_change.py's table in
cdc/types.py): dates and datetimes as ISO text, TIME as "[-]HH:MM:SS.ffffff", DECIMAL bytes as exact
decimal strings. Rule conditions then compare dates and decimals as they do in cdcflow's format.
Without a schema the values stay Debezium's (day counts, epoch numbers, base64 decimals): nothing in
the JSON says which number is a date.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Callable
from typing import Any

_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_DATE = dt.date(1970, 1, 1)


def _decimal(value: Any, scale: int) -> Any:
    if not isinstance(value, str):
        return value
    unscaled = int.from_bytes(base64.b64decode(value), "big", signed=True)
    sign, digits = ("-" if unscaled < 0 else ""), str(abs(unscaled)).rjust(scale + 1, "0")
    return f"{sign}{digits[:-scale]}.{digits[-scale:]}" if scale else f"{sign}{digits}"


def _micro_time(value: Any) -> Any:
    if not isinstance(value, int):
        return value
    sign, micros = ("-" if value < 0 else ""), abs(value)
    seconds, fraction = divmod(micros, 1_000_000)
    return f"{sign}{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{fraction:06d}"


def _datetime(scale_us: int) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        if not isinstance(value, int):
            return value
        moment = _EPOCH + dt.timedelta(microseconds=value * scale_us)
        # the schema does not carry the column's digits: whole seconds bare, then ms or µs as needed
        exact_ms = scale_us == 1000 or moment.microsecond % 1000 == 0
        return moment.isoformat(timespec="milliseconds" if exact_ms and moment.microsecond else "auto")

    return convert


def _date(value: Any) -> Any:
    return (_EPOCH_DATE + dt.timedelta(days=value)).isoformat() if isinstance(value, int) else value


_BY_NAME: dict[str, Callable[[Any], Any]] = {
    "io.debezium.time.Date": _date,
    "org.apache.kafka.connect.data.Date": _date,
    "io.debezium.time.Timestamp": _datetime(1000),
    "org.apache.kafka.connect.data.Timestamp": _datetime(1000),
    "io.debezium.time.MicroTimestamp": _datetime(1),
    "io.debezium.time.MicroTime": _micro_time,
    "org.apache.kafka.connect.data.Time": lambda v: _micro_time(v * 1000) if isinstance(v, int) else v,
}


def _field_converter(field: dict[str, Any]) -> Callable[[Any], Any] | None:
    name = field.get("name")
    if name == "org.apache.kafka.connect.data.Decimal":
        scale = int((field.get("parameters") or {}).get("scale", 0))
        return lambda v: _decimal(v, scale)
    return _BY_NAME.get(name) if isinstance(name, str) else None


def unwrapped(message: dict[str, Any]) -> dict[str, Any]:
    """The change inside `{"schema", "payload"}` with cdcflow's values where the schema says the type;
    any other message as it is."""
    payload, schema = message.get("payload"), message.get("schema")
    if len(message) != 2 or not isinstance(payload, dict) or not isinstance(schema, dict):
        return message
    fields = {f.get("field"): f for f in schema.get("fields") or () if isinstance(f, dict)}
    row_schema = fields.get("after") or fields.get("before") or {}
    converters = [
        (f.get("field"), conv) for f in row_schema.get("fields") or () if (conv := _field_converter(f)) is not None
    ]
    for image in (payload.get("before"), payload.get("after")):
        if isinstance(image, dict):
            for name, convert in converters:
                if image.get(name) is not None:
                    image[name] = convert(image[name])
    return payload
