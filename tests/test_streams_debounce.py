"""Debounce in the real Faust worker against the real Kafka: row changes are produced straight onto
the row-change topic (as the cdc reader would), invocations read back from the plugin's topic."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from schemas.config import Config
from schemas.invocation import invocation_id_for
from schemas.runtime.kafka_topics import ensure_topics
from streams.debounce import is_due, merge_pending
from tests.support import isolated_config_data, remove_test_resources, wait_for, write_config
from tests.test_streams_schedules import Worker

RULES = {
    "monitored_tables": {
        "shop.orders": [
            {
                "name": "deb",
                "triggers": ["echo"],
                "operations": ["UPDATE"],
                "debounce_ms": 1500,
                "conditions": {"status": {"ne": "ignored"}},
                "params": {"message": "{after.status}", "data": "{after.id}"},
            },
            {"name": "now", "triggers": ["echo"], "operations": ["UPDATE"], "params": {"message": "{after.status}"}},
        ]
    }
}


def test_merge_keeps_the_window_and_the_latest_invocations() -> None:
    first = merge_pending(None, [{"n": 1}], 1000, now_ms=10_000, partition=1)
    later = merge_pending(first, [{"n": 2}], 1000, now_ms=10_900, partition=1)
    assert later == {"due_ms": 11_000, "first_ms": 10_000, "changes": 2, "partition": 1, "invocations": [{"n": 2}]}
    assert not is_due(later, 10_999) and is_due(later, 11_000)


class Collector:
    """Reads an invoke topic from the beginning, keeping every message."""

    def __init__(self, config: Config, topic: str):
        self.consumer = Consumer(
            config.settings.kafka_config(
                **{
                    "group.id": f"test-reader-{uuid.uuid4().hex}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                }
            )
        )
        self.consumer.subscribe([topic])
        self.messages: list[dict[str, Any]] = []

    def poll(self) -> list[dict[str, Any]]:
        while (msg := self.consumer.poll(0.05)) is not None:
            if not msg.error():
                self.messages.append(orjson.loads(msg.value()))
        return self.messages

    def by_rule(self, rule: str) -> list[dict[str, Any]]:
        return [m for m in self.poll() if m["trigger"]["rule"] == rule]


@pytest.fixture
def env(stack: None, tmp_path: Path) -> Iterator[tuple[Config, Worker, Collector, Producer]]:
    config = write_config(tmp_path, isolated_config_data("deb", RULES))
    row_topic = config.settings.topics.row_changes("shop", "orders")
    invoke = config.settings.topics.invoke("echo")
    ensure_topics(config.settings, [row_topic, invoke])
    worker = Worker(config, tmp_path / "worker.log")
    worker.start()
    collector = Collector(config, invoke)
    producer = Producer(config.settings.kafka_config(**{"acks": "all"}))
    try:
        yield config, worker, collector, producer
    finally:
        worker.stop()
        collector.consumer.close()
        print(worker.log_path.read_text(errors="replace")[-5000:])
        remove_test_resources(config.settings, [row_topic, invoke])


POS = iter(range(1000, 10**9, 10))


def change(producer: Producer, config: Config, row: int, status: str) -> str:
    event_id = f"1:mysql-bin.000001:{next(POS)}:0"
    envelope = {
        "before": {"id": row, "status": "old"},
        "after": {"id": row, "status": status},
        "op": "u",
        "ts_ms": int(time.time() * 1000),
        "event_id": event_id,
        "source": {"connector": "mysql", "name": "t", "db": "shop", "table": "orders"},
    }
    producer.produce(
        config.settings.topics.row_changes("shop", "orders"),
        key=orjson.dumps({"id": row}),
        value=orjson.dumps(envelope),
    )
    producer.flush(10)
    return event_id


def test_a_burst_of_changes_of_one_row_yields_one_invocation_with_the_latest_row(env) -> None:  # type: ignore[no-untyped-def]
    config, worker, collector, producer = env
    ids = {
        1: [change(producer, config, 1, f"s{i}") for i in range(5)],
        2: [change(producer, config, 2, "a"), change(producer, config, 2, "b")],
    }
    change(producer, config, 2, "ignored")  # does not match `deb`: leaves row 2's pending entry alone
    wait_for(lambda: len(collector.by_rule("now")) == 8, 120, what="the undebounced invocations")
    first_seen = time.monotonic()
    debounced = wait_for(lambda: len(r := collector.by_rule("deb")) >= 2 and r, 30, what="debounced invocations")
    assert time.monotonic() - first_seen > 0.5, "debounced invocations came out before the window closed"
    time.sleep(3)
    debounced = collector.by_rule("deb")
    assert sorted((m["params"]["data"], m["params"]["message"]) for m in debounced) == [(1, "s4"), (2, "b")]
    assert {m["invocation_id"] for m in debounced} == {
        invocation_id_for("cdc", "deb", "echo", ids[1][-1]),
        invocation_id_for("cdc", "deb", "echo", ids[2][-1]),
    }

    # durable: pending changes survive a kill -9 and are flushed once after the restart
    last = [change(producer, config, 3, s) for s in ("x", "y", "z")][-1]
    wait_for(lambda: len(collector.by_rule("now")) == 11, 30, what="the worker to process row 3's changes")
    time.sleep(0.5)  # let the table's changelog writes leave the producer
    assert worker.process is not None
    worker.process.kill()
    worker.process.wait()
    assert not [m for m in collector.by_rule("deb") if m["params"]["data"] == 3]
    worker.start()
    row3 = wait_for(
        lambda: [m for m in collector.by_rule("deb") if m["params"]["data"] == 3],
        120,
        what="row 3's debounced invocation after the restart",
    )
    time.sleep(3)
    row3 = [m for m in collector.by_rule("deb") if m["params"]["data"] == 3]
    assert [(m["params"]["message"], m["invocation_id"]) for m in row3] == [
        ("z", invocation_id_for("cdc", "deb", "echo", last))
    ]
    assert len({m["invocation_id"] for m in collector.by_rule("deb")}) == 3


def test_pending_entries_are_due_in_turn_and_none_is_missed_after_a_flush() -> None:
    from streams.debounce_pending import PendingDebounces, Staged
    from tests.support import isolated_settings

    pending = PendingDebounces(isolated_settings("pend"))
    tp = ("topic", 0)
    opening = Staged()
    pending.merge(opening, tp, "a", [{"n": 1}], 1000, now_ms=10_000)  # due at 11_000
    pending.merge(opening, tp, "b", [{"n": 2}], 3000, now_ms=10_000)  # due at 13_000
    assert pending.due(opening, 10_500) == []
    pending.apply(opening)
    assert pending.due(Staged(), 10_999) == []
    assert [key for _, key, _ in pending.due(Staged(), 11_000)] == ["a"]
    assert [key for _, key, _ in pending.due(Staged(), 11_500)] == ["a"]  # not flushed yet: still due
    flush = Staged()
    pending.flushed(flush, tp, "a")
    assert pending.due(flush, 11_500) == []  # the batch that flushes it does not see it again
    pending.apply(flush)
    assert pending.due(Staged(), 12_999) == []
    assert [key for _, key, _ in pending.due(Staged(), 13_000)] == ["b"]
    # a change merged into a due entry: the batch flushes the merged one
    merging = Staged()
    pending.merge(merging, tp, "b", [{"n": 3}], 3000, now_ms=13_100)
    assert [entry["invocations"] for _, _, entry in pending.due(merging, 13_100)] == [[{"n": 3}]]
