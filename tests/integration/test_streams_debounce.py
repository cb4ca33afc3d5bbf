"""Debounce in the real Faust worker against the real Kafka: row changes are produced straight onto
the row-change topic (as the cdc reader would), invocations read back from the plugin's topic."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from schemas.config import Config
from schemas.invocation import invocation_id_for
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.streams import Collector, Worker, change

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
