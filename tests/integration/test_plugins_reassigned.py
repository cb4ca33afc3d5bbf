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


@pytest.fixture(params=["roundrobin"])
def env(stack: Any, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[Config, Path]]:
    folder = tmp_path / "plugins" / "slow"
    folder.mkdir(parents=True)
    (folder / "plugin.json").write_text(json.dumps(MANIFEST))
    (folder / "main.py").write_text(MAIN)
    data = isolated_config_data("reassign", plugin_dirs=[folder.parent])
    data["kafka"]["partitions"] = 1
    data["runners"]["partition_assignment"] = request.param
    if request.param == "roundrobin":  # the hold is under test there: let the partition go at once
        data["runners"]["revoke_wait_seconds"] = 0
    cfg = write_config(tmp_path, data)
    s = cfg.settings
    topics = [s.topics.results, s.topics.dlq, s.topics.invoke("slow"), s.topics.invoke("slow", "high")]
    ensure_topics(s, topics)
    try:
        yield cfg, folder
    finally:
        remove_test_resources(s, topics)


def group_member(cfg: Config, topics: list[str]) -> Consumer:
    """Another member of the runners' group (committing nothing), subscribed to `topics`."""
    s = cfg.settings
    member = Consumer(
        s.kafka_config(**{**s.runners.group_options(), "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    )
    member.subscribe(topics)
    return member


def rebalance_twice(cfg: Config, seconds: float) -> None:
    """Another member joins the runners' group for `seconds` (taking a partition, committing nothing),
    then leaves: two eager rebalances, each taking every partition from the runner and giving some back."""
    s = cfg.settings
    member = group_member(cfg, [s.topics.invoke("slow"), s.topics.invoke("slow", "high")])
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


@pytest.mark.parametrize("env", ["cooperative-sticky"], indirect=True)
def test_a_partition_taken_away_waits_for_its_running_call_so_the_new_owner_does_not_run_it(
    env: tuple[Config, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A member subscribed only to the plugin's normal topic joins: balancing moves that topic's one
    partition to it while the runner's call on it runs. The runner lets the call end and commits it before
    the partition goes (runners.revoke_wait_seconds, 5 s by default), so the new owner fetches past it."""
    cfg, folder = env
    calls, release = folder / "calls.log", folder / "release"
    s = cfg.settings
    reader = ResultsReader(s)
    caplog.set_level(logging.INFO, logger="cdcflow.runner")
    fetched: list[int] = []
    try:
        with Runner(cfg, plugins=["slow"]):
            slow = send_invocation(cfg, "slow", {"tag": "slow", "release": str(release)})
            wait_for(lambda: calls.exists() and "slow" in calls.read_text(), 30, what="the slow call started")
            member = group_member(cfg, [s.topics.invoke("slow")])
            try:
                deadline = time.monotonic() + 30
                while "running call(s) of partitions being revoked" not in caplog.text:
                    assert time.monotonic() < deadline, "the runner did not wait for its running call"
                    member.poll(0.1)
                release.touch()  # the call ends within the wait: recorded, committed, then let go
                deadline = time.monotonic() + 30
                while not member.assignment():
                    assert time.monotonic() < deadline, "the member was never given the partition"
                    member.poll(0.1)
                end = time.monotonic() + 3.0
                while time.monotonic() < end:
                    msg = member.poll(0.1)
                    if msg is not None and msg.error() is None:
                        fetched.append(msg.offset() or 0)
            finally:
                member.close()
            results = reader.wait_for(1, timeout=30)
    finally:
        reader.close()
    assert fetched == []  # committed before it moved: the new owner has nothing to run again
    assert calls.read_text().split() == ["slow"]
    assert [key for key, _ in results] == [slow.invocation_id]
    assert "still running after" not in caplog.text
