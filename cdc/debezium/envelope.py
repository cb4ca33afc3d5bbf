"""Debezium's key and value for one row change, as its MySQL connector writes them with JsonConverter
(schemas.enable=false).

An update that changes the primary key becomes what Debezium makes of it: a delete under the old key
(header __debezium.newkey), its tombstone, and a create under the new key (header __debezium.oldkey).
A delete is followed by a tombstone (a null value under the same key) unless tombstones.on.delete is
false. The envelope's ts_ms/ts_us/ts_ns are when the reader handled the change, as Debezium's are.

Debezium's value has no event_id: consumers derive it from the source (schemas/row_change.py's
debezium_event_id).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

Headers = list[tuple[str, bytes]]
NEW_KEY_HEADER = "__debezium.newkey"
OLD_KEY_HEADER = "__debezium.oldkey"


@dataclass(frozen=True)
class Message:
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None


def source_block(base: dict[str, Any]) -> dict[str, Any]:
    """Debezium's `source` for row 0 of a rows event (copy it with another "row" for the others);
    `base` holds the per-event fields."""
    ts_ms = base["ts_ms"]
    return {
        "version": base["version"],
        "connector": "mysql",
        "name": base["name"],
        "ts_ms": ts_ms,
        "snapshot": "false",
        "db": base["db"],
        "sequence": None,
        "ts_us": ts_ms * 1000,
        "ts_ns": ts_ms * 1_000_000,
        "table": base["table"],
        "server_id": base["server_id"],
        "gtid": None,
        "file": base["file"],
        "pos": base["pos"],
        "row": 0,
        "thread": None,
        "query": None,
    }


def _value(before: Any, after: Any, op: str, source: dict[str, Any], now_ns: int) -> bytes:
    return orjson.dumps(
        {
            "before": before,
            "after": after,
            "source": source,
            "transaction": None,
            "op": op,
            "ts_ms": now_ns // 1_000_000,
            "ts_us": now_ns // 1000,
            "ts_ns": now_ns,
        }
    )


def messages(
    op: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    key_columns: tuple[str, ...],
    source: dict[str, Any],
    now_ns: int,
    tombstones: bool,
) -> Iterator[Message]:
    """The messages Debezium writes for one row of a rows event (1 to 4 of them)."""
    old_key = orjson.dumps({c: before.get(c) for c in key_columns}) if key_columns and before else None
    new_key = orjson.dumps({c: after.get(c) for c in key_columns}) if key_columns and after else None
    if op == "u" and old_key != new_key:
        yield Message(old_key, _value(before, None, "d", source, now_ns), [(NEW_KEY_HEADER, new_key or b"null")])
        if tombstones:
            yield Message(old_key, None, [(NEW_KEY_HEADER, new_key or b"null")])
        yield Message(new_key, _value(None, after, "c", source, now_ns), [(OLD_KEY_HEADER, old_key or b"null")])
        return
    yield Message(new_key if after is not None else old_key, _value(before, after, op, source, now_ns))
    if op == "d" and tombstones:
        yield Message(old_key, None)
