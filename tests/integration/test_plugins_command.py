"""Plugin metadata, environment checks and command plugins in a real `cdcflow runners run` process:
real Kafka, Redis, worker processes and programs, plugins written to disk (issue 14, items 4 and 5)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from console.cli import cli
from plugins.state import PluginStates
from plugins.store import RunStore
from schemas.config import Config
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import EXAMPLES_DIR, REPO_ROOT, isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.api import api_server
from tests.support.plugins import ResultsReader, all_committed, result_for, send_invocation

# A Python plugin whose environment check fails until it is corrected (ENV_OK).
ENV_MAIN = """
import os

def validate_execution_environment():
    if not os.path.exists("license.key"):
        raise RuntimeError("license.key is missing from " + os.getcwd())
    return True

def run(context=None):
    return {"licensed": True, "attempt": context["attempt"]}
"""
ENV_OK = ENV_MAIN.replace('os.path.exists("license.key")', "True")
PLUGINS: dict[str, dict[str, Any]] = {
    "needs_env": {
        "entry_point": "main.run",
        "category": "ops",
        "tags": ["nightly"],
        "retries": {"max_retries": 3, "retry_delay": 0.1},
    },
    # The program records its pid (so the test can see the timeout kill reached it), then hangs.
    "hang": {
        "command": ["sh", "-c", 'echo $$ > "$0"; exec sleep 60', "{invocation_id}.pid"],
        "timeout_seconds": 2,
        "category": "ops",
    },
}
# What a command sees: its PATH, python, folder and environment; and `mb` megabytes it tries to allocate.
PROBE = """
import json, os, sys
data = bytearray(int(sys.argv[1]) * 1024 * 1024)
print(json.dumps({"path": os.environ["PATH"].split(os.pathsep), "python": sys.executable, "cwd": os.getcwd(),
                  "env": sorted(os.environ), "mb": len(data) // (1024 * 1024)}))
"""
PLUGINS["probe"] = {
    "command": ["python", "probe.py", "{mb}"],
    "parameters": {"mb": {"type": "integer", "default": 0}},
    "memory_limit_mb": 200,
}
NAMES = ["teacher_report", *PLUGINS]
Env = tuple[Config, Path, PluginStates, ResultsReader]


def _write_plugins(base: Path) -> None:
    shutil.copytree(
        EXAMPLES_DIR / "teacher_report", base / "teacher_report", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name, manifest in PLUGINS.items():
        (base / name).mkdir()
        (base / name / "plugin.json").write_text(json.dumps({"name": name, **manifest}))
    (base / "needs_env" / "main.py").write_text(ENV_MAIN)
    (base / "probe" / "probe.py").write_text(PROBE)


@pytest.fixture
def env(stack: Any, tmp_path: Path) -> Iterator[Env]:
    base = tmp_path / "plugins"
    base.mkdir()
    _write_plugins(base)
    cfg = write_config(tmp_path, isolated_config_data("command", plugin_dirs=[base]))
    s = cfg.settings
    topics = [s.topics.results, s.topics.dlq] + [s.topics.invoke(n, p) for n in NAMES for p in ("normal", "high")]
    ensure_topics(s, topics)
    store = RunStore(s)
    reader = ResultsReader(s)
    states = PluginStates(store.client, s.redis.key_prefix)
    with (tmp_path / "runner.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "console.cli", "-c", str(cfg.path), "runners", "run"],
            cwd=REPO_ROOT,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CDCFLOW_PROBE_SECRET": "must-not-reach-plugins"},
        )
    try:
        wait_for(
            lambda: all((states.get(n) or {}).get("state") in ("serving", "unhealthy") for n in NAMES),
            timeout=90,
            what="the runner to serve every plugin",
        )
        yield cfg, base, states, reader
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.close()
        store.close()
        remove_test_resources(s, topics)


def _dashboard_page(base_url: str, token: str, path: str) -> str:
    """A dashboard page as a signed-in browser gets it (the sign-in form's nonce, then the session cookie)."""
    with httpx.Client(base_url=base_url, timeout=30.0) as web:
        form = web.get("/login")
        nonce = re.search(r'name="login_nonce" value="([^"]+)"', form.text)
        assert nonce is not None, form.text
        signed_in = web.post("/login", data={"token": token, "login_nonce": nonce.group(1), "next": path})
        assert signed_in.status_code == 303, signed_in.text
        page = web.get(path)
        assert page.status_code == 200
        return page.text


def _cli(cfg: Config, *args: str) -> Any:
    out = CliRunner().invoke(cli, ["-c", str(cfg.path), *args])
    return out


def test_an_unhealthy_plugin_fails_at_once_until_a_corrected_version_is_loaded(env: Env, tmp_path: Path) -> None:
    cfg, base, states, reader = env
    state = states.get("needs_env") or {}
    assert state["state"] == "unhealthy", state
    reason = "validate_execution_environment() raised RuntimeError: license.key is missing from"
    assert reason in state["last_error"], state

    # plugins list, status and the API say so, with the plugin.json labels
    listed = {p["name"]: p for p in json.loads(_cli(cfg, "plugins", "list", "--json").stdout)["plugins"]}
    assert listed["needs_env"]["state"] == "unhealthy" and reason in listed["needs_env"]["last_error"]
    assert (listed["needs_env"]["category"], listed["needs_env"]["tags"]) == ("ops", ["nightly"])
    assert listed["teacher_report"]["command"][:2] == ["python", "report.py"]
    status = _cli(cfg, "status", "--no-kafka", "--json")
    assert json.loads(status.stdout)["plugins"]["needs_env"]["state"] == "unhealthy", status.output
    with api_server(cfg, tmp_path / "api.log") as api, api.client("read") as http:
        served = {p["name"]: p for p in http.get("/api/plugins").json()["plugins"]}
        page = _dashboard_page(api.base_url, api.tokens["read"], "/plugins")
    assert re.search(r'data-plugin="needs_env" data-state="unhealthy"', page), page
    assert re.search(r'data-testid="plugin-category">reports<.*?<span class="tag muted">example</span>', page, re.S)
    assert served["needs_env"]["state"] == "unhealthy" and reason in served["needs_env"]["last_error"]
    report = served["teacher_report"]
    assert (report["category"], report["tags"]) == ("reports", ["example", "command"])

    # each invocation fails at once with the reason: attempt 1, no retry, dead-lettered; offsets move on
    sent = [send_invocation(cfg, "needs_env", {}) for _ in range(3)]
    results = [result_for(reader, inv.invocation_id) for inv in sent]
    for r in results:
        assert (r["status"], r["attempt"], r["error"]["type"]) == ("failed", 1, "PluginUnhealthy"), r
        assert reason in r["error"]["message"] and r.get("dead_lettered") is True and "next_attempt" not in r
        assert r["timings"]["entry_called_at"] is None  # the plugin's function never ran
    wait_for(lambda: all_committed(cfg, cfg.settings.topics.invoke("needs_env")), timeout=30, what="offsets")
    time.sleep(1.0)  # a retry would have been published by now
    assert [k for k, _ in reader.messages].count(sent[0].invocation_id) == 1

    # a corrected version, hot-reloaded, is healthy and runs
    (base / "needs_env" / "main.py").write_text(ENV_OK)
    wait_for(lambda: (states.get("needs_env") or {}).get("state") == "serving", timeout=60, what="the corrected one")
    assert (states.get("needs_env") or {})["last_error"] is None
    fixed = result_for(reader, send_invocation(cfg, "needs_env", {}).invocation_id)
    assert fixed["status"] == "success" and fixed["output"] == {"licensed": True, "attempt": 1}, fixed


def test_command_plugins_output_exit_timeout_and_no_shell(env: Env) -> None:
    cfg, base, states, reader = env
    folder = base / "teacher_report"
    hostile = "x; touch PWNED1 && echo hi | tee PWNED2 $(touch PWNED3) `touch PWNED4` > PWNED5 \"' {lessons}"
    good = send_invocation(cfg, "teacher_report", {"teacher_id": hostile, "lessons": "21"})
    bad = send_invocation(cfg, "teacher_report", {"teacher_id": "t2", "lessons": -1})
    hung = send_invocation(cfg, "hang", {})

    r = result_for(reader, good.invocation_id)
    # JSON stdout is the output; the hostile value arrived as one argument, untouched and unrun
    assert r["status"] == "success" and r["output"] == {"teacher_id": hostile, "lessons": 21, "level": "busy"}, r
    assert not list(folder.glob("PWNED*")) and not list(REPO_ROOT.glob("PWNED*"))

    r = result_for(reader, bad.invocation_id)
    assert r["status"] == "failed" and r["error"]["type"] == "CommandFailed" and r["error"]["exit_code"] == 2, r
    assert r["error"]["message"] == "command exited with code 2: lessons must be 0 or more, got -1"
    assert "lessons must be 0 or more" in r["error"]["traceback"]

    r = result_for(reader, hung.invocation_id)
    assert r["status"] == "timeout" and "did not finish within 2s" in r["error"]["message"], r
    assert 2000 <= r["duration_ms"] < 10_000
    pid = int((base / "hang" / f"{hung.invocation_id}.pid").read_text())
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10, what="the hung program to be killed")

    # the program has the plugin venv first on PATH, runs in its folder, with the scrubbed environment
    # and the memory limit of a Python plugin
    seen = result_for(reader, send_invocation(cfg, "probe", {"mb": 10}).invocation_id)
    assert seen["status"] == "success" and seen["output"]["mb"] == 10, seen
    venv_bin = os.path.dirname(seen["output"]["python"])
    assert seen["output"]["path"][0] == venv_bin and venv_bin.startswith(str(cfg.settings.runners.venv_dir))
    assert seen["output"]["cwd"] == str((base / "probe").resolve())
    assert "CDCFLOW_PROBE_SECRET" not in seen["output"]["env"] and "PATH" in seen["output"]["env"]
    hog = result_for(reader, send_invocation(cfg, "probe", {"mb": 400}).invocation_id)
    assert hog["status"] == "failed" and hog["error"]["exit_code"] == 1 and "MemoryError" in hog["error"]["message"]

    # the next call of the same plugin gets a fresh worker and runs
    again = result_for(reader, send_invocation(cfg, "teacher_report", {"teacher_id": "t3"}).invocation_id)
    assert again["status"] == "success" and again["output"]["level"] == "idle"


def test_runs_are_filtered_by_their_plugins_category_and_tags(env: Env, tmp_path: Path) -> None:
    cfg, base, states, reader = env
    report = send_invocation(cfg, "teacher_report", {"teacher_id": "t1"})
    unhealthy = send_invocation(cfg, "needs_env", {})
    for inv in (report, unhealthy):
        result_for(reader, inv.invocation_id)
    store = RunStore(cfg.settings)
    wait_for(lambda: store.get(report.invocation_id) and store.get(unhealthy.invocation_id), what="runs recorded")
    store.close()

    def listed(*args: str) -> set[str]:
        out = _cli(cfg, "runs", "list", "--json", *args)
        assert out.exit_code == 0, out.output
        return {json.loads(line)["plugin"] for line in out.stdout.splitlines()}

    assert listed("--category", "reports") == {"teacher_report"}
    assert listed("--category", "OPS") == {"needs_env"}
    assert listed("--tag", "nightly") == {"needs_env"}
    assert listed("--tag", "Example", "--tag", "nightly") == {"teacher_report", "needs_env"}
    assert listed("--category", "ops", "--tag", "example") == set()
    assert listed("--tag", "nightly", "--status", "failed") == {"needs_env"}
    assert listed("--tag", "nightly", "--status", "success") == set()
    out = _cli(cfg, "runs", "list", "--tag", "no-such-tag")
    assert out.exit_code == 0 and out.stdout.strip() == "no runs", out.output

    # the API's run list takes the same filters
    with api_server(cfg, tmp_path / "api.log") as api, api.client("read") as http:

        def api_listed(query: str) -> set[str]:
            answer = http.get(f"/api/runs?{query}")
            assert answer.status_code == 200, answer.text
            return {r["plugin"] for r in answer.json()["runs"]}

        assert api_listed("category=reports") == {"teacher_report"}
        assert api_listed("tag=EXAMPLE&tag=nightly") == {"teacher_report", "needs_env"}
        assert api_listed("tag=nightly&status=success") == set()
