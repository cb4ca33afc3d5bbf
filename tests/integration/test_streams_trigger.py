"""`cdcflow trigger`: refused before anything is sent on bad parameters; accepted ones become an
invocation (deterministic id, manual trigger) on the plugin's topic, through the running worker."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from schemas.invocation import invocation_id_for
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import REPO_ROOT, consume_all, isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.streams import Collector, Worker


def trigger(config_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console.cli", "--config", str(config_path), "trigger", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_trigger_refused_and_accepted(stack: None, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, isolated_config_data("trg", {"schedules": {"rare": {"plugin": "echo", "cron": "0 0 1 1 *"}}})
    )  # makes the worker create echo's topic
    settings = config.settings
    # a high-priority trigger must land on echo's `.high` topic, which runners consume first
    invoke = settings.topics.invoke("echo", "high")
    ensure_topics(settings, [invoke, settings.topics.triggers])
    worker = Worker(config, tmp_path / "worker.log")
    collector = Collector(config, invoke)
    worker.start()
    try:
        wrong_type = trigger(config.path, "echo", "-p", "seconds=soon")
        assert wrong_type.returncode == 1 and "refused, nothing was sent" in wrong_type.stderr
        assert "seconds: expected number" in wrong_type.stderr
        unknown = trigger(config.path, "echo", "-p", "colour=red")
        assert unknown.returncode == 1 and "colour: unknown parameter" in unknown.stderr
        missing = trigger(config.path, "data_processor")
        assert missing.returncode == 1 and "operation: required parameter is missing" in missing.stderr
        assert trigger(config.path, "nosuch").returncode == 1
        assert list(consume_all(config, [settings.topics.triggers], idle_seconds=1)) == [], "a refused trigger was sent"

        accepted = trigger(config.path, "echo", "-p", "message=hi", "--json", '{"seconds": 0.5}', "--priority", "high")
        assert accepted.returncode == 0, accepted.stderr
        invocation_id = accepted.stdout.strip()
        got = wait_for(lambda: collector.poll(), 120, what="the manual invocation")
        assert len(got) == 1
        inv = got[0]
        assert inv["invocation_id"] == invocation_id and inv["priority"] == "high"
        assert inv["params"] == {"message": "hi", "seconds": 0.5, "mode": "echo"}
        assert inv["trigger"]["kind"] == "manual"
        assert invocation_id == invocation_id_for("manual", inv["trigger"]["request_id"], "echo")
    finally:
        assert worker.stop() == 0
        collector.consumer.close()
        remove_test_resources(settings, [invoke, settings.topics.triggers])
