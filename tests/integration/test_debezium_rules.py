"""Rules over the Debezium format: the real reader in `cdc.format: debezium` with `schemas.enable`,
the real row-change loop, conditions on a DECIMAL and a DATE. Debezium writes those as base64 bytes
and a day count; the schema says so, and the worker gives them back as cdcflow's values, so the
conditions hold for exactly the rows they hold for in cdcflow's format."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from schemas.runtime.kafka_topics import ensure_topics
from streams.matcher import Matcher
from streams.row_changes import RowChangeLoop
from streams.validation import validated_matcher
from tests.support import execute, isolated_config_data, mysql, remove_test_resources, wait_for, write_config
from tests.support.cdc import ReaderThread
from tests.support.streams import Collector

RULES = {
    "monitored_tables": {
        "orders": {
            "name": "big_recent",
            "triggers": ["echo"],
            "conditions": {"amount": {"gt": 100}, "day": {"gte": "2024-03-01"}},
        }
    }
}


@dataclass
class Live:
    matcher: Matcher


@dataclass
class Ops:
    events: Counter[tuple[str, str]] = field(default_factory=Counter)

    def on_row_batch(
        self, tables: Counter[tuple[str, str]], rules: Counter[str], invocations: Counter[tuple[str, str]]
    ) -> None:
        self.events.update(tables)


def test_conditions_on_decimals_and_dates_in_the_debezium_format(stack: None, tmp_path: Path) -> None:
    data = isolated_config_data("dbzrule", RULES)
    data["cdc"].update({"format": "debezium", "debezium": {"schemas.enable": True}})
    db = data["mysql"]["database"]
    execute([f"CREATE DATABASE {db}", f"CREATE TABLE {db}.orders (id INT PRIMARY KEY, amount DECIMAL(10,2), day DATE)"])
    config = write_config(tmp_path, data)
    settings = config.settings
    source, invoke = settings.topics.row_changes(db, "orders"), settings.topics.invoke("echo")
    ensure_topics(settings, [source, invoke])
    collector = Collector(config, invoke)
    ops, fatal = Ops(), list[BaseException]()
    try:
        with ReaderThread(config):
            loop = RowChangeLoop(settings, [source], Live(validated_matcher(config)), ops, on_fatal=fatal.append)
            loop.start()
            try:
                conn = mysql(db)
                with conn.cursor() as cur:
                    cur.execute(
                        "INSERT INTO orders VALUES (1, 150.00, '2024-03-05'), (2, 99.99, '2024-03-05'),"
                        " (3, 150.00, '2024-02-28'), (4, 1000000.01, '2024-12-31'), (5, NULL, '2024-12-31')"
                    )
                conn.close()
                wait_for(lambda: sum(ops.events.values()) >= 5 or fatal, 60, what="the five changes to be consumed")
                wait_for(lambda: len(collector.by_rule("big_recent")) >= 2, 30, what="two invocations")
            finally:
                loop.stop()
        assert not fatal
        got = {m["trigger"]["after"]["id"]: m["trigger"]["after"] for m in collector.by_rule("big_recent")}
        assert got == {
            1: {"id": 1, "amount": "150.00", "day": "2024-03-05"},
            4: {"id": 4, "amount": "1000000.01", "day": "2024-12-31"},
        }
    finally:
        collector.consumer.close()
        execute(f"DROP DATABASE IF EXISTS {db}")
        remove_test_resources(settings, [source, invoke, settings.topics.dlq])
