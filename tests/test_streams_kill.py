"""kill -9 of the worker in the middle of a stream of row changes, then a restart: every change's
invocation is on the plugin topic, with its deterministic id, and none twice."""
from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from schemas.kafka_topics import ensure_topics
from tests.support import (isolated_config_data, produce_row_changes, remove_test_resources, wait_for,
                           write_config)
from tests.test_streams_debounce import Collector
from tests.test_streams_schedules import Worker

pytestmark = pytest.mark.integration

RULES = {"monitored_tables": {"shop.orders": {
    "name": "r", "triggers": ["echo"], "conditions": {"n": {"gte": 0}}, "params": {"data": "{after.n}"}}}}
ROWS, CHANGES = 20, 40  # 800 changes


def test_kill_9_mid_stream_loses_and_doubles_nothing(stack: None, tmp_path: Path) -> None:
    config = write_config(tmp_path, isolated_config_data("kill", RULES))
    settings = config.settings
    source, invoke = settings.topics.row_changes("shop", "orders"), settings.topics.invoke("echo")
    ensure_topics(settings, [source, invoke])
    worker = Worker(config, tmp_path / "worker.log")
    collector = Collector(config, invoke)
    producer = Producer(settings.kafka_config(**{"acks": "all", "enable.idempotence": True}))
    expected: list[str] = []

    def produce() -> None:
        produce_row_changes(producer, source, ROWS, CHANGES, 0.02, expected)

    worker.start()
    try:
        feeder = threading.Thread(target=produce)
        feeder.start()
        wait_for(lambda: len(collector.poll()) >= 200, 120, interval=0.01, what="some invocations")
        assert worker.process is not None
        worker.process.kill()  # mid-stream: the feeder is still producing
        worker.process.wait()
        feeder.join()
        worker.start()
        wait_for(lambda: len({m["invocation_id"] for m in collector.poll()}) >= len(expected), 180, interval=0.2,
                 what="every invocation after the restart")
        time.sleep(3)
        ids = [m["invocation_id"] for m in collector.poll()]
        assert set(ids) == set(expected)
        doubles = {i: c for i, c in Counter(ids).items() if c > 1}
        assert not doubles, f"{len(doubles)} invocation(s) emitted twice"
    finally:
        assert worker.stop() == 0
        collector.consumer.close()
        remove_test_resources(settings, [source, invoke])
