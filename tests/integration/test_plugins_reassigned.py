"""A partition taken from a runner and given back while one of its calls still runs (a real runner in
threads of this process, real Kafka, Redis and worker processes; eager roundrobin assignment, where every
rebalance takes every partition first): the message fetched again is held until that call ends, not run
a second time, and its offset is committed after it."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer

from schemas.config import Config
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.plugins import ResultsReader, Runner, all_committed, send_invocation

# A call runs until the test writes its release file (at most 60 s): it is still running whatever the
# rebalances take on a loaded machine.
MAIN = """
import os, time


def run(tag, release=""):
    with open("calls.log", "a") as fh:
        fh.write(tag + "\\n")
    deadline = time.monotonic() + 60
    while release and not os.path.exists(release) and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"tag": tag}
"""
MANIFEST = {
    "name": "slow",
    "entry_point": "main.run",
    "parameters": {"tag": {"type": "string", "required": True}, "release": {"type": "string", "default": ""}},
    "timeout_seconds": 90,
    "concurrency": 1,
}


@pytest.fixture
def env(stack: Any, tmp_path: Path) -> Iterator[tuple[Config, Path]]:
    folder = tmp_path / "plugins" / "slow"
    folder.mkdir(parents=True)
    (folder / "plugin.json").write_text(json.dumps(MANIFEST))
    (folder / "main.py").write_text(MAIN)
    data = isolated_config_data("reassign", plugin_dirs=[folder.parent])
    data["kafka"]["partitions"] = 1
    data["runners"]["partition_assignment"] = "roundrobin"
    cfg = write_config(tmp_path, data)
    s = cfg.settings
    topics = [s.topics.results, s.topics.dlq, s.topics.invoke("slow"), s.topics.invoke("slow", "high")]
    ensure_topics(s, topics)
    try:
        yield cfg, folder
    finally:
        remove_test_resources(s, topics)


def rebalance_twice(cfg: Config, seconds: float) -> None:
    """Another member joins the runners' group for `seconds` (taking a partition, committing nothing),
    then leaves: two eager rebalances, each taking every partition from the runner and giving some back."""
    s = cfg.settings
    member = Consumer(
        s.kafka_config(**{**s.runners.group_options(), "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    )
    member.subscribe([s.topics.invoke("slow"), s.topics.invoke("slow", "high")])
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        member.poll(0.1)
    member.close()


def test_a_message_fetched_again_while_its_call_runs_is_not_run_twice(
    env: tuple[Config, Path], caplog: pytest.LogCaptureFixture
) -> None:
    cfg, folder = env
    calls, release = folder / "calls.log", folder / "release"
    reader = ResultsReader(cfg.settings)
    caplog.set_level(logging.INFO, logger="cdcflow.runner")
    try:
        with Runner(cfg, plugins=["slow"]):
            slow = send_invocation(cfg, "slow", {"tag": "slow", "release": str(release)})
            wait_for(lambda: calls.exists() and "slow" in calls.read_text(), 30, what="the slow call started")
            rebalance_twice(cfg, 3.0)
            wait_for(lambda: "held until that ends" in caplog.text, 30, what="the message fetched again, held")
            release.touch()
            after = send_invocation(cfg, "slow", {"tag": "after"})
            results = reader.wait_for(2, timeout=60)
            wait_for(lambda: all_committed(cfg, cfg.settings.topics.invoke("slow")), 30, what="offsets committed")
            results = reader.read_for(1.0)
    finally:
        reader.close()
    assert calls.read_text().split() == ["slow", "after"]  # the slow call ran once
    by_id: dict[str, list[dict[str, Any]]] = {}
    for key, value in results:
        by_id.setdefault(key, []).append(json.loads(value))
    assert [r["status"] for r in by_id[slow.invocation_id]] == ["success"]  # recorded and published once
    assert [r["status"] for r in by_id[after.invocation_id]] == ["success"]
