"""cdc.include / cdc.exclude on the real MariaDB and Kafka: the tables the reader and the snapshot read, and what
is skipped undecoded."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import WriteRowsEvent

from cdc.filters import TableSelection
from cdc.snapshot import Snapshot
from cdc.source import connection_settings, detect_server
from schemas.config import Config
from tests.support import consume_all, execute, isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.cdc import ReaderThread


@pytest.fixture
def config(stack: None, tmp_path: Path) -> Config:
    data = isolated_config_data("filt", {"monitored_tables": {"items": {"triggers": ["echo"]}}})
    db = data["mysql"]["database"]
    data["cdc"].update(include=[f"{db}.inc_*"], exclude=[f"{db}.inc_secret"])
    execute(
        [
            f"CREATE DATABASE {db}",
            *(f"CREATE TABLE {db}.{t} (id INT PRIMARY KEY)" for t in ("items", "inc_a", "inc_secret", "other")),
        ]
    )
    config = write_config(tmp_path, data)
    yield config
    execute(f"DROP DATABASE IF EXISTS {db}")
    remove_test_resources(config.settings, [])


def ids_by_table(config: Config, tables: list[str]) -> dict[str, list[tuple[str, int]]]:
    db = config.settings.mysql.database
    out: dict[str, list[tuple[str, int]]] = {}
    for msg in consume_all(config, [config.settings.topics.row_changes(db, t) for t in tables], idle_seconds=1.0):
        event = orjson.loads(msg.value())
        out.setdefault(event["source"]["table"], []).append((event["op"], event["after"]["id"]))
    return out


def test_reader_streams_rule_and_included_tables_even_created_later_not_excluded(config: Config) -> None:
    db = config.settings.mysql.database
    tables = ["items", "inc_a", "inc_secret", "other", "inc_new"]
    with ReaderThread(config) as reader:
        assert sorted(reader.reader.tables) == [(db, "inc_a"), (db, "items")]
        execute(["CREATE TABLE inc_new (id INT PRIMARY KEY)", *(f"INSERT INTO {t} VALUES (1)" for t in tables)], db)
        got = wait_for(
            lambda: (g := ids_by_table(config, tables)) and len(g) >= 3 and g,
            60,
            interval=0.5,
            what="rows of items, inc_a and inc_new",
        )
    assert got == {"items": [("c", 1)], "inc_a": [("c", 1)], "inc_new": [("c", 1)]}


def test_snapshot_without_tables_reads_the_same_selection(config: Config) -> None:
    db = config.settings.mysql.database
    execute([f"INSERT INTO {t} VALUES (7)" for t in ("items", "inc_a", "inc_secret", "other")], db)
    job = Snapshot(config.settings, config.rules)
    job.prepare()
    assert [p.name for p in job.plans] == [f"{db}.inc_a", f"{db}.items"]
    job.run()
    assert ids_by_table(config, ["items", "inc_a", "inc_secret", "other"]) == {"items": [("r", 7)], "inc_a": [("r", 7)]}


def test_row_events_of_unselected_tables_never_leave_the_library(config: Config) -> None:
    """The library drops them before building their rows (only_schemas/only_tables matchers)."""
    db = config.settings.mysql.database
    selection = TableSelection(config.rules.tables(), config.settings.cdc.include, config.settings.cdc.exclude)
    is_mariadb, position = detect_server(config.settings)
    execute(["INSERT INTO other VALUES (2)", "INSERT INTO inc_a VALUES (2)", "INSERT INTO items VALUES (2)"], db)
    stream = BinLogStreamReader(
        connection_settings(config.settings),
        server_id=config.settings.mysql.server_id,
        blocking=False,
        only_events=[WriteRowsEvent],
        is_mariadb=is_mariadb,
        auto_position=position.gtid_set,
        **selection.library_filters(),
    )
    try:
        seen = [(e.schema, e.table) for e in stream if e.schema == db]
    finally:
        stream.close()
    assert seen == [(db, "inc_a"), (db, "items")]
