"""kill -9 of a runner in the middle of a long invocation: after a restart it completes exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from plugins.store import RunStore
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import REPO_ROOT, consume_all, isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.plugins import new_invocation, produce_messages

# Its side effect is a log: a line when a call starts and one when it completes.
LONG_MAIN = """import os, time


def run(seconds=5, context=None):
    with open("side-effects.log", "a") as fh:
        fh.write(f"start {context['invocation_id']} {os.getpid()}\\n")
    time.sleep(seconds)
    with open("side-effects.log", "a") as fh:
        fh.write(f"done {context['invocation_id']} {os.getpid()}\\n")
    return {"slept": seconds}
"""


def _lines(folder: Path) -> list[list[str]]:
    log = folder / "side-effects.log"
    return [line.split() for line in log.read_text().splitlines()] if log.exists() else []


def _start_runner(config_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "console.cli", "-c", str(config_path), "runners", "run", "--no-watch"],
        cwd=REPO_ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_kill_9_mid_invocation_then_restart_completes_exactly_once(stack, tmp_path):
    folder = tmp_path / "plugins" / "long"
    folder.mkdir(parents=True)
    (folder / "plugin.json").write_text(
        json.dumps(
            {
                "name": "long",
                "version": "1.0.0",
                "entry_point": "main.run",
                "timeout_seconds": 60,
                "parameters": {"seconds": {"type": "number", "default": 5}},
            }
        )
    )
    (folder / "main.py").write_text(LONG_MAIN)
    data = isolated_config_data("kill", plugin_dirs=[folder.parent])
    cfg = write_config(tmp_path, data)
    s = cfg.settings
    topics = [s.topics.invoke("long"), s.topics.invoke("long", "high"), s.topics.results, s.topics.dlq]
    ensure_topics(s, topics)
    # The restarted runner joins a new consumer group: the killed member would hold its partitions
    # until the session timeout (45 s). A new group re-reads the topic from the start, exactly what
    # a takeover after the timeout would see, since nothing was committed.
    data["runners"]["group_id"] += "-after-kill"
    restarted = tmp_path / "restarted.yaml"
    restarted.write_text(yaml.safe_dump(data))
    inv = new_invocation("long", {"seconds": 4})
    produce_messages(s, [(s.topics.invoke("long"), inv.invocation_id.encode(), inv.model_dump_json().encode())])
    store = RunStore(s)
    runner = _start_runner(cfg.path)
    try:
        first = wait_for(lambda: _lines(folder), timeout=120, what="the long call to start")
        assert first == [["start", inv.invocation_id, first[0][2]]]
        # its `running` state is written within the result writer's linger (0.5 s) of being taken
        wait_for(lambda: (run := store.current(inv.invocation_id)) and run.status == "running", 10, what="running")
        os.killpg(runner.pid, signal.SIGKILL)  # the runner only: its workers have their own sessions
        runner.wait(10)
        orphan = int(first[0][2])
        wait_for(lambda: not os.path.exists(f"/proc/{orphan}"), timeout=10, what="the orphaned worker to exit")
        assert store.get(inv.invocation_id) is None and not store.is_done(inv.invocation_id)
        # shown as the dead runner left it (issue 14): running, there, until a runner takes it again
        left = store.current(inv.invocation_id)
        assert left is not None and left.status == "running", left
        assert left.runner is not None and left.runner.endswith(f":{runner.pid}")
        assert (left.model_extra or {}).get("worker_pid") == orphan

        runner = _start_runner(restarted)
        wait_for(lambda: store.is_done(inv.invocation_id), timeout=120, what="the re-run to be recorded")
        assert store.current(inv.invocation_id).status == "success"  # the result ended the running state
        assert not store.client.exists(store.state_key(inv.invocation_id))
        time.sleep(1.0)  # anything else the restarted runner might wrongly do, it has time to do now
    finally:
        if runner.poll() is None:
            runner.terminate()
            runner.wait(30)
    try:
        lines = _lines(folder)
        starts = [line for line in lines if line[0] == "start"]
        dones = [line for line in lines if line[0] == "done"]
        assert len(starts) == 2 and starts[0][2] != starts[1][2], lines  # killed attempt, then the re-run
        assert dones == [["done", inv.invocation_id, starts[1][2]]], lines  # completed once, by the re-run
        runs = store.list(plugin="long", limit=100)
        assert [(r.invocation_id, r.status) for r in runs] == [(inv.invocation_id, "success")]
        published = [
            m for m in consume_all(cfg, [s.topics.results], idle_seconds=2.0) if m.key().decode() == inv.invocation_id
        ]
        assert len(published) == 1 and json.loads(published[0].value())["status"] == "success"
    finally:
        store.close()
        remove_test_resources(s, topics)
