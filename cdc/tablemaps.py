"""Table map events parsed once per distinct body instead of once per transaction.

Every transaction repeats the table map of each table it touches, and mysql-replication parses it
from scratch each time (column objects, optional metadata, two Table objects that compare column
dicts): with one-row transactions that costs more than the row. The body of a table map (table
id, names, column types and metadata) is the same bytes until the table changes, so the parsed
state is kept per body and the stream's filters and reused. Same bytes, same parse: a DDL changes
the bytes (new columns, new metadata) and so gets a fresh parse. Applied on import.
"""

from __future__ import annotations

from typing import Any

from pymysqlreplication.event import BinLogEvent
from pymysqlreplication.row_event import TableMapEvent

MAX_ENTRIES = 1024  # distinct table maps kept; cleared when exceeded (a new parse costs ~0.1 ms)
# Attributes BinLogEvent.__init__ sets for the event at hand; everything else is the table map's.
PER_EVENT = frozenset(
    {
        "packet",
        "table_map",
        "event_type",
        "timestamp",
        "event_size",
        "_post_header_lengths",
        "_ctl_connection",
        "mysql_version",
        "_ignore_decode_errors",
        "_verify_checksum",
        "_is_event_valid",
        "complete",
        "dbms",
    }
)

_original_init = TableMapEvent.__init__
_parsed: dict[tuple[bytes, str], dict[str, Any]] = {}


def _body(from_packet: Any, event_size: int) -> bytes | None:
    """The event's body without consuming it (the library itself reads pymysql's packet this way)."""
    packet = getattr(from_packet, "packet", None)
    data, position = getattr(packet, "_data", None), getattr(packet, "_position", None)
    if not isinstance(data, (bytes, bytearray)) or not isinstance(position, int):
        return None
    if getattr(from_packet, "_BinLogPacketWrapper__data_buffer", b""):
        return None  # bytes pushed back into the wrapper: not a plain view of the packet
    return bytes(data[position : position + event_size])


def _cached_init(
    self: Any, from_packet: Any, event_size: int, table_map: dict[int, Any], ctl_connection: Any, **kwargs: Any
) -> None:
    body = None if kwargs.get("freeze_schema") or kwargs.get("verify_checksum") else _body(from_packet, event_size)
    if body is None:
        _original_init(self, from_packet, event_size, table_map, ctl_connection, **kwargs)
        return
    key = (
        body,
        repr(
            (
                kwargs.get("only_tables"),
                kwargs.get("ignored_tables"),
                kwargs.get("only_schemas"),
                kwargs.get("ignored_schemas"),
                kwargs.get("optional_meta_data"),
                kwargs.get("use_column_name_cache"),
            )
        ),
    )
    state = _parsed.get(key)
    if state is None:
        _original_init(self, from_packet, event_size, table_map, ctl_connection, **kwargs)
        if self._processed and not all(c.name for c in self.columns):
            return  # names came from outside the body (information_schema), which a DDL can change
        if len(_parsed) >= MAX_ENTRIES:
            _parsed.clear()
        _parsed[key] = {k: v for k, v in self.__dict__.items() if k not in PER_EVENT}
        return
    BinLogEvent.__init__(self, from_packet, event_size, table_map, ctl_connection, **kwargs)
    self.__dict__.update(state)
    from_packet.advance(event_size)
    if self._processed:
        table_map[self.table_id] = self.table_obj


def apply() -> None:
    if TableMapEvent.__init__ is not _cached_init:
        TableMapEvent.__init__ = _cached_init


apply()
