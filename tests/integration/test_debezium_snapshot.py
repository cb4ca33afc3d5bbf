"""`cdcflow cdc snapshot` with cdc.format = debezium against Debezium's own initial snapshot of the same rows.

Kafka Connect standalone runs Debezium 2.7.4's MySQL connector (connector.adapter=mariadb) with
snapshot.mode=initial, one connector per option combination (the defaults; schemas.enable with
decimal.handling.mode=string), on a database holding one table per type family (tests/support/cdc.py's
FAMILIES: row 1 every value, row 2 all NULL), a keyed table with column DEFAULTs, a table whose
composite key is declared in another order than its columns, a one-row table and one with a
column of each spatial type. Then cdcflow
snapshots the same rows with the same options. Per table the messages must be equal key by key,
header by header and field by field (with the defaults also partition by partition, in the same
order); the differences listed in DELIBERATE, and the snapshot's time and binlog position (each
writer read at its own moment), are asserted on both sides, then set aside.
"""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from cdc.checkpoint import CheckpointStore
from cdc.snapshot import Snapshot
from schemas.config import Config
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
from tests.support.cdc import FAMILIES, insert_family_rows, kill_once_acknowledged, snapshot_process
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
COMBINATIONS: dict[str, dict[str, str]] = {
    "defaults": {},
    "schemas": {"schemas.enable": "true", "decimal.handling.mode": "string"},
}
# (table, column) of row 1 -> (Debezium's value, cdcflow's), per README's reasons
DELIBERATE: dict[tuple[str, str], tuple[Any, Any]] = {
    # YEAR 0000 is no year: Debezium's snapshot reads it through JDBC as 2000 (its streaming writes 1900);
    # cdcflow writes null in both. (A zero TIMESTAMP, the epoch in Debezium's streaming, is null in its snapshot.)
    ("f_year", "c3"): (2000, None),
}
EXTRA = {
    "changes": "id INT PRIMARY KEY, name VARCHAR(20) DEFAULT 'x y', amount DECIMAL(8,2) NOT NULL DEFAULT 1.50,"
    " at DATETIME(3) DEFAULT '2024-01-01 00:00:00.500', flag TINYINT(1) NOT NULL DEFAULT 0,"
    " day DATE DEFAULT '2024-02-29', n BIGINT UNSIGNED DEFAULT 7",
    "pair": "b INT, a VARCHAR(5), v BIT(3), PRIMARY KEY (a, b)",
    "one": "id BIGINT UNSIGNED PRIMARY KEY, t TIME(6)",
    "geo": GEO_COLUMNS,
}
TABLES = sorted([f"f_{f}" for f in FAMILIES] + list(EXTRA))


def _write_rows(db: str) -> int:
    """The rows both writers snapshot; returns how many."""
    conn = mysql(db)
    with conn.cursor() as cur:
        insert_family_rows(cur)
        cur.execute(
            "INSERT INTO changes (id, name, amount, at, flag, day, n) VALUES"
            " (1, 'a', 1.50, '2024-01-02 03:04:05.678', 1, '2024-03-01', 18446744073709551615),"
            " (2, NULL, -2.25, NULL, 0, NULL, NULL), (3, '', 0, '1970-01-01 00:00:00', 1, '1970-01-01', 0)"
        )
        cur.execute("INSERT INTO pair VALUES (2, 'x', b'101'), (1, 'x', NULL), (1, 'w', b'0'), (9, 'a', b'111')")
        cur.execute("INSERT INTO one VALUES (18446744073709551615, '-838:59:59.000000')")
        cur.execute(f"INSERT INTO geo VALUES (1, {GEO_VALUES}), (2, {', '.join(['NULL'] * 9)})")
    conn.close()
    return 2 * len(FAMILIES) + 3 + 4 + 1 + 2


def _configs(folder: Path, db: str) -> dict[str, Config]:
    rules = {"monitored_tables": {t: {"triggers": ["echo"]} for t in TABLES}}
    configs = {}
    for combo, options in COMBINATIONS.items():
        data = isolated_config_data(f"dbs{combo[:3]}", rules)
        data["mysql"]["database"] = db
        data["kafka"]["partitions"] = PARTITIONS
        data["cdc"].update({"format": "debezium", "debezium": options})
        (folder / combo).mkdir()
        configs[combo] = write_config(folder / combo, data)
    return configs


def _connector_options(options: dict[str, str]) -> dict[str, str]:
    # locking.mode none: no global read lock on the shared server (nothing alters these tables meanwhile)
    return connector_options(options) | {"snapshot.mode": "initial", "snapshot.locking.mode": "none"}


def _topics(prefix: str, db: str) -> list[str]:
    return [f"{prefix}.{db}.{t}" for t in TABLES]


def _all_there(prefix: str, db: str, rows: int) -> dict[str, list[tuple[Any, ...]]] | None:
    read = read_topics(_topics(prefix, db), PARTITIONS)
    found = sum(map(len, read.values()))
    assert found <= rows, f"{prefix}: {found} messages for {rows} rows"
    return {t: read[f"{prefix}.{db}.{t}"] for t in TABLES} if found == rows else None


@pytest.fixture(scope="module")
def snapshots(stack: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    install_connect()
    folder = tmp_path_factory.mktemp("debezium-snapshot")
    uid = uuid.uuid4().hex[:8]
    db = f"t_dbs{uid}"
    tables = {
        f"f_{family}": ", ".join(f"c{i} {t}" for i, (t, _, _) in enumerate(cols)) for family, cols in FAMILIES.items()
    }
    execute(
        [f"CREATE DATABASE {db}"]
        + [f"CREATE TABLE {db}.{t} (id INT PRIMARY KEY, {cols})" for t, cols in tables.items()]
        + [f"CREATE TABLE {db}.{t} ({cols})" for t, cols in EXTRA.items()]
    )
    rows = _write_rows(db)
    configs = _configs(folder, db)
    prefixes = {c: (f"dbzs-{uid}-{c}", config.settings.topics.cdc_prefix) for c, config in configs.items()}
    dbz_topics = [t for theirs, _ in prefixes.values() for t in _topics(theirs, db)]
    ensure_topics(configs["defaults"].settings, dbz_topics, partitions=PARTITIONS)
    connectors = {prefixes[c][0]: _connector_options(o) for c, o in COMBINATIONS.items()}
    try:
        with KafkaConnect(folder, db, connectors, server_id=random.randint(6_000_001, 7_000_000)) as connect:
            print(f"\nKafka Connect + {len(connectors)} Debezium snapshots up in {connect.startup_seconds:.1f}s")
            theirs = {
                c: wait_for(lambda p=p: _all_there(p, db, rows), 120, interval=1.0, what=f"{p}'s snapshot rows")
                for c, (p, _) in prefixes.items()
            }
            assert not connect.errors(), f"Debezium logged errors:\n{connect.tail()}"
        ours, results = {}, {}
        for combo, config in configs.items():
            started = time.monotonic()
            # chunks of 2 rows: tables span chunks, so the markers are proven across chunk boundaries
            results[combo] = Snapshot(config.settings, config.rules, chunk_size=2).run()
            print(f"cdcflow snapshot ({combo}): {rows} rows in {time.monotonic() - started:.1f}s")
            ours[combo] = wait_for(lambda p=prefixes[combo][1]: _all_there(p, db, rows), 60, what="cdcflow's rows")
        return {"db": db, "prefixes": prefixes, "theirs": theirs, "ours": ours, "results": results}
    finally:
        execute(f"DROP DATABASE IF EXISTS {db}")
        for combo, config in configs.items():
            theirs_prefix, ours_prefix = prefixes[combo]
            remove_test_resources(
                config.settings, [*_topics(theirs_prefix, db), theirs_prefix, *_topics(ours_prefix, db)]
            )


def _unwrapped(message: Any, prefix: str) -> tuple[Any, Any]:
    """Unlike streaming's (test_debezium_compat's DELIBERATE_SCHEMA), the snapshot's schemas need no exception:
    cdcflow reads ENUM members from information_schema, which keeps '?' for those outside the BMP, as
    Debezium's DDL parser does."""
    if not isinstance(message, dict) or set(message) != {"schema", "payload"}:
        return None, message
    text = orjson.dumps(message["schema"]).decode().replace(prefix + ".", "PREFIX.")
    return orjson.loads(text), message["payload"]


def _set_aside(value: dict[str, Any], debezium: bool) -> tuple[int, str, int]:
    """Times and the binlog position: checked for shape, returned (each writer reads at its own moment)."""
    ts_ms, ts_us, ts_ns = value.pop("ts_ms"), value.pop("ts_us"), value.pop("ts_ns")
    assert all(type(t) is int for t in (ts_ms, ts_us, ts_ns)) and ts_us // 1000 == ts_ms and ts_ns // 1000 == ts_us
    source = value["source"]
    assert source.pop("version") == ("2.7.4.Final" if debezium else "2.7.4.Final-cdcflow")
    started, us, ns = source.pop("ts_ms"), source.pop("ts_us"), source.pop("ts_ns")
    assert type(started) is int and started % 1000 == 0 and us == started * 1000 and ns == us * 1000
    file, pos = source.pop("file"), source.pop("pos")
    assert isinstance(file, str) and type(pos) is int
    return started, file, pos


def _normalised(message: tuple[Any, ...], prefix: str, table: str, debezium: bool) -> tuple[Any, ...]:
    """(partition, key, value, headers, key schema, value schema, key bytes, (snapshot start, file, pos))."""
    partition, key, value, headers, raw_key = orjson.loads(orjson.dumps(message[:4])) + [message[4]]  # a copy
    raw_key = raw_key.replace(prefix.encode() + b".", b"PREFIX.") if raw_key else raw_key
    key_schema, key = _unwrapped(key, prefix)
    value_schema, value = _unwrapped(value, prefix)
    read_at = _set_aside(value, debezium)
    assert value["source"].pop("name") == prefix  # Debezium's source.name is its topic.prefix
    image = value["after"]
    for (t, column), (theirs, ours) in DELIBERATE.items():
        if debezium and t == table and image.get("id") == 1:
            assert not diff(image[column], theirs), f"{table}.{column}: Debezium wrote {image[column]!r}"
            image[column] = ours
    return partition, key, value, headers, key_schema, value_schema, raw_key, read_at


@pytest.mark.parametrize("combo", list(COMBINATIONS))
@pytest.mark.parametrize("table", TABLES)
def test_same_snapshot_messages_as_debezium(snapshots: dict[str, Any], combo: str, table: str) -> None:
    dbz_prefix, our_prefix = snapshots["prefixes"][combo]
    expected = [_normalised(m, dbz_prefix, table, True)[:-1] for m in snapshots["theirs"][combo][table]]
    got = [_normalised(m, our_prefix, table, False)[:-1] for m in snapshots["ours"][combo][table]]
    if combo == "schemas":
        # the key's bytes hold the topic prefix, which differs between the writers, and so does its partition:
        # there the key bytes (prefix made neutral) must be equal, in the same order per key
        expected, got = (sorted(((None, *m[1:]) for m in side), key=lambda m: m[6]) for side in (expected, got))
    assert expected, f"Debezium wrote nothing for {table}"
    for n, (want, have) in enumerate(zip(expected, got, strict=False)):
        assert have == want, f"{table} message {n}: (path, Debezium, cdcflow) {diff(want, have)}"
    assert len(got) == len(expected)


def test_snapshot_time_and_position_are_one_per_snapshot(snapshots: dict[str, Any]) -> None:
    """Every row of one snapshot carries the same file/pos; cdcflow's are its hand-over point and its
    source.ts_ms is one (the snapshot's start). Debezium's is in whole seconds too but can advance
    while it reads: one of its snapshots here had two values, a second apart (a loaded machine)."""
    for combo, (dbz_prefix, our_prefix) in snapshots["prefixes"].items():
        for side, prefix, debezium in ((snapshots["theirs"], dbz_prefix, True), (snapshots["ours"], our_prefix, False)):
            places = {_normalised(m, prefix, t, debezium)[-1] for t in TABLES for m in side[combo][t]}
            assert len({place[1:] for place in places}) == 1, f"{prefix}: {places}"
            if debezium:
                seconds = sorted(place[0] for place in places)
                assert seconds[-1] - seconds[0] <= 60_000, f"{prefix}: {places}"  # one snapshot's span
            else:
                assert len(places) == 1, f"{prefix}: {places}"
                handover = snapshots["results"][combo].handover
                assert next(iter(places))[1:] == (handover.file, handover.pos)


def test_snapshot_event_ids_are_unique_and_not_binlog_places(snapshots: dict[str, Any]) -> None:
    for side in (snapshots["theirs"]["defaults"], snapshots["ours"]["defaults"]):
        ids = [debezium_event_id(v) for t in TABLES for _, _, v, *_ in side[t]]
        assert all(i and i.startswith("snapshot:") for i in ids), ids[:3]
        assert len(set(ids)) == len(ids)
        # not in the server:file:pos:row shape: the worker must not take snapshot rows for binlog re-sends
        assert all(binlog_order(i or "") is None for i in ids)
    ours = snapshots["ours"]["defaults"]
    sample = next(v for _, _, v, *_ in ours["changes"] if v["after"]["id"] == 1)
    again = orjson.loads(orjson.dumps(sample))  # the same row re-sent by a resumed snapshot
    assert debezium_event_id(again) == debezium_event_id(sample)


def test_kill_9_mid_snapshot_then_resume_in_debezium_format(stack: None, tmp_path: Path) -> None:
    """The snapshot's guarantees hold in this format too: resumed after kill -9 from the last acknowledged
    chunk, every row sent, a re-sent row with the same event id, one "first" and one "last" marker."""
    data = isolated_config_data("dbsk", {"monitored_tables": {"items": {"triggers": ["echo"]}}})
    data["cdc"].update({"format": "debezium"})
    db = data["mysql"]["database"]
    execute([f"CREATE DATABASE {db}", f"CREATE TABLE {db}.items (id INT PRIMARY KEY, n INT, s VARCHAR(20))"])
    config = write_config(tmp_path, data)
    try:
        execute("INSERT INTO items SELECT seq, seq, CONCAT('r', seq) FROM seq_1_to_50000", db)
        store = CheckpointStore(config.settings)
        first = snapshot_process(config, "--chunk-size", "100")
        _, killed_at = kill_once_acknowledged(first, config, 2000, 50000)
        second = snapshot_process(config, "--chunk-size", "100")
        out, err = second.communicate(timeout=300)
        assert second.returncode == 0, err
        assert f"resuming snapshot {killed_at['snapshot_id']}" in err
        topic = config.settings.topics.row_changes(db, "items")
        stream = [orjson.loads(m.value()) for m in consume_all(config, [topic], idle_seconds=1.5)]
        by_key: dict[int, set[str | None]] = {}
        for value in stream:
            assert value["op"] == "r" and set(value) >= {"before", "after", "source", "transaction"}
            by_key.setdefault(value["after"]["id"], set()).add(debezium_event_id(value))
        assert len(by_key) == 50000 and all(len(ids) == 1 for ids in by_key.values())
        assert 0 <= len(stream) - 50000 <= 100, "it did not resume from the last acknowledged chunk"
        markers = [v["source"]["snapshot"] for v in stream]
        assert markers.count("first") == 1 and markers.count("last") == 1
        assert {m for m in markers if m != "true"} == {"first", "last"}  # one table: "first"/"last" win
        # the hand-over point (and so every row's source.file/pos) stays the first run's consistent read
        assert {(v["source"]["file"], v["source"]["pos"]) for v in stream} == {
            (killed_at["handover"]["file"], killed_at["handover"]["pos"])
        }
        checkpoint = store.load()
        assert checkpoint is not None and checkpoint.gtid_set == killed_at["handover"]["gtid_set"]
    finally:
        execute(f"DROP DATABASE IF EXISTS {db}")
        remove_test_resources(config.settings, [])
