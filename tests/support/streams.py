"""Harnesses for the streams worker tests: `cdcflow streams worker` as a process, an invoke-topic
collector, row changes produced straight onto the row-change topic (as the cdc reader would), and a
stream of row changes checked for every invocation exactly once."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from confluent_kafka import Consumer, Producer

from schemas.config import Config
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import (
    REPO_ROOT,
    isolated_config_data,
    produce_row_changes,
    remove_test_resources,
    wait_for,
    write_config,
)


class Worker:
    def __init__(self, config: Config, log_path: Path, env: dict[str, str] | None = None):
        self.config = config
        self.log_path = log_path
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "console.cli", "--config", str(self.config.path), "streams", "worker"],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        log.close()

    def stop(self) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return None


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


# the rules file of the hot reload tests, and edits of it
RELOAD_RULES = {
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
