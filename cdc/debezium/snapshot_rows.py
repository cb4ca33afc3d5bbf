"""`cdcflow cdc snapshot` with cdc.format = debezium: rows as Debezium's initial snapshot writes them.

The snapshot reads rows by SELECT and cdc/snapshot_values.py turns them into the JSON values the
binlog reader gives; from there the streaming path's converters and schemas (values.py, schema.py,
envelope.py) apply unchanged. They are chosen by binlog column definitions, which a SELECT has
not: ColumnDefinition rebuilds the attributes they read from information_schema.COLUMNS.

What Debezium 2.7.4 (connector.adapter=mariadb, snapshot.mode=initial) writes for a snapshot row,
measured by tests/integration/test_debezium_snapshot.py: op "r", before null, no headers, the key
as streaming's; source.server_id 0, gtid null, row 0, file/pos the binlog position the snapshot
read at, ts_ms the snapshot's start in whole seconds (the same for every row), and source.snapshot
"first" (first row of the snapshot), "first_in_data_collection" / "last_in_data_collection" (a
table's first / last row), "last" (the snapshot's last row), else "true".
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from pymysqlreplication.constants import FIELD_TYPE

from cdc.debezium.envelope import messages, source_block
from cdc.debezium.produce import FORMAT_VERSION, table_format
from cdc.debezium.schema import Facts, wrapped
from cdc.snapshot_values import SPATIAL
from schemas.debezium import DebeziumOptions

# information_schema DATA_TYPE -> the type mysql-replication gives the binlog column
_TYPES = {
    "tinyint": FIELD_TYPE.TINY,
    "smallint": FIELD_TYPE.SHORT,
    "mediumint": FIELD_TYPE.INT24,
    "int": FIELD_TYPE.LONG,
    "integer": FIELD_TYPE.LONG,
    "bigint": FIELD_TYPE.LONGLONG,
    "decimal": FIELD_TYPE.NEWDECIMAL,
    "numeric": FIELD_TYPE.NEWDECIMAL,
    "float": FIELD_TYPE.FLOAT,
    "double": FIELD_TYPE.DOUBLE,
    "real": FIELD_TYPE.DOUBLE,
    "bit": FIELD_TYPE.BIT,
    "date": FIELD_TYPE.DATE,
    "time": FIELD_TYPE.TIME2,
    "datetime": FIELD_TYPE.DATETIME2,
    "timestamp": FIELD_TYPE.TIMESTAMP2,
    "year": FIELD_TYPE.YEAR,
    "char": FIELD_TYPE.STRING,
    "binary": FIELD_TYPE.STRING,
    "varchar": FIELD_TYPE.VARCHAR,
    "varbinary": FIELD_TYPE.VARCHAR,
    "enum": FIELD_TYPE.ENUM,
    "set": FIELD_TYPE.SET,
    "json": FIELD_TYPE.JSON,
    **dict.fromkeys(SPATIAL, FIELD_TYPE.GEOMETRY),
}
_BINARY_STRINGS = frozenset({"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"})
_MEMBER = re.compile(r"'((?:[^']|'')*)'")


@dataclass(frozen=True)
class ColumnDefinition:
    """The attributes of a mysql-replication binlog column that cdc/debezium reads."""

    name: str
    type: int
    unsigned: bool = False
    bits: int = 0
    fsp: int = 0
    precision: int = 0
    decimals: int = 0
    character_set_name: str | None = None
    enum_values: tuple[str, ...] = ()
    set_values: tuple[str, ...] = ()
    geometry: str | None = None  # a spatial column's declared type (point, linestring, ...)


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def column_definition(name: str, data_type: str, column_type: str, row: tuple[Any, ...]) -> ColumnDefinition:
    precision, scale, fsp, charset = row
    members = tuple(m.replace("''", "'") for m in _MEMBER.findall(column_type))
    return ColumnDefinition(
        name=name,
        type=_TYPES.get(data_type, FIELD_TYPE.BLOB),  # text types (tinytext..longtext), blobs
        unsigned="unsigned" in column_type,
        bits=int(precision or 0) if data_type == "bit" else 0,
        fsp=int(fsp or 0),
        precision=int(precision or 0),
        decimals=int(scale or 0),
        character_set_name="binary" if data_type in _BINARY_STRINGS else (_s(charset) if charset else None),
        enum_values=members if data_type == "enum" else (),
        set_values=members if data_type == "set" else (),
        geometry=data_type if _TYPES.get(data_type) == FIELD_TYPE.GEOMETRY else None,
    )


def load_definitions(cursor: Any, db: str, table: str) -> list[ColumnDefinition]:
    """The table's columns in table order (the order a SELECT of them returns)."""
    cursor.execute(
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, NUMERIC_PRECISION, NUMERIC_SCALE, DATETIME_PRECISION, "
        "CHARACTER_SET_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s "
        "ORDER BY ORDINAL_POSITION",
        (db, table),
    )
    return [
        column_definition(_s(name), _s(data_type).lower(), _s(column_type).lower(), tuple(rest))
        for name, data_type, column_type, *rest in cursor.fetchall()
    ]


def snapshot_marker(first_table: bool, last_table: bool, first_in_table: bool, last_in_table: bool) -> str:
    """source.snapshot of one row, with Debezium's precedence (RelationalSnapshotChangeEventSource)."""
    if last_in_table and last_table:
        return "last"
    if first_in_table and first_table:
        return "first"
    if last_in_table:
        return "last_in_data_collection"
    if first_in_table:
        return "first_in_data_collection"
    return "true"


class SnapshotRows:
    """One table's snapshot rows (cdcflow JSON values) -> Debezium's (key, value) bytes."""

    def __init__(
        self,
        options: DebeziumOptions,
        prefix: str,
        db: str,
        table: str,
        columns: list[ColumnDefinition],
        key_columns: tuple[str, ...],
        facts: Facts,
        position: tuple[str | None, int | None],
        started_ms: int,
    ):
        self.key_columns = key_columns
        self.format = table_format(columns, key_columns, options, facts, f"{prefix}.{db}.{table}")
        base = {
            "version": FORMAT_VERSION,
            "name": prefix,  # Debezium's source.name is its topic.prefix
            "ts_ms": started_ms // 1000 * 1000,
            "db": db,
            "table": table,
            "server_id": 0,
            "file": position[0],
            "pos": position[1],
        }
        self.source = source_block(base)

    def __call__(self, row: dict[str, Any], marker: str) -> tuple[bytes | None, bytes | None]:
        after = self.format.values(row)
        source = {**self.source, "snapshot": marker}
        (message,) = messages("r", None, after, self.key_columns, source, time.time_ns(), tombstones=False)
        if self.format.schemas is None:
            return message.key, message.value
        key_schema, value_schema = self.format.schemas
        return wrapped(key_schema, message.key), wrapped(value_schema, message.value)
