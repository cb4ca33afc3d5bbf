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


def test_kill_9_of_one_of_two_workers_the_other_takes_over_losing_and_doubling_nothing(stack: None,
                                                                                       tmp_path: Path) -> None:
    # No restart: the survivor gets the killed worker's partitions once its session expires, and
    # reads them from the committed offsets once the killed worker's open transaction is aborted.
    config = write_config(tmp_path, isolated_config_data("kill2", RULES))
    settings = config.settings
    source, invoke = settings.topics.row_changes("shop", "orders"), settings.topics.invoke("echo")
    ensure_topics(settings, [source, invoke])
    first = Worker(config, tmp_path / "w1.log", {"CDCFLOW_STREAMS__STATE_DIR": str(tmp_path / "w1")})
    second = Worker(config, tmp_path / "w2.log", {"CDCFLOW_STREAMS__STATE_DIR": str(tmp_path / "w2")})
    collector = Collector(config, invoke)
    producer = Producer(settings.kafka_config(**{"acks": "all", "enable.idempotence": True}))
    expected: list[str] = []
    first.start()
    second.start()
    try:
        # ~12 s of changes, so the kill lands mid-stream
        feeder = threading.Thread(target=lambda: produce_row_changes(producer, source, ROWS, CHANGES, 0.3, expected))
        feeder.start()
        # both serve a share before the kill
        wait_for(lambda: all("row change" in w.log_path.read_text(errors="replace") for w in (first, second)), 120,
                 what="both workers to emit invocations")
        assert first.process is not None and feeder.is_alive()
        first.process.kill()
        first.process.wait()
        killed_at = time.monotonic()
        assert feeder.is_alive(), "the stream ended before the kill"
        feeder.join()
        wait_for(lambda: len({m["invocation_id"] for m in collector.poll()}) >= len(expected), 180, interval=0.2,
                 what="every invocation after the kill")
        print(f"all invocations present {time.monotonic() - killed_at:.1f} s after the kill")
        time.sleep(3)
        ids = [m["invocation_id"] for m in collector.poll()]
        assert set(ids) == set(expected)
        doubles = {i: c for i, c in Counter(ids).items() if c > 1}
        assert not doubles, f"{len(doubles)} invocation(s) emitted twice"
    finally:
        assert second.stop() == 0
        collector.consumer.close()
        for name in ("w1.log", "w2.log"):
            print(name, (tmp_path / name).read_text(errors="replace")[-2000:])
        remove_test_resources(settings, [source, invoke])
