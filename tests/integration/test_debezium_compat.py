"""cdc.format=debezium against the real Debezium connector, on the same writes of the same binlog.

Kafka Connect standalone runs Debezium 2.7.4's MySQL connector (connector.adapter=mariadb) with one
connector per option combination; a cdcflow reader per combination runs with the same options. Both
read the same writes of one table per type family (tests/support/cdc.py's FAMILIES: every type
cdcflow maps, edge values, zero dates, NULL in every type), a keyed table with inserts, updates, an
update of the primary key and deletes, a keyless table, a table whose composite key is declared in
another order than its columns, and one with a column of each spatial type (SRIDs 0, 4326, 3857).
Per table and partition, the messages must be equal key by key, header by header and field by field,
in the same order and partition (which also proves keys hash as Java's murmur2 does). What differs
on purpose is listed in DELIBERATE and README ("Debezium format"): each such value is asserted on
both sides, then set aside.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Any

import orjson
import pytest

from schemas.row_change import debezium_event_id
from schemas.runtime.kafka_topics import ensure_topics
from streams.row_changes import binlog_order
from tests.support import (
    consume_all,
    execute,
    isolated_config_data,
    mysql,
    remove_test_resources,
    wait_for,
    write_config,
)
from tests.support.cdc import FAMILIES, ReaderThread, insert_family_rows
from tests.support.debezium import (
    GEO_COLUMNS,
    GEO_VALUES,
    KafkaConnect,
    connector_options,
    diff,
    install_connect,
    read_topics,
)

PARTITIONS = 4
# prefix suffix -> Debezium options, given alike to the connector and to cdcflow's cdc.debezium
COMBINATIONS: dict[str, dict[str, str]] = {
    "defaults": {},
    "strings": {
        "decimal.handling.mode": "string",
        "time.precision.mode": "connect",
        "bigint.unsigned.handling.mode": "precise",
        "binary.handling.mode": "hex",
        "tombstones.on.delete": "false",
        "heartbeat.interval.ms": "500",
    },
    "doubles": {"decimal.handling.mode": "double", "binary.handling.mode": "base64-url-safe"},
    "schemas": {"schemas.enable": "true"},
}
# schemas.enable is JsonConverter's: the connector gets it as converter overrides
# (table, column) of row 1 -> (Debezium's value, cdcflow's), per README's reasons
DELIBERATE: dict[tuple[str, str], tuple[Any, Any]] = {
    # Zero values are no instant: Debezium writes YEAR 0000 as 1900 and a zero TIMESTAMP as the epoch.
    ("f_year", "c3"): (1900, None),
    ("f_timestamp", "c3"): ("1970-01-01T00:00:00Z", None),
    # ENUM members outside the BMP: Debezium's DDL parser keeps '?' for them, cdcflow the binlog's member list.
    ("f_enum", "c2"): ("?", "😀"),
}
# the same in the schema of schemas.enable: (Debezium's, cdcflow's) JSON text
DELIBERATE_SCHEMA = [('"allowed":"李,?"', '"allowed":"李,😀"')]
TABLES = [f"f_{f}" for f in FAMILIES] + ["changes", "nokey", "pair", "geo"]


def _write_changes(db: str) -> None:
    conn = mysql(db)
    with conn.cursor() as cur:
        insert_family_rows(cur)
        cur.execute(
            "INSERT INTO changes (id, name, amount, at, flag) VALUES (1, 'a', 1.50, '2024-01-02 03:04:05.678', 1),"
            " (2, 'b', -2.25, NULL, 0), (3, NULL, 0, '1970-01-01 00:00:00', 1)"
        )
        cur.execute("UPDATE changes SET name = 'a2', amount = amount + 1 WHERE id = 1")
        cur.execute("UPDATE changes SET id = 20 WHERE id = 2")  # a key change
        cur.execute("DELETE FROM changes WHERE id = 3")
        cur.execute("UPDATE changes SET amount = amount * 2")  # one rows event, two rows
        cur.execute("DELETE FROM changes")
        # a composite key declared in another order than its columns: Debezium's key follows the key's order
        cur.execute("INSERT INTO pair VALUES (2, 'x', 1), (1, 'x', 2), (1, 'w', 3)")
        cur.execute("UPDATE pair SET v = 5 WHERE a = 'x'")
        cur.execute("UPDATE pair SET a = 'y' WHERE b = 1 AND a = 'w'")
        cur.execute("DELETE FROM pair WHERE b = 2")
        cur.execute(f"INSERT INTO geo VALUES (1, {GEO_VALUES}), (2, {', '.join(['NULL'] * 9)})")
        cur.execute("UPDATE geo SET p = ST_GeomFromText('POINT(-0.5 1e300)', 3857), g = p WHERE id = 2")
        cur.execute("DELETE FROM geo WHERE id = 1")
        cur.execute("INSERT INTO nokey VALUES (1, 'x'), (2, 'y')")
        cur.execute("UPDATE nokey SET s = 'z' WHERE n = 1")
        cur.execute("DELETE FROM nokey WHERE n = 2")
    conn.close()


Side = dict[str, list[tuple[Any, ...]]]  # table -> messages as read_topics returns them


def _settled(connect: KafkaConnect, prefixes: dict[str, tuple[str, str]], db: str) -> dict[str, tuple[Side, Side]]:
    """combo -> (Debezium's messages, cdcflow's) per table, once both stopped growing and agree in number."""
    last: dict[str, tuple[Side, Side]] = {}

    def read_all() -> dict[str, tuple[Side, Side]] | None:
        assert not connect.errors(), f"Debezium logged errors:\n{connect.tail()}"
        now: dict[str, tuple[Side, Side]] = {}
        for combo, (dbz, ours) in prefixes.items():
            sides = []
            for prefix in (dbz, ours):
                read = read_topics([f"{prefix}.{db}.{t}" for t in TABLES], PARTITIONS)
                sides.append({t: read[f"{prefix}.{db}.{t}"] for t in TABLES})
            now[combo] = (sides[0], sides[1])
        counts = {c: tuple(sum(map(len, s.values())) for s in sides) for c, sides in now.items()}
        previous = {c: tuple(sum(map(len, s.values())) for s in sides) for c, sides in last.items()}
        last.clear()
        last.update(now)
        enough = all(d == o and d >= 2 * len(FAMILIES) + 14 for d, o in counts.values())
        return now if enough and counts == previous else None

    try:
        result: dict[str, tuple[Side, Side]] = wait_for(read_all, 90, interval=1.0, what="both readers' messages")
    except AssertionError:
        counts = {c: [{t: len(m) for t, m in side.items() if m} for side in sides] for c, sides in last.items()}
        raise AssertionError(f"messages (Debezium, cdcflow) never settled: {counts}\n{connect.tail()}") from None
    return result


@pytest.fixture(scope="module")
def streamed(stack: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    install_connect()
    folder = tmp_path_factory.mktemp("debezium")
    uid = uuid.uuid4().hex[:8]
    db = f"t_dbz{uid}"
    execute(
        [f"CREATE DATABASE {db}"]
        + [
            f"CREATE TABLE {db}.f_{family} (id INT PRIMARY KEY, "
            + ", ".join(f"c{i} {t}" for i, (t, _, _) in enumerate(cols))
            + ")"
            for family, cols in FAMILIES.items()
        ]
        + [
            f"CREATE TABLE {db}.changes (id INT PRIMARY KEY, name VARCHAR(20) DEFAULT 'x y',"
            " amount DECIMAL(8,2) NOT NULL DEFAULT 1.50, at DATETIME(3) DEFAULT '2024-01-01 00:00:00.500',"
            " flag TINYINT(1) NOT NULL DEFAULT 0, day DATE DEFAULT '2024-02-29', n BIGINT UNSIGNED DEFAULT 7)",
            f"CREATE TABLE {db}.nokey (n INT, s VARCHAR(5))",
            f"CREATE TABLE {db}.pair (b INT, a VARCHAR(5), v INT, PRIMARY KEY (a, b))",
            f"CREATE TABLE {db}.geo ({GEO_COLUMNS})",
        ]
    )
    configs, prefixes = [], {}
    rules = {"monitored_tables": {t: {"triggers": ["echo"]} for t in TABLES}}
    for combo, options in COMBINATIONS.items():
        data = isolated_config_data(f"dbz{combo[:3]}", rules)
        data["mysql"]["database"] = db
        data["kafka"]["partitions"] = PARTITIONS
        data["cdc"].update({"format": "debezium", "debezium": options})
        (folder / combo).mkdir()
        configs.append(write_config(folder / combo, data))
        prefixes[combo] = (f"dbz-{uid}-{combo}", configs[-1].settings.topics.cdc_prefix)
    dbz_topics = [f"{p[0]}.{db}.{t}" for p in prefixes.values() for t in TABLES]
    ensure_topics(configs[0].settings, dbz_topics, partitions=PARTITIONS)
    connectors = {prefixes[c][0]: connector_options(o) for c, o in COMBINATIONS.items()}
    readers = [ReaderThread(c) for c in configs]
    try:
        for reader in readers:
            reader.__enter__()
        with KafkaConnect(folder, db, connectors, server_id=random.randint(5_000_000, 6_000_000)) as connect:
            print(f"\nKafka Connect + {len(connectors)} Debezium connectors up in {connect.startup_seconds:.1f}s")
            started = time.monotonic()
            _write_changes(db)
            sides = _settled(connect, prefixes, db)
            print(f"both readers' messages settled {time.monotonic() - started:.1f}s after the writes")
            heartbeats = {
                prefix: [(orjson.loads(m.key() or b"null"), orjson.loads(m.value() or b"null")) for m in messages]
                for prefix in prefixes["strings"]
                if (messages := list(consume_all(configs[0], [f"__debezium-heartbeat.{prefix}"], idle_seconds=1.5)))
            }
        return {"db": db, "prefixes": prefixes, "sides": sides, "heartbeats": heartbeats}
    finally:
        for reader in readers:
            reader.__exit__(None, None, None)
        execute(f"DROP DATABASE IF EXISTS {db}")
        for config, (_, ours) in zip(configs, prefixes.values(), strict=True):
            theirs = [
                d for d, o in prefixes.values() if o == ours
            ]  # + Debezium's schema-change topic, named as its prefix
            beats = [*theirs, *(f"__debezium-heartbeat.{p}" for p in (ours, *theirs))]
            remove_test_resources(config.settings, [*dbz_topics, *(f"{ours}.{db}.{t}" for t in TABLES), *beats])


def _envelope_times(value: dict[str, Any]) -> None:
    """Processing times differ by nature: checked for shape, then set aside."""
    ts_ms, ts_us, ts_ns = value.pop("ts_ms"), value.pop("ts_us"), value.pop("ts_ns")
    assert all(type(t) is int for t in (ts_ms, ts_us, ts_ns)) and ts_us // 1000 == ts_ms and ts_ns // 1000 == ts_us


def _unwrapped(message: Any, prefix: str, debezium: bool) -> tuple[Any, Any]:
    """(schema with the topic prefix made neutral, payload) of a schemas.enable message; (None, it) of others."""
    if not isinstance(message, dict) or set(message) != {"schema", "payload"}:
        return None, message
    text = orjson.dumps(message["schema"]).decode().replace(prefix + ".", "PREFIX.")
    for theirs, ours in DELIBERATE_SCHEMA if debezium else []:
        text = text.replace(theirs, ours)
    return orjson.loads(text), message["payload"]


def _normalised(message: tuple[Any, ...], prefix: str, table: str, debezium: bool) -> tuple[Any, ...]:
    """(partition, key, value, headers, key schema, value schema, key bytes) made comparable across the two
    writers: prefixes neutral, processing times and deliberate differences checked and set aside."""
    partition, key, value, headers, raw_key = message
    raw_key = raw_key.replace(prefix.encode() + b".", b"PREFIX.") if raw_key else raw_key
    key_schema, key = _unwrapped(key, prefix, debezium)
    value_schema, value = _unwrapped(value, prefix, debezium)
    if value is not None:
        _envelope_times(value)
        version = value["source"].pop("version")
        assert version == ("2.7.4.Final" if debezium else "2.7.4.Final-cdcflow")
        assert value["source"].pop("name") == prefix  # Debezium's source.name is its topic.prefix
        for image in (value["before"], value["after"]):
            for (t, column), (theirs, ours) in DELIBERATE.items():
                if debezium and t == table and image is not None and image.get("id") == 1:
                    assert not diff(image[column], theirs), f"{table}.{column}: Debezium wrote {image[column]!r}"
                    image[column] = ours
    return partition, key, value, headers, key_schema, value_schema, raw_key


def _binlog_place(message: tuple[Any, ...]) -> tuple[int, int, str]:
    value = message[2]  # a tombstone has no place: first, by key
    return (value["source"]["pos"], value["source"]["row"], value["op"]) if value else (0, 0, repr(message[1]))


@pytest.mark.parametrize("combo", list(COMBINATIONS))
@pytest.mark.parametrize("table", TABLES)
def test_same_messages_as_debezium(streamed: dict[str, Any], combo: str, table: str) -> None:
    dbz_prefix, our_prefix = streamed["prefixes"][combo]
    theirs, ours = streamed["sides"][combo]
    expected = [_normalised(m, dbz_prefix, table, True) for m in theirs[table]]
    got = [_normalised(m, our_prefix, table, False) for m in ours[table]]
    # Without a key any partition will do (Java's sticky partitioner, librdkafka's random). With schemas.enable
    # the key's bytes hold the topic prefix, which differs between the two writers, and so does its hash: there
    # the key bytes (prefix made neutral) must be equal, which puts them in equal partitions under equal names.
    if table == "nokey" or combo == "schemas":
        expected, got = (sorted(((None, *m[1:]) for m in side), key=_binlog_place) for side in (expected, got))
    assert expected, f"Debezium wrote nothing for {table}"
    for n, (want, have) in enumerate(zip(expected, got, strict=False)):
        assert have == want, f"{table} message {n}: (path, Debezium, cdcflow) {diff(want, have)}"
    assert len(got) == len(expected)


def _event_ids(side: Side) -> list[str | None]:
    return [debezium_event_id(v) for t in TABLES for _, _, v, *_ in side[t] if v is not None]


def test_event_ids_unique_stable_and_in_binlog_order(streamed: dict[str, Any]) -> None:
    theirs, ours = streamed["sides"]["defaults"]
    ids = _event_ids(ours)
    assert None not in ids and len(set(ids)) == len(ids) > 2 * len(FAMILIES)
    # Stable: another reader of the same binlog (other options, own topics), and Debezium itself, give the same ids.
    assert sorted(map(str, _event_ids(streamed["sides"]["doubles"][1]))) == sorted(map(str, ids))
    assert sorted(map(str, _event_ids(theirs))) == sorted(map(str, ids))
    # binlog order: position, row, and a key change's delete before its create (as both writers emit them)
    changes = sorted(
        (v for _, _, v, *_ in ours["changes"] if v is not None),
        key=lambda v: (v["source"]["pos"], v["source"]["row"], v["op"] == "c"),
    )
    halves = [v for _, _, v, headers, _ in ours["changes"] if v is not None and headers]
    assert sorted(v["op"] for v in halves) == ["c", "d"]  # the key change: one binlog row, two messages
    assert len({debezium_event_id(v) for v in halves}) == 2 and halves[0]["source"]["pos"] == halves[1]["source"]["pos"]
    orders = [binlog_order(debezium_event_id(v) or "") for v in changes]
    assert None not in orders and orders == sorted(o for o in orders if o is not None), "ids out of binlog order"


def test_heartbeats_as_debezium_writes_them(streamed: dict[str, Any]) -> None:
    """heartbeat.interval.ms (set for the "strings" combination): same topic name pattern, key and value shape."""
    beats = streamed["heartbeats"]
    assert set(beats) == set(streamed["prefixes"]["strings"]), f"heartbeat topics written: {list(beats)}"
    for prefix, messages in beats.items():
        for key, value in messages:
            assert key == {"serverName": prefix}
            assert list(value) == ["ts_ms"] and type(value["ts_ms"]) is int
