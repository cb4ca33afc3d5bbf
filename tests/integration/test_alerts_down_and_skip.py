"""Alerts that no single failing run raises: a component that stops heartbeating (noticed by
another live component, alerted once however many notice) and schedule slots that are not run.
A real streams worker (`cdcflow run --only streams`) with Slack and DingTalk channels pointed at
local receivers; no runner runs, so the schedule's first invocation never finishes and its next
slots are skipped by max_instances."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schemas.config import Config
from tests.support import REPO_ROOT, isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.api import pipeline_running
from tests.support.receivers import WebhookReceiver

HEARTBEAT = """
import sys, time
from schemas.config import load_config
from schemas.runtime.observability import ComponentObservability
obs = ComponentObservability("runner", load_config(sys.argv[1]).settings, port=0).start()
time.sleep(1)  # a few heartbeats written
print("beating", flush=True)
if sys.argv[2] == "stop":
    time.sleep(1.5)
    obs.stop()
else:
    time.sleep(600)
"""


@pytest.fixture
def receivers() -> Iterator[tuple[WebhookReceiver, WebhookReceiver]]:
    slack, dingtalk = WebhookReceiver(), WebhookReceiver()
    yield slack, dingtalk
    slack.close()
    dingtalk.close()


@pytest.fixture
def config(stack: None, tmp_path: Path, receivers: tuple[WebhookReceiver, WebhookReceiver]) -> Iterator[Config]:
    slack, dingtalk = receivers
    rules = {"schedules": {"every_second": {"plugin": "echo", "interval_seconds": 1, "max_instances": 1}}}
    data: dict[str, Any] = isolated_config_data("alerts", rules)
    data["observability"] = {"heartbeat_seconds": 0.5, "stale_after_seconds": 2}
    data["alerts"] = {
        "channels": [
            {"type": "slack", "webhook_url": slack.url},
            {"type": "dingtalk", "webhook_url": dingtalk.url, "secret": "SECtopsecret"},
        ],
        "window_seconds": 600,
        "max_per_window": 5,
    }
    config = write_config(tmp_path, data)
    yield config
    remove_test_resources(config.settings, [])


def heartbeat(config: Config, how: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-c", HEARTBEAT, str(config.path), how], cwd=REPO_ROOT, stdout=subprocess.PIPE
    )
    assert process.stdout is not None and process.stdout.readline() == b"beating\n"
    return process


def texts(receiver: WebhookReceiver, kind: str) -> list[str]:
    return [b["text"] for b in receiver.bodies if b["text"].startswith(f"[cdcflow] {kind}")]


def test_a_dead_component_and_skipped_slots_are_alerted_on_every_channel(
    config: Config, tmp_path: Path, receivers: tuple[WebhookReceiver, WebhookReceiver]
) -> None:
    slack, dingtalk = receivers
    with pipeline_running(config, tmp_path / "streams.log", only=("streams",)):
        stopped = heartbeat(config, "stop")  # a clean stop is not an outage
        killed = heartbeat(config, "kill")
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait()
        wait_for(lambda: texts(slack, "component down"), 30, what="the component-down alert")
        wait_for(lambda: texts(slack, "schedule skipped"), 30, what="the skipped-slot alert")
        stopped.wait(10)
    down = texts(slack, "component down")
    assert len(down) == 1, down  # once per outage, and not for the component that stopped cleanly
    assert f"runner on {os.uname().nodename} (pid {killed.pid}) has sent no heartbeat" in down[0]
    skipped = texts(slack, "schedule skipped")
    assert "schedule every_second (echo):" in skipped[0] and "max_instances=1 still running" in skipped[0]
    markdown = [b["markdown"] for b in dingtalk.bodies]
    assert {m["title"].split(":")[0] for m in markdown} >= {"[cdcflow] component down", "[cdcflow] schedule skipped"}
    assert all("sign=" in path and "timestamp=" in path for path in dingtalk.paths)
    log = (tmp_path / "streams.log").read_text()
    assert "SECtopsecret" not in log and "s3cr3t-token" not in log
