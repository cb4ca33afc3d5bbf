"""Harnesses for the plugin tests: a worker pool request, invocations produced onto the real Kafka,
the runner in a thread, its results read back, the states of served plugins, and the plugins some
tests write to disk (a memory hog, a hot-reload demo)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from plugins.registry import LoadedPlugin, code_hash, load_plugin
from plugins.runner import run_runner
from plugins.state import PluginStates
from schemas.config import Config
from schemas.invocation import Invocation, ManualTrigger
from tests.support import wait_for


def worker_request(params: dict, invocation_id: str = "inv-1") -> dict:
    return {
        "invocation_id": invocation_id,
        "params": params,
        "context": {"invocation_id": invocation_id, "plugin": "echo", "attempt": 1, "trigger": {"kind": "manual"}},
    }


def new_invocation(plugin: str, params: dict) -> Invocation:
    now = datetime.now(UTC)
    return Invocation(
        invocation_id=str(uuid.uuid4()),
        plugin=plugin,
        params=params,
        created_at=now,
        trigger=ManualTrigger(requested_by="pytest", requested_at=now, request_id="r"),
    )


def produce_messages(settings, items: list[tuple[str, bytes, bytes]]) -> list[tuple[int, int]]:
    """Produce and return each message's (partition, offset)."""
    producer = Producer(settings.kafka_config(**{"acks": "all", "enable.idempotence": True}))
    where: dict[int, tuple[int, int]] = {}
    for i, (topic, key, value) in enumerate(items):
        producer.produce(
            topic,
            key=key,
            value=value,
            on_delivery=lambda err, msg, i=i: where.__setitem__(i, (msg.partition(), msg.offset())),
        )
    assert producer.flush(30) == 0
    return [where[i] for i in range(len(items))]


class ResultsReader:
    def __init__(self, settings):
        self.consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": f"reader-{uuid.uuid4().hex}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                }
            )
        )
        self.consumer.subscribe([settings.topics.results])
        self.messages: list[tuple[str, bytes]] = []

    def wait_for(self, count: int, timeout: float = 60.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            self._poll(0.2)
        assert len(self.messages) >= count, f"got {len(self.messages)} of {count} results: {self.messages}"
        return self.messages

    def read_for(self, seconds: float) -> list[tuple[str, bytes]]:
        """Every result so far, after reading for `seconds` more."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._poll(min(0.2, max(0.0, deadline - time.monotonic())))
        return self.messages

    def _poll(self, timeout: float) -> None:
        msg = self.consumer.poll(timeout)
        if msg is not None and msg.error() is None:
            self.messages.append((msg.key().decode(), msg.value()))

    def close(self):
        self.consumer.close()


class Runner:
    def __init__(self, config: Config, plugins: list[str] | None = None):
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.code: list[int] = []
        self.thread = threading.Thread(
            target=lambda: self.code.append(
                run_runner(config, self.stop, plugins=plugins, ready=self.ready, shutdown_grace=1.0)
            )
        )

    def __enter__(self) -> Runner:
        self.thread.start()
        assert self.ready.wait(90), "runner did not start"
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive()


def send_invocation(cfg, plugin: str, params: dict):
    inv = new_invocation(plugin, params)
    produce_messages(
        cfg.settings, [(cfg.settings.topics.invoke(plugin), inv.invocation_id.encode(), inv.model_dump_json().encode())]
    )
    return inv


def all_committed(cfg: Config, topic: str) -> bool:
    """Whether the runners' group committed every partition of `topic` up to its end (asked without joining
    it); an empty partition has nothing to commit."""
    consumer = Consumer(cfg.settings.kafka_config(**{"group.id": cfg.settings.runners.group_id}))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        ends = [consumer.get_watermark_offsets(tp, timeout=10) for tp in committed]
        return all(tp.offset == high or low == high for tp, (low, high) in zip(committed, ends, strict=True))
    finally:
        consumer.close()


def wait_serving(states: PluginStates, name: str, folder: Path, timeout: float = 60.0) -> dict:
    want = code_hash(folder)
    return wait_for(
        lambda: (st := states.get(name)) and st.get("code_hash") == want and st["state"] == "serving" and st,
        timeout=timeout,
        what=f"{name} serving code {want[:12]}",
    )


def result_for(reader: ResultsReader, iid: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for key, value in reader.messages:
            if key == iid:
                return json.loads(value)
        reader.wait_for(len(reader.messages) + 1, timeout=max(0.1, deadline - time.monotonic()))
    raise AssertionError(f"no result for {iid}")


HOG_MAIN = """
import resource

def run(mode="small", mb=50):
    if mode == "bytes":  # one 2 GB allocation
        return len(bytearray(mb * 1024 * 1024))
    if mode == "grow":  # touched memory, 10 MB at a time
        chunks = []
        for _ in range(mb // 10):
            chunks.append(b"x" * (10 * 1024 * 1024))
        return len(chunks)
    data = b"y" * (mb * 1024 * 1024)
    return {"mb": len(data) // (1024 * 1024), "limit": resource.getrlimit(resource.RLIMIT_DATA)[0]}
"""


def hog_plugin(base: Path, limit_mb: int | None = 256) -> LoadedPlugin:
    """A plugin `hog` in base/hog that allocates what it is asked to, under memory_limit_mb."""
    folder = base / "hog"
    folder.mkdir(parents=True)
    manifest = {
        "name": "hog",
        "entry_point": "main.run",
        "concurrency": 1,
        "parameters": {"mode": {"type": "string"}, "mb": {"type": "integer"}},
    }
    if limit_mb is not None:
        manifest["memory_limit_mb"] = limit_mb
    (folder / "plugin.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(HOG_MAIN)
    return load_plugin(folder)


# Like the bundled hot_reload_demo, plus a file per started call so the test knows a call is running.
DEMO_MAIN = """import os, time
VERSION = {version}

def run(seconds=0, context=None):
    open("started-" + context["invocation_id"], "w").close()
    time.sleep(float(seconds))
    return {{"version": VERSION, "pid": os.getpid()}}
"""


def write_demo_plugin(folder: Path, version: int, manifest_version: str | None = None, main: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plugin.json").write_text(
        json.dumps(
            {
                "name": folder.name,
                "version": manifest_version or f"{version}.0.0",
                "entry_point": "main.run",
                "concurrency": 2,
                "parameters": {"seconds": {"type": "number", "default": 0}},
            }
        )
    )
    (folder / "main.py").write_text(main if main is not None else DEMO_MAIN.format(version=version))
