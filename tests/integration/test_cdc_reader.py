"""The binlog reader against the real MariaDB and Kafka: envelopes, keys, checkpoints, resume."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from cdc.checkpoint import CheckpointStore
from schemas.config import Config
from tests.support import consume_all, execute, isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.cdc import ReaderThread


@pytest.fixture
def config(stack: None, tmp_path: Path) -> Config:
    data = isolated_config_data("cdc", {"monitored_tables": {"items": {"triggers": ["echo"]}}})
    db = data["mysql"]["database"]
    execute(
        [
            f"CREATE DATABASE {db}",
            f"CREATE TABLE {db}.items"
            " (id INT PRIMARY KEY, name VARCHAR(50) CHARACTER SET utf8mb4, price DECIMAL(10,2))",
            f"CREATE TABLE {db}.ignored (id INT PRIMARY KEY)",
        ]
    )
    config = write_config(tmp_path, data)
    yield config
    execute(f"DROP DATABASE IF EXISTS {db}")
    remove_test_resources(config.settings, [])  # the reader's status key


def changes(config: Config) -> list[dict]:
    topic = config.settings.topics.row_changes(config.settings.mysql.database, "items")
    out = []
    for msg in consume_all(config, [topic]):
        value = orjson.loads(msg.value())
        value["_key"] = orjson.loads(msg.key())
        out.append(value)
    return out


def test_rows_reach_kafka_as_envelopes_keyed_by_primary_key(config: Config) -> None:
    db = config.settings.mysql.database
    with ReaderThread(config):
        execute(
            [
                "BEGIN",
                "INSERT INTO items VALUES (1, '李雷 😀', 12.50), (2, 'b', NULL)",
                "INSERT INTO ignored VALUES (1)",
                "COMMIT",
                "UPDATE items SET price = 99.99 WHERE id = 1",
                "DELETE FROM items WHERE id = 2",
            ],
            db,
        )
        events = wait_for(lambda: (e := changes(config)) and len(e) >= 4 and e, 30, what="4 row changes")
    by_op = {}
    for e in events:
        by_op.setdefault(e["op"], []).append(e)
    assert sorted(len(v) for v in by_op.values()) == [1, 1, 2]
    inserted = sorted(by_op["c"], key=lambda e: e["after"]["id"])
    assert inserted[0]["after"] == {"id": 1, "name": "李雷 😀", "price": "12.50"}
    assert inserted[0]["before"] is None and inserted[0]["_key"] == {"id": 1}
    assert inserted[1]["after"]["price"] is None
    update = by_op["u"][0]
    assert update["before"]["price"] == "12.50" and update["after"]["price"] == "99.99"
    delete = by_op["d"][0]
    assert delete["after"] is None and delete["before"]["id"] == 2 and delete["_key"] == {"id": 2}
    source = update["source"]
    assert source["db"] == db and source["table"] == "items" and source["connector"] == "mariadb"
    assert source["gtid"] and source["file"].startswith("mysql-bin") and source["pos"] > 0
    assert update["event_id"] == f"{source['server_id']}:{source['file']}:{source['pos']}:{source['row']}"
    assert len({e["event_id"] for e in events}) == len(events) == 4


def test_restart_resumes_from_the_checkpoint_without_loss(config: Config) -> None:
    db = config.settings.mysql.database
    with ReaderThread(config):
        execute(["INSERT INTO items VALUES (1, 'a', 1)", "INSERT INTO items VALUES (2, 'b', 2)"], db)
        wait_for(lambda: len(changes(config)) >= 2, 30, what="first rows")
    checkpoint = CheckpointStore(config.settings).load()
    assert checkpoint is not None and checkpoint.gtid_set
    # written while no reader runs: must not be lost
    execute(["INSERT INTO items VALUES (3, 'c', 3)", "UPDATE items SET name = 'z' WHERE id = 1"], db)
    with ReaderThread(config):
        execute("INSERT INTO items VALUES (4, 'd', 4)", db)
        events = wait_for(
            lambda: (e := changes(config)) and len({x["event_id"] for x in e}) >= 5 and e, 30, what="all five changes"
        )
    ids = {e["event_id"] for e in events}
    assert len(ids) == 5
    assert {(e["op"], e["after"]["id"]) for e in events} == {("c", 1), ("c", 2), ("c", 3), ("u", 1), ("c", 4)}
