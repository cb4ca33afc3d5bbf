"""kill -9 of the worker in the middle of a stream of row changes, then a restart: every change's
invocation is on the plugin topic, with its deterministic id, and none twice."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from schemas.config import Config
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, produce_row_changes, remove_test_resources, wait_for, write_config
from tests.test_streams_debounce import Collector
from tests.test_streams_schedules import Worker

pytestmark = pytest.mark.integration

RULES = {
    "monitored_tables": {
        "shop.orders": {
            "name": "r",
            "triggers": ["echo"],
            "conditions": {"n": {"gte": 0}},
            "params": {"data": "{after.n}"},
        }
    }
}
ROWS, CHANGES = 20, 40  # 800 changes


@dataclass
class RowStream:
    """A streams app's config with its row-change and invoke topics, a producer and a collector."""

    config: Config
    source: str
    producer: Producer
    collector: Collector
    expected: list[str] = field(default_factory=list)  # invocation ids, filled by feed()

    def feed(self, pause: float, changes: int = CHANGES) -> None:
        """`changes` rounds of one change per row, `pause` apart."""
        produce_row_changes(self.producer, self.source, ROWS, changes, pause, self.expected)


@contextmanager
def row_stream(tmp_path: Path, tag: str, rules: dict[str, Any]) -> Iterator[RowStream]:
    config = write_config(tmp_path, isolated_config_data(tag, rules))
    settings = config.settings
    source, invoke = settings.topics.row_changes("shop", "orders"), settings.topics.invoke("echo")
    ensure_topics(settings, [source, invoke])
    stream = RowStream(
        config,
        source,
        Producer(settings.kafka_config(**{"acks": "all", "enable.idempotence": True})),
        Collector(config, invoke),
    )
    try:
        yield stream
    finally:
        stream.collector.consumer.close()
        remove_test_resources(settings, [source, invoke])


def two_workers(config: Config, tmp_path: Path) -> tuple[Worker, Worker]:
    """Two streams workers of one app, each with its own state dir (RocksDB locks it per process,
    and the transactional id of the row-change loop derives from it)."""
    return tuple(
        Worker(config, tmp_path / f"{name}.log", {"CDCFLOW_STREAMS__STATE_DIR": str(tmp_path / name)})
        for name in ("w1", "w2")
    )  # type: ignore[return-value]


def assert_each_once(messages: Callable[[], list[dict]], expected: list[str], after: str) -> None:
    """Wait until every expected invocation id is there, then (3 s later) that none is there twice."""
    wait_for(
        lambda: len({m["invocation_id"] for m in messages()}) >= len(expected),
        180,
        interval=0.2,
        what=f"every invocation {after}",
    )
    time.sleep(3)
    ids = Counter(m["invocation_id"] for m in messages())
    assert set(ids) == set(expected)
    doubles = [i for i, c in ids.items() if c > 1]
    assert not doubles, f"{len(doubles)} invocation(s) emitted twice"


def test_kill_9_mid_stream_loses_and_doubles_nothing(stack: None, tmp_path: Path) -> None:
    with row_stream(tmp_path, "kill", RULES) as stream:
        worker = Worker(stream.config, tmp_path / "worker.log")
        worker.start()
        try:
            feeder = threading.Thread(target=stream.feed, args=(0.02,))
            feeder.start()
            wait_for(lambda: len(stream.collector.poll()) >= 200, 120, interval=0.01, what="some invocations")
            assert worker.process is not None
            worker.process.kill()  # mid-stream: the feeder is still producing
            worker.process.wait()
            feeder.join()
            worker.start()
            assert_each_once(stream.collector.poll, stream.expected, "after the restart")
        finally:
            assert worker.stop() == 0


def test_kill_9_of_one_of_two_workers_the_other_takes_over_losing_and_doubling_nothing(
    stack: None, tmp_path: Path
) -> None:
    # No restart: the survivor gets the killed worker's partitions once its session expires, and
    # reads them from the committed offsets once the killed worker's open transaction is aborted.
    with row_stream(tmp_path, "kill2", RULES) as stream:
        first, second = two_workers(stream.config, tmp_path)
        first.start()
        second.start()
        try:
            feeder = threading.Thread(target=stream.feed, args=(0.3,))  # ~12 s: the kill lands mid-stream
            feeder.start()
            # both serve a share before the kill
            wait_for(
                lambda: all("row change" in w.log_path.read_text(errors="replace") for w in (first, second)),
                120,
                what="both workers to emit invocations",
            )
            assert first.process is not None and feeder.is_alive()
            first.process.kill()
            first.process.wait()
            killed_at = time.monotonic()
            assert feeder.is_alive(), "the stream ended before the kill"
            feeder.join()
            assert_each_once(stream.collector.poll, stream.expected, "after the kill")
            print(f"checked {time.monotonic() - killed_at:.1f} s after the kill")
        finally:
            assert second.stop() == 0
            for name in ("w1.log", "w2.log"):
                print(name, (tmp_path / name).read_text(errors="replace")[-2000:])
