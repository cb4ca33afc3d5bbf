"""Hot reload of the rules file: decisions (unit) and a running worker against the real Kafka."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.runtime.kafka_topics import ensure_topics
from streams.reload import RulesWatcher, needs_restart
from tests.support import isolated_config_data, remove_test_resources, wait_for, write_config
from tests.test_streams_debounce import Collector, change
from tests.test_streams_schedules import Worker

RULES = {
    "monitored_tables": {
        "shop.orders": {
            "name": "r",
            "triggers": ["echo"],
            "conditions": {"status": "a"},
            "params": {"message": "{after.status}"},
        }
    }
}


def rewrite(path: Path, data: dict[str, Any]) -> None:
    time.sleep(0.01)  # a different mtime even on coarse clocks
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def with_condition(data: dict[str, Any], status: str) -> dict[str, Any]:
    out = copy.deepcopy(data)
    out["monitored_tables"]["shop.orders"]["conditions"] = {"status": status}
    return out


def test_watcher_swaps_keeps_on_error_and_asks_for_a_restart_on_a_new_table(tmp_path: Path) -> None:
    data = isolated_config_data("rl", RULES)
    config = write_config(tmp_path, data)
    watcher = RulesWatcher(config)
    assert watcher.check().action == "unchanged"
    rewrite(config.path, data)  # same content, new mtime: not a reload
    assert watcher.check().action == "unchanged"

    rewrite(config.path, with_condition(data, "b"))
    swap = watcher.check()
    assert swap.action == "swap" and swap.matcher is not None
    event = {
        "op": "u",
        "before": None,
        "after": {"status": "b"},
        "event_id": "e",
        "source": {"db": "shop", "table": "orders"},
    }
    assert [p.invocation["params"] for p in swap.matcher.match(event)] == [{"message": "b"}]

    broken = with_condition(data, "b")
    broken["monitored_tables"]["shop.orders"]["triggers"] = ["nosuch"]
    rewrite(config.path, broken)
    invalid = watcher.check()
    assert invalid.action == "invalid" and "unknown plugin 'nosuch'" in invalid.reason and "rule r" in invalid.reason
    assert watcher.check().action == "unchanged"  # reported once
    config.path.write_text("monitored_tables: [unclosed\n", encoding="utf-8")
    assert watcher.check().action == "invalid"

    grown = with_condition(data, "b")
    grown["monitored_tables"]["shop.items"] = {"triggers": ["echo"]}
    rewrite(config.path, grown)
    restart = watcher.check()
    assert restart.action == "restart" and restart.reason == "monitored tables changed (+shop.items)"


def test_needs_restart_for_settings_debounce_and_schedules(tmp_path: Path) -> None:
    data = isolated_config_data("rl", RULES)
    old = write_config(tmp_path, data)
    changed = copy.deepcopy(data)
    changed["kafka"]["partitions"] = 3
    assert needs_restart(old, write_config(tmp_path, changed)) == "settings changed"
    deb = copy.deepcopy(data)
    deb["monitored_tables"]["shop.orders"]["debounce_ms"] = 100
    assert needs_restart(old, write_config(tmp_path, deb)) == "debounce switched on"
    sch = {**copy.deepcopy(data), "schedules": {"s": {"plugin": "echo", "interval_seconds": 5}}}
    assert needs_restart(old, write_config(tmp_path, sch)) == "schedules added"
    assert needs_restart(old, write_config(tmp_path, with_condition(data, "z"))) is None


@pytest.mark.integration
def test_running_worker_reloads_good_edits_keeps_rules_on_broken_ones_and_subscribes_new_tables(
    stack: None, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    data = isolated_config_data("rl", RULES)
    config = write_config(tmp_path, data)
    settings = config.settings
    orders, items = settings.topics.row_changes("shop", "orders"), settings.topics.row_changes("shop", "items")
    invoke = settings.topics.invoke("echo")
    ensure_topics(settings, [orders, items, invoke])
    worker = Worker(config, tmp_path / "worker.log")
    collector = Collector(config, invoke)
    producer = Producer(settings.kafka_config(**{"acks": "all"}))

    def log_has(text: str) -> bool:
        return text in worker.log_path.read_text(errors="replace")

    def messages() -> list[str]:
        return [m["params"].get("message", m["trigger"]["table"]) for m in collector.poll()]

    worker.start()
    try:
        change(producer, config, 1, "a")
        wait_for(lambda: messages() == ["a"], 120, what="the first invocation")

        rewrite(config.path, with_condition(data, "b"))  # good edit: swapped in place
        wait_for(lambda: log_has("rules reloaded from"), 20, what="the reload")
        change(producer, config, 1, "a")
        change(producer, config, 1, "b")
        wait_for(lambda: messages() == ["a", "b"], 30, what="the new condition to apply")

        broken = with_condition(data, "c")
        broken["monitored_tables"]["shop.orders"]["conditions"] = {"status": {"bogus": 1}}
        rewrite(config.path, broken)  # broken edit: the running rules stay
        wait_for(lambda: log_has("keeping the running rules"), 20, what="the broken edit to be reported")
        assert log_has("conditions.status: unknown operator(s) bogus")
        change(producer, config, 1, "b")
        wait_for(lambda: messages() == ["a", "b", "b"], 30, what="the previous rules to still apply")

        grown = with_condition(data, "b")
        grown["monitored_tables"]["shop.items"] = {"name": "items", "triggers": ["echo"], "params": {}}
        rewrite(config.path, grown)  # a new table: the worker restarts itself and consumes its topic
        wait_for(lambda: log_has("restarting the worker"), 20, what="the restart")
        producer.produce(
            items,
            key=b'{"id":1}',
            value=(
                b'{"before":null,"after":{"id":1},"op":"c","ts_ms":1,"event_id":"1:mysql-bin.000001:5:0",'
                b'"source":{"db":"shop","table":"items"}}'
            ),
        )
        producer.flush(10)
        wait_for(lambda: "shop.items" in messages(), 120, what="the new table's invocation")
        change(producer, config, 1, "b")
        wait_for(lambda: messages().count("b") == 3, 30, what="the old table still served after the restart")
        assert worker.process is not None and worker.process.poll() is None, "the worker did not survive its restart"
        assert len({m["invocation_id"] for m in collector.poll()}) == len(collector.poll()), "duplicate invocation"
    finally:
        assert worker.stop() == 0
        collector.consumer.close()
        print(worker.log_path.read_text(errors="replace")[-5000:])
        remove_test_resources(settings, [orders, items, invoke])
