"""`cdcflow cdc snapshot` against the real MariaDB and Kafka: types, consistency with streaming, resume, errors.

The consistency tests write concurrently while the snapshot runs, then let the reader stream from
the position the snapshot handed over, and replay the topics per key in Kafka order: the result must
be exactly the tables' contents (SELECT), row for row.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pymysql
import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from cdc.checkpoint import CheckpointStore, Position
from cdc.reader import BinlogReader
from cdc.snapshot import Snapshot, SnapshotUnfinished, progress_key
from console.cli import cli
from schemas.config import Config
from schemas.row_change import RowChange
from tests.support import (
    consume_all,
    execute,
    isolated_config_data,
    mysql,
    remove_test_resources,
    wait_for,
    write_config,
)
from tests.support.cdc import (
    FAMILIES,
    ReaderThread,
    insert_family_rows,
    kill_once_acknowledged,
    snapshot_process,
)


def make_config(tmp_path: Path, tag: str, tables: dict[str, str]) -> Config:
    """An isolated config whose rules monitor `tables` (name -> column definitions), created fresh."""
    data = isolated_config_data(tag, {"monitored_tables": {t: {"triggers": ["echo"]} for t in tables}})
    db = data["mysql"]["database"]
    execute([f"CREATE DATABASE {db}", *(f"CREATE TABLE {db}.{t} ({cols})" for t, cols in tables.items())])
    return write_config(tmp_path, data)


@pytest.fixture
def cleanup() -> Iterator[list[Config]]:
    configs: list[Config] = []
    yield configs
    for config in configs:
        execute(f"DROP DATABASE IF EXISTS {config.settings.mysql.database}")
        remove_test_resources(config.settings, [])


def events(config: Config, tables: list[str], idle: float = 1.5) -> list[tuple[bytes, dict[str, Any]]]:
    """(key, envelope) of every message on the tables' topics, in Kafka order per partition."""
    db = config.settings.mysql.database
    topics = [config.settings.topics.row_changes(db, t) for t in tables]
    return [(m.key(), orjson.loads(m.value())) for m in consume_all(config, topics, idle_seconds=idle)]


def replay(stream: list[tuple[bytes, dict[str, Any]]]) -> dict[tuple[str, bytes], dict[str, Any]]:
    """Apply the events per key in Kafka order, as a consumer materializing the table would."""
    state: dict[tuple[str, bytes], dict[str, Any]] = {}
    for key, event in stream:
        slot = (event["source"]["table"], key)
        if event["op"] == "d":
            state.pop(slot, None)
        else:
            state[slot] = event["after"]
    return state


def table_contents(db: str, tables: dict[str, list[str]]) -> dict[tuple[str, bytes], dict[str, Any]]:
    """SELECT of each table (name -> primary key columns), keyed like the Kafka messages."""
    conn = pymysql.connect(
        host="127.0.0.1",
        port=3307,
        user="cdcflow",
        password="cdcflow",
        database=db,
        cursorclass=pymysql.cursors.DictCursor,
    )
    out = {}
    with conn.cursor() as cur:
        for table, pk in tables.items():
            cur.execute(f"SELECT * FROM {table}")
            for row in cur.fetchall():
                out[(table, orjson.dumps({c: row[c] for c in pk}))] = row
    conn.close()
    return out


def server_gtid_seq() -> int:
    conn = mysql()
    with conn.cursor() as cur:
        cur.execute("SELECT @@global.gtid_binlog_pos")
        gtid = cur.fetchone()[0]
    conn.close()
    return max(int(g.split("-")[2]) for g in gtid.split(",") if g.startswith("0-"))


def checkpoint_seq(position: Position | None) -> int:
    if position is None or not position.gtid_set:
        return -1
    return max(int(g.split("-")[2]) for g in position.gtid_set.split(",") if g.startswith("0-"))


class Writer(threading.Thread):
    """Random inserts, updates and deletes (some in multi-row transactions) until stopped."""

    def __init__(self, db: str, next_id: int, seed: int):
        super().__init__(daemon=True)
        self.db, self.next_id, self.random = db, next_id, random.Random(seed)
        self.stop = threading.Event()
        self.ops = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = mysql(self.db)
            with conn.cursor() as cur:
                while not self.stop.is_set():
                    r = self.random
                    in_txn = r.random() < 0.3
                    if in_txn:
                        cur.execute("BEGIN")
                    for _ in range(r.randint(2, 5) if in_txn else 1):
                        self._one(cur, r)
                    if in_txn:
                        cur.execute("COMMIT")
            conn.close()
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e

    def _one(self, cur: Any, r: random.Random) -> None:
        op = r.random()
        target = r.randint(1, self.next_id)
        if op < 0.5:
            cur.execute("UPDATE items SET n = n + 1, s = %s WHERE id = %s", (f"u{r.randint(0, 10**6)}", target))
            cur.execute("UPDATE pairs SET v = v + 1 WHERE a = %s AND b = %s", (target % 300, f"b{target % 7}"))
        elif op < 0.75:
            self.next_id += 1
            cur.execute("INSERT INTO items VALUES (%s, 0, 'new')", (self.next_id,))
            cur.execute("INSERT IGNORE INTO pairs VALUES (%s, %s, 1)", (self.next_id % 300 + 300, f"b{target % 7}"))
        else:
            cur.execute("DELETE FROM items WHERE id = %s", (target,))
            cur.execute("DELETE FROM pairs WHERE a = %s AND b = %s", (target % 300, f"b{target % 7}"))
        self.ops += 1


TABLES = {
    "items": "id INT PRIMARY KEY, n INT NOT NULL, s VARCHAR(20)",
    "pairs": "a INT, b VARCHAR(10), v INT NOT NULL, PRIMARY KEY (a, b)",
}
KEYS = {"items": ["id"], "pairs": ["a", "b"]}


def fill(db: str, rows: int) -> None:
    execute(
        [
            f"INSERT INTO items SELECT seq, seq * 2, CONCAT('r', seq) FROM seq_1_to_{rows}",
            "INSERT INTO pairs SELECT seq DIV 7, CONCAT('b', seq MOD 7), seq FROM seq_0_to_2099",
        ],
        db,
    )


def snapshot_while_writing(config: Config, tables: list[str] | None) -> tuple[Any, Writer, int]:
    """Run a snapshot (chunks of 100) while a writer changes the tables; the writer keeps going after it."""
    writer = Writer(config.settings.mysql.database, 3000, seed=7)
    writer.start()
    wait_for(lambda: writer.ops > 20, 30, what="the writer to get going")
    job = Snapshot(config.settings, config.rules, tables, chunk_size=100)
    job.prepare()
    ops_at_start = writer.ops
    result = job.run()
    during = writer.ops - ops_at_start
    return result, writer, during


def stream_until_caught_up(config: Config, writer: Writer) -> Position:
    """Start the reader (from the handed-over checkpoint), stop the writer, wait for the reader to pass
    its last write."""
    with ReaderThread(config) as reader:
        start_ops = writer.ops
        wait_for(lambda: writer.ops > start_ops + 100, 60, what="writes while the reader streams")
        writer.stop.set()
        writer.join(30)
        assert writer.error is None, writer.error
        target = server_gtid_seq()
        wait_for(
            lambda: checkpoint_seq(reader.reader.stats.checkpoint) >= target,
            120,
            interval=0.2,
            what=f"the reader to checkpoint past GTID seq {target}",
        )
        return reader.reader.stats.checkpoint


def assert_replay_equals_tables(config: Config) -> dict[str, int]:
    db = config.settings.mysql.database
    stream = events(config, list(TABLES))
    replayed = replay(stream)
    expected = table_contents(db, KEYS)
    missing = [k for k in expected if k not in replayed]
    extra = [k for k in replayed if k not in expected]
    wrong = [(k, replayed[k], expected[k]) for k in expected if k in replayed and replayed[k] != expected[k]]
    assert not missing and not extra and not wrong, (
        f"{len(missing)} missing e.g. {missing[:3]}, {len(extra)} extra e.g. {extra[:3]}, "
        f"{len(wrong)} wrong e.g. {wrong[:3]}"
    )
    ops: dict[str, int] = {}
    for _, e in stream:
        ops[e["op"]] = ops.get(e["op"], 0) + 1
    return ops


def test_snapshot_then_streaming_replays_to_the_table_contents_with_concurrent_writes(
    stack: None, tmp_path: Path, cleanup: list[Config]
) -> None:
    config = make_config(tmp_path, "snapc", TABLES)
    cleanup.append(config)
    fill(config.settings.mysql.database, 3000)
    assert CheckpointStore(config.settings).load() is None  # a reader that never ran
    result, writer, during = snapshot_while_writing(config, None)
    assert during > 0, "no write happened while the snapshot ran: the test proves nothing"
    assert result.rows >= 3000
    # a full snapshot with no checkpoint: the reader starts exactly where the consistent read was
    assert CheckpointStore(config.settings).load().gtid_set == result.handover.gtid_set == result.checkpoint.gtid_set
    stream_until_caught_up(config, writer)
    ops = assert_replay_equals_tables(config)
    assert ops["r"] == result.rows and ops.get("u", 0) > 0 and ops.get("d", 0) > 0 and ops.get("c", 0) > 0


def test_partial_snapshot_after_streaming_keeps_the_earlier_checkpoint_and_replays_exactly(
    stack: None, tmp_path: Path, cleanup: list[Config]
) -> None:
    config = make_config(tmp_path, "snapp", TABLES)
    cleanup.append(config)
    db = config.settings.mysql.database
    with ReaderThread(config):
        fill(db, 3000)  # streamed as inserts
        wait_for(
            lambda: checkpoint_seq(CheckpointStore(config.settings).load()) >= server_gtid_seq() - 50,
            60,
            interval=0.5,
            what="the reader to checkpoint the fill",
        )
    before = CheckpointStore(config.settings).load()
    result, writer, during = snapshot_while_writing(config, ["items"])  # pairs is not re-snapshotted
    assert during > 0, "no write happened while the snapshot ran: the test proves nothing"
    after = CheckpointStore(config.settings).load()
    # the reader stopped before the writes, so its checkpoint is earlier: a partial snapshot keeps it
    assert after.gtid_set == before.gtid_set != result.handover.gtid_set
    stream_until_caught_up(config, writer)
    ops = assert_replay_equals_tables(config)
    assert ops["r"] == result.rows


@pytest.fixture(scope="module")
def typed(stack: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[int, dict]]]:
    """{family: {row id: snapshot event}} for the same values test_cdc_types streams."""
    tables = {
        f"f_{family}": "id INT PRIMARY KEY, " + ", ".join(f"c{i} {t}" for i, (t, _, _) in enumerate(cols))
        for family, cols in FAMILIES.items()
    }
    config = make_config(tmp_path_factory.mktemp("snaptypes"), "snapt", tables)
    db = config.settings.mysql.database
    try:
        conn = mysql(db)
        with conn.cursor() as cur:
            insert_family_rows(cur)
        conn.close()
        Snapshot(config.settings, config.rules, chunk_size=1).run()
        out: dict[str, dict[int, dict]] = {}
        for _, event in events(config, list(tables)):
            out.setdefault(event["source"]["table"][2:], {})[event["after"]["id"]] = event
        yield out
    finally:
        execute(f"DROP DATABASE IF EXISTS {db}")
        remove_test_resources(config.settings, [])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_snapshot_values_are_those_streaming_gives(typed: dict[str, dict[int, dict]], family: str) -> None:
    cols = FAMILIES[family]
    after = typed[family][1]["after"]
    expected = {"id": 1, **{f"c{i}": value for i, (_, _, value) in enumerate(cols)}}
    mismatches = {
        k: (cols[int(k[1:])][0], after.get(k), v)
        for k, v in expected.items()
        if k != "id" and (after.get(k) != v or type(after.get(k)) is not type(v))
    }
    assert not mismatches, f"column: (type, got, expected): {mismatches}"
    assert typed[family][2]["after"] == {"id": 2, **{f"c{i}": None for i in range(len(cols))}}


def test_snapshot_envelopes_ids_and_the_last_marker(typed: dict[str, dict[int, dict]]) -> None:
    all_events = [e for rows in typed.values() for e in rows.values()]
    assert {e["op"] for e in all_events} == {"r"}
    assert all(e["before"] is None for e in all_events)
    assert sorted(e["source"]["snapshot"] for e in all_events) == ["last"] + ["true"] * (len(all_events) - 1)
    last = next(e for e in all_events if e["source"]["snapshot"] == "last")
    # with no TABLE arguments the tables go in name order: the last row of the last table is "last"
    assert (last["source"]["table"], last["after"]["id"]) == (max(f"f_{f}" for f in FAMILIES), 2)
    sample = typed["integers"][1]
    snapshot_id = sample["event_id"].split(":")[1]
    assert sample["event_id"] == f"snapshot:{snapshot_id}:{sample['source']['db']}.f_integers:" + '{"id":1}'
    assert sample["source"]["connector"] == "mariadb" and sample["source"]["gtid"]
    assert len({e["event_id"] for e in all_events}) == len(all_events)
    for event in all_events:
        RowChange.model_validate(event)  # the envelope contract (schemas/row_change.py)


def test_kill_9_mid_snapshot_then_resume_sends_every_row_with_the_same_ids(
    stack: None, tmp_path: Path, cleanup: list[Config]
) -> None:
    config = make_config(tmp_path, "snapk", {"items": TABLES["items"]})
    cleanup.append(config)
    db = config.settings.mysql.database
    execute("INSERT INTO items SELECT seq, seq, CONCAT('r', seq) FROM seq_1_to_50000", db)
    store = CheckpointStore(config.settings)
    first = snapshot_process(config, "--chunk-size", "100")
    progress, killed_at = kill_once_acknowledged(first, config, 2000, 50000)

    # the reader refuses to stream while the snapshot is unfinished: its changes would overtake snapshot rows
    with pytest.raises(SnapshotUnfinished, match=progress["snapshot_id"]):
        BinlogReader(config.settings, config.rules, threading.Event()).run()

    execute("UPDATE items SET s = 'changed' WHERE id = 49999", db)  # between the two runs
    second = snapshot_process(config, "--chunk-size", "100")
    out, err = second.communicate(timeout=300)
    assert second.returncode == 0, err
    assert f"resuming snapshot {progress['snapshot_id']}" in err
    assert "50000 rows of 1 table(s) sent" in out and "rows/s" in out
    stream = events(config, ["items"])
    by_key: dict[bytes, set[str]] = {}
    for key, event in stream:
        by_key.setdefault(key, set()).add(event["event_id"])
    assert len(by_key) == 50000  # every row
    assert all(len(ids) == 1 for ids in by_key.values())  # re-sent rows kept their ids
    resent = len(stream) - 50000
    assert 0 <= resent <= 100, f"{resent} rows re-sent: it did not resume from the last acknowledged chunk"
    assert replay(stream)[("items", b'{"id":49999}')]["s"] == "changed"  # read by the resumed run
    # the hand-over stays the first run's consistent read
    assert store.load().gtid_set == killed_at["handover"]["gtid_set"]


def cli_snapshot(config: Config, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--config", str(config.path), "cdc", "snapshot", *args])


def test_where_filter_and_a_partial_snapshot(stack: None, tmp_path: Path, cleanup: list[Config]) -> None:
    config = make_config(tmp_path, "snapw", TABLES)
    cleanup.append(config)
    db = config.settings.mysql.database
    fill(db, 50)
    result = cli_snapshot(config, "items", "--where", "id % 10 = 3 AND s LIKE 'r%'", "--chunk-size", "2")
    assert result.exit_code == 0, result.output
    got = sorted(e["after"]["id"] for _, e in events(config, ["items", "pairs"]))
    assert got == [3, 13, 23, 33, 43]


@pytest.mark.parametrize(
    "args, message",
    [
        (["nosuch"], "table {db}.nosuch does not exist"),
        (
            ["items", "--where", "nocol = 1"],
            "--where 'nocol = 1' is not valid for table {db}.items: Unknown column 'nocol'",
        ),
        (["items", "--where", "id = = 1"], "--where 'id = = 1' is not valid for table {db}.items"),
        (["other"], "table {db}.other is not read by the reader"),
        (["nokey"], "table {db}.nokey has no primary key"),
        (["items", "--chunk-size", "0"], "--chunk-size"),
    ],
)
def test_bad_arguments_get_an_error_naming_them(
    stack: None, tmp_path: Path, cleanup: list[Config], args: list[str], message: str
) -> None:
    config = make_config(tmp_path, "snape", {"items": TABLES["items"], "nokey": "x INT"})
    cleanup.append(config)
    db = config.settings.mysql.database
    execute("CREATE TABLE other (id INT PRIMARY KEY)", db)
    result = cli_snapshot(config, *args)
    assert result.exit_code != 0
    assert message.format(db=db) in result.output
    assert events(config, ["items"], idle=0.5) == []  # nothing sent


def test_refuses_while_the_reader_is_live_and_an_unfinished_snapshot_of_other_tables(
    stack: None, tmp_path: Path, cleanup: list[Config]
) -> None:
    config = make_config(tmp_path, "snapl", TABLES)
    cleanup.append(config)
    with ReaderThread(config) as reader:
        wait_for(lambda: reader.reader.status is not None and reader.reader.state == "running", 30)
        reader.reader.publish_status()
        result = cli_snapshot(config, "items")
        assert result.exit_code != 0 and f"reader {config.settings.cdc.name!r} is running" in result.output
    # an unfinished snapshot of items: a snapshot of pairs must not silently discard it
    producer = Producer(config.settings.kafka_config())
    store = CheckpointStore(config.settings)
    producer.produce(
        store.topic,
        key=progress_key(config.settings),
        value=orjson.dumps(
            {
                "snapshot_id": "abc123",
                "tables": [f"{config.settings.mysql.database}.items"],
                "where": None,
                "handover": {},
                "full": False,
                "started_ms": 1,
            }
        ),
    )
    assert producer.flush(10) == 0
    result = cli_snapshot(config, "pairs")
    assert result.exit_code != 0 and "unfinished snapshot abc123" in result.output and "--restart" in result.output
    assert cli_snapshot(config, "pairs", "--restart").exit_code == 0


def test_a_full_snapshot_is_the_way_out_of_a_lost_position(stack: None, tmp_path: Path, cleanup: list[Config]) -> None:
    config = make_config(tmp_path, "snaplost", {"items": TABLES["items"]})
    cleanup.append(config)
    db = config.settings.mysql.database
    lost = f"0-1-{server_gtid_seq() + 10**9}"  # answered by the server as a purged position (error 1236)
    store = CheckpointStore(config.settings)
    store.ensure()
    producer = Producer(config.settings.kafka_config())
    store.save(producer, Position(file="mysql-bin.999999", pos=4, gtid_set=lost))
    assert producer.flush(30) == 0
    execute("INSERT INTO items VALUES (1, 1, 'a'), (2, 2, 'b')", db)
    result = cli_snapshot(config)
    assert result.exit_code == 0, result.output
    assert store.load().gtid_set != lost and "reader resumes from" in result.output
    with ReaderThread(config):
        execute(["UPDATE items SET s = 'z' WHERE id = 1", "DELETE FROM items WHERE id = 2"], db)
        stream = wait_for(
            lambda: (e := events(config, ["items"], idle=0.5)) and len(e) >= 4 and e,
            30,
            what="2 snapshot rows and 2 changes",
        )
    assert sorted((e["op"], (e["after"] or e["before"])["id"]) for _, e in stream) == [
        ("d", 2),
        ("r", 1),
        ("r", 2),
        ("u", 1),
    ]
    assert replay(stream) == table_contents(db, {"items": ["id"]})


def test_snapshot_keys_are_byte_equal_to_streaming_keys_whatever_the_key_order(
    stack: None, tmp_path: Path, cleanup: list[Config]
) -> None:
    config = make_config(tmp_path, "snapkey", {"rev": "a INT, b VARCHAR(5), v INT, PRIMARY KEY (b, a)"})
    cleanup.append(config)
    db = config.settings.mysql.database
    execute("INSERT INTO rev VALUES (1, 'x', 1), (2, 'a', 1), (1, 'y', 1)", db)
    Snapshot(config.settings, config.rules, chunk_size=1).run()  # pages by (b, a)
    with ReaderThread(config):
        execute("UPDATE rev SET v = 2", db)
        stream = wait_for(
            lambda: (e := events(config, ["rev"], idle=0.5)) and len(e) >= 6 and e,
            30,
            what="3 snapshot rows and 3 updates",
        )
    keys: dict[str, set[bytes]] = {}
    for key, event in stream:
        keys.setdefault(event["op"], set()).add(key)
    assert keys["r"] == keys["u"] == {b'{"a":1,"b":"x"}', b'{"a":2,"b":"a"}', b'{"a":1,"b":"y"}'}
