"""The reader's debezium-format path: one rows event -> Debezium's messages for each of its rows."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from pymysqlreplication.constants import FIELD_TYPE

from cdc.debezium.envelope import messages, source_block
from cdc.debezium.schema import Facts, column_defaults, table_schemas, wrapped
from cdc.debezium.values import DeclaredGeometry, RowValues
from schemas.debezium import DebeziumOptions
from schemas.settings import Settings

# The Debezium release whose MySQL connector output this format follows (and is tested against);
# the "-cdcflow" suffix tells a consumer which writer it was.
FORMAT_VERSION = "2.7.4.Final-cdcflow"
Produce = Callable[[str, bytes | None, bytes | None, Any], None]
FactsOf = Callable[[str, str], Facts]  # (db, table) -> column nullability and defaults
KeyOf = Callable[[str, str], tuple[str, ...]]  # (db, table) -> primary key columns in key order
PointsOf = Callable[[str, str], frozenset[str]]  # (db, table) -> columns declared POINT


@dataclass(frozen=True)
class TableFormat:
    """What one table map's rows need: value converters and, with schemas.enable, both schemas."""

    values: RowValues
    schemas: tuple[bytes, bytes] | None
    key_columns: tuple[str, ...]


def table_format(
    columns: Any,
    key_columns: tuple[str, ...],
    options: DebeziumOptions,
    facts: Facts,
    prefix: str,
    points: frozenset[str] = frozenset(),
) -> TableFormat:
    """One table's converters (and schemas): binlog table maps and the snapshot's column definitions alike.
    `points`: the binlog's GEOMETRY columns declared POINT."""
    columns = [DeclaredGeometry(c, "point") if c.name in points else c for c in columns]
    schemas = None
    if options.schemas_enable:
        schemas = table_schemas(columns, key_columns, options, facts, frozenset(), prefix)
    defaults = column_defaults(columns, options, facts)
    return TableFormat(RowValues(columns, options, defaults=defaults), schemas, key_columns)


class Decoder(Protocol):
    def rows(self, event: Any) -> Iterator[tuple[dict[str, Any] | None, dict[str, Any] | None]]: ...


class DebeziumRows:
    def __init__(
        self, settings: Settings, facts_of: FactsOf, key_of: KeyOf | None = None, points_of: PointsOf | None = None
    ):
        self.options = settings.cdc.debezium
        self.name = settings.topics.cdc_prefix  # Debezium's source.name is its topic.prefix
        self.facts_of = facts_of
        self.key_of = key_of
        self.points_of = points_of
        # table_id -> (the table map's column list it was built for, its format)
        self._values: dict[int, tuple[Any, TableFormat]] = {}
        self._last_heartbeat = 0.0

    def heartbeat(self, producer: Any) -> None:
        """Debezium's heartbeat, when heartbeat.interval.ms says one is due (called for every binlog
        event; the server sends one each second when idle). Not tracked: it carries no change."""
        interval = self.options.heartbeat_interval_ms
        if not interval:
            return
        now = time.monotonic()
        if now - self._last_heartbeat < interval / 1000:
            return
        self._last_heartbeat = now
        producer.produce(
            self.options.heartbeat_topic(self.name),
            key=orjson.dumps({"serverName": self.name}),
            value=orjson.dumps({"ts_ms": time.time_ns() // 1_000_000}),
        )

    def forget_tables(self) -> None:
        """After DDL: column definitions may have changed."""
        self._values.clear()

    def _table_format(self, event: Any, key_columns: tuple[str, ...]) -> TableFormat:
        cached = self._values.get(event.table_id)
        if cached is not None and cached[0] is event.columns:
            return cached[1]
        facts = self.facts_of(event.schema, event.table)
        if self.key_of is not None and len(key_columns) > 1:
            # the binlog lists a composite key's columns in table order, Debezium's key in the key's order
            ordered = self.key_of(event.schema, event.table)
            key_columns = ordered if sorted(ordered) == sorted(key_columns) else key_columns
        prefix = f"{self.name}.{event.schema}.{event.table}"
        points: frozenset[str] = frozenset()
        if self.points_of is not None and any(c.type == FIELD_TYPE.GEOMETRY for c in event.columns):
            points = self.points_of(event.schema, event.table)
        table = table_format(event.columns, key_columns, self.options, facts, prefix, points)
        self._values[event.table_id] = (event.columns, table)
        return table

    def produce(self, event: Any, op: str, file: str, topic: str, decoder: Decoder, produce: Produce) -> int:
        """Produce every row of `event` (op c, u or d); returns the number of rows (not messages)."""
        pk = event.primary_key
        key_columns = (pk,) if isinstance(pk, str) and pk else tuple(pk or ())
        base = {
            "version": FORMAT_VERSION,
            "name": self.name,
            "ts_ms": event.timestamp * 1000,
            "db": event.schema,
            "table": event.table,
            "server_id": event.packet.server_id,
            "file": file,
            # Debezium's pos is where the rows event starts; log_pos is where it ends.
            "pos": event.packet.log_pos - event.packet.event_size,
        }
        table = self._table_format(event, key_columns)
        convert, schemas, key_columns = table.values, table.schemas, table.key_columns
        tombstones = self.options.tombstones_on_delete
        now_ns = time.time_ns()
        index = -1
        first = source_block(base)
        for index, (before, after) in enumerate(decoder.rows(event)):
            source = {**first, "row": index} if index else first
            for m in messages(op, convert(before), convert(after), key_columns, source, now_ns, tombstones):
                if schemas is None:
                    produce(topic, m.value, m.key, m.headers)
                else:
                    produce(topic, wrapped(schemas[1], m.value), wrapped(schemas[0], m.key), m.headers)
        return index + 1
