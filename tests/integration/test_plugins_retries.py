"""Retries with backoff, dead letters and replay, against the real Kafka and Redis."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from console.cli import cli
from plugins.store import RunStore
from schemas.config import Config
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, remove_test_resources, write_config
from tests.support.plugins import ResultsReader, Runner, new_invocation, produce_messages

# Fails until attempt `succeed_on` (or forever when 0, unless the file `fixed` exists); logs every call.
FLAKY_MAIN = """
import json, os

def run(succeed_on=0, context=None):
    with open("calls.log", "a") as fh:
        fh.write(json.dumps({"id": context["invocation_id"], "attempt": context["attempt"],
                             "trigger": context["trigger"]["kind"]}) + "\\n")
    if os.path.exists("fixed") or (succeed_on and context["attempt"] >= succeed_on):
        return {"attempt": context["attempt"]}
    raise RuntimeError(f"attempt {context['attempt']} failed on purpose")
"""


def _plugin(base: Path, name: str, retries: dict) -> Path:
    folder = base / name
    folder.mkdir(parents=True)
    (folder / "plugin.json").write_text(
        json.dumps(
            {
                "name": name,
                "version": "1.2.3",
                "entry_point": "main.run",
                "retries": retries,
                "parameters": {"succeed_on": {"type": "integer", "default": 0}},
            }
        )
    )
    (folder / "main.py").write_text(FLAKY_MAIN)
    return folder


def _calls(folder: Path) -> list[dict]:
    log = folder / "calls.log"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def config(stack, tmp_path):
    plugins_dir = tmp_path / "plugins"
    cfg = write_config(tmp_path, isolated_config_data("retry", plugin_dirs=[plugins_dir]))
    s = cfg.settings
    topics = [s.topics.invoke("flaky"), s.topics.invoke("doomed"), s.topics.results, s.topics.dlq]
    _plugin(plugins_dir, "flaky", {"max_retries": 3, "retry_delay": 0.8, "backoff_factor": 2})
    _plugin(plugins_dir, "doomed", {"max_retries": 1, "retry_delay": 0.2})
    ensure_topics(s, topics)
    yield cfg
    remove_test_resources(s, [*topics, s.topics.invoke("flaky", "high"), s.topics.invoke("doomed", "high")])


def test_fails_twice_then_succeeds_surviving_a_runner_restart(config):
    s = config.settings
    folder = s.runners.plugin_dirs[0] / "flaky"
    inv = new_invocation("flaky", {"succeed_on": 3})
    produce_messages(s, [(s.topics.invoke("flaky"), inv.invocation_id.encode(), inv.model_dump_json().encode())])
    reader = ResultsReader(s)
    store = RunStore(s)
    try:
        with Runner(config):
            ((_, first),) = reader.wait_for(1)
        # The runner is gone while attempt 2 waits for its backoff: the retry lives in Kafka, not in memory.
        assert json.loads(first)["status"] == "failed" and json.loads(first)["next_attempt"]["attempt"] == 2
        assert not store.is_done(inv.invocation_id)
        with Runner(config):
            results = [json.loads(v) for _, v in reader.wait_for(3, timeout=60)]
            assert [(r["attempt"], r["status"]) for r in results] == [(1, "failed"), (2, "failed"), (3, "success")]
            assert all(r["invocation_id"] == inv.invocation_id for r in results)
            assert [r["trigger_kind"] for r in results] == ["manual", "retry", "retry"]
            # exponential backoff: 0.8 s before attempt 2, 1.6 s before attempt 3 (by the plugin's own clock)
            t = [r["timings"]["entry_called_at"] for r in results]
            assert t[2] - t[1] >= 1.6
            assert results[1]["next_attempt"]["not_before"] - results[1]["timings"]["received_at"] >= 1.55
            assert store.get(inv.invocation_id).status == "success" and store.is_done(inv.invocation_id)
            time.sleep(1.5)
        calls = _calls(folder)
        assert [c["attempt"] for c in calls] == [1, 2, 3]  # each attempt ran exactly once
        assert [e["dlq_id"] for e in _dlq_json(config)] == []
    finally:
        reader.close()
        store.close()


def _dlq_json(config: Config, *args: str) -> list[dict]:
    out = CliRunner().invoke(cli, ["-c", str(config.path), "dlq", "list", "--json", *args])
    assert out.exit_code == 0, out.output
    return [json.loads(line) for line in out.output.splitlines() if line.startswith("{")]


def test_always_failing_goes_to_the_dlq_and_replays_once(config):
    s = config.settings
    folder = s.runners.plugin_dirs[0] / "doomed"
    inv = new_invocation("doomed", {})
    produce_messages(s, [(s.topics.invoke("doomed"), inv.invocation_id.encode(), inv.model_dump_json().encode())])
    reader = ResultsReader(s)
    store = RunStore(s)
    try:
        with Runner(config):
            results = [json.loads(v) for _, v in reader.wait_for(2)]
            assert [(r["attempt"], r["status"]) for r in results] == [(1, "failed"), (2, "failed")]
            assert results[1].get("dead_lettered") is True and "next_attempt" not in results[1]
            assert store.is_done(inv.invocation_id)  # final: a redelivery does not start the cycle again

            entries = _dlq_json(config, "--plugin", "doomed")
            assert len(entries) == 1
            entry = entries[0]
            assert entry["dlq_id"] == inv.invocation_id and entry["replayed"] is None
            assert entry["error"]["type"] == "RuntimeError" and "attempt 2 failed" in entry["error"]["message"]
            assert "Traceback" in entry["error"]["traceback"]
            assert [(a["attempt"], a["status"]) for a in entry["attempts"]] == [(1, "failed"), (2, "failed")]
            assert "attempt 1 failed" in entry["attempts"][0]["error"]["message"]
            assert _dlq_json(config, "--plugin", "flaky") == []

            (folder / "fixed").write_text("")  # the cause is fixed: the replay succeeds
            out = CliRunner().invoke(cli, ["-c", str(config.path), "dlq", "replay", "--plugin", "doomed"])
            assert out.exit_code == 0 and "replayed as" in out.output, out.output
            replayed = [json.loads(v) for _, v in reader.wait_for(3)][2]
            assert replayed["status"] == "success" and replayed["trigger_kind"] == "replay"
            assert replayed["invocation_id"] != inv.invocation_id and replayed["attempt"] == 1

            # the same command again replays nothing
            out = CliRunner().invoke(cli, ["-c", str(config.path), "dlq", "replay", inv.invocation_id])
            assert out.exit_code == 0 and "already replayed" in out.output, out.output
            assert _dlq_json(config)[0]["replayed"]["replay_id"] == replayed["invocation_id"]
            time.sleep(1.5)
        assert len(reader.messages) == 3
        calls = _calls(folder)
        assert [(c["attempt"], c["trigger"]) for c in calls] == [(1, "manual"), (2, "retry"), (1, "replay")]
    finally:
        reader.close()
        store.close()


def test_a_retry_survives_kill_9_of_the_runner(config):
    """The runner is SIGKILLed while attempt 2 waits for its backoff; a new runner runs it, once."""
    import os
    import signal
    import subprocess
    import sys

    import yaml

    s = config.settings
    folder = s.runners.plugin_dirs[0] / "flaky"
    manifest = json.loads((folder / "plugin.json").read_text())
    manifest["retries"] = {"max_retries": 2, "retry_delay": 3.0}
    (folder / "plugin.json").write_text(json.dumps(manifest))
    inv = new_invocation("flaky", {"succeed_on": 2})
    produce_messages(s, [(s.topics.invoke("flaky"), inv.invocation_id.encode(), inv.model_dump_json().encode())])

    # The second runner uses a new consumer group: the killed member would hold its partitions until
    # the session timeout (45 s); a new group instead re-reads the topic from the start, so it also
    # meets the failed attempt 1 again, which its `tried` marker must keep from running twice.
    data = yaml.safe_load(config.path.read_text())
    data["runners"]["group_id"] += "-after-kill"
    second = config.path.with_name("second.yaml")
    second.write_text(yaml.safe_dump(data))

    def start(path=config.path) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "console.cli", "-c", str(path), "runners", "run", "--plugin", "flaky"],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    reader = ResultsReader(s)
    runner = start()
    try:
        ((_, first),) = reader.wait_for(1, timeout=90)
        assert json.loads(first)["next_attempt"]["attempt"] == 2
        os.killpg(runner.pid, signal.SIGKILL)
        runner.wait(10)
        assert [c["attempt"] for c in _calls(folder)] == [1]
        runner = start(second)
        results = [json.loads(v) for _, v in reader.wait_for(2, timeout=90)]
        assert [(r["attempt"], r["status"]) for r in results] == [(1, "failed"), (2, "success")]
        time.sleep(2)
        assert [c["attempt"] for c in _calls(folder)] == [1, 2]
    finally:
        if runner.poll() is None:
            runner.terminate()
            runner.wait(30)
        reader.close()
