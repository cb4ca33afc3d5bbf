"""Dependency isolation in a running runner: conflicting versions side by side, and a dependency
change that builds a new venv in the background while the old version keeps serving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plugins.state import PluginStates
from plugins.store import RunStore
from plugins.venvs import venv_spec, venv_state
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.plugins import ResultsReader, Runner, result_for, send_invocation, wait_serving

SIX_MAIN = """import sys
import six


def run(context=None):
    return {"six": six.__version__, "prefix": sys.prefix}
"""

# A local package whose build takes a while and says when it started: a slow venv build on demand.
SLOW_SETUP = """import pathlib, time
from setuptools import setup

pathlib.Path({started!r}).touch()
time.sleep({seconds})
setup(name="slowbuild", version="1.0", py_modules=["slowbuild"])
"""


def _six_plugin(folder: Path, dependencies: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plugin.json").write_text(
        json.dumps({"name": folder.name, "version": "1.0.0", "entry_point": "main.run", "dependencies": dependencies})
    )
    (folder / "main.py").write_text(SIX_MAIN)


@pytest.fixture
def env(stack, tmp_path):
    plugins_dir = tmp_path / "plugins"
    names = ("old_six", "new_six", "dep")
    cfg = write_config(tmp_path, isolated_config_data("iso", plugin_dirs=[plugins_dir]))
    s = cfg.settings
    topics = [s.topics.results, s.topics.dlq] + [s.topics.invoke(n, p) for n in names for p in ("normal", "high")]
    ensure_topics(s, topics)
    store = RunStore(s)
    reader = ResultsReader(s)
    yield cfg, plugins_dir, PluginStates(store.client, s.redis.key_prefix), reader
    reader.close()
    store.close()
    remove_test_resources(s, topics)


def test_conflicting_dependency_versions_both_work_in_one_runner(env):
    cfg, plugins_dir, states, reader = env
    _six_plugin(plugins_dir / "old_six", ["six==1.15.0"])
    _six_plugin(plugins_dir / "new_six", ["six==1.16.0"])
    with Runner(cfg):
        for name in ("old_six", "new_six"):
            wait_serving(states, name, plugins_dir / name, timeout=180)
        old, new = send_invocation(cfg, "old_six", {}), send_invocation(cfg, "new_six", {})
        old_r, new_r = result_for(reader, old.invocation_id), result_for(reader, new.invocation_id)
    assert old_r["status"] == new_r["status"] == "success", (old_r, new_r)
    assert old_r["output"]["six"] == "1.15.0" and new_r["output"]["six"] == "1.16.0"
    assert old_r["output"]["prefix"] != new_r["output"]["prefix"]  # two venvs


def test_a_dependency_change_builds_in_the_background_then_switches(env, tmp_path):
    cfg, plugins_dir, states, reader = env
    folder = plugins_dir / "dep"
    _six_plugin(folder, ["six==1.15.0"])
    slow = tmp_path / "slowbuild"
    slow.mkdir()
    started = tmp_path / "build-started"
    (slow / "setup.py").write_text(SLOW_SETUP.format(started=str(started), seconds=6))
    (slow / "slowbuild.py").write_text("")
    with Runner(cfg):
        v1 = wait_serving(states, "dep", folder, timeout=180)
        before = result_for(reader, send_invocation(cfg, "dep", {}).invocation_id)
        assert before["output"]["six"] == "1.15.0"

        new_deps = ["six==1.16.0", f"slowbuild @ {slow.as_uri()}"]
        _six_plugin(folder, new_deps)
        wait_for(started.exists, timeout=60, what="the new venv's build to start")
        r = result_for(reader, send_invocation(cfg, "dep", {}).invocation_id)
        # answered by the old version while the new venv was still being built
        assert r["status"] == "success" and r["output"]["six"] == "1.15.0" and r["code_hash"] == v1["code_hash"]
        assert venv_state(cfg.settings.runners.venv_dir, venv_spec(new_deps)) == "missing", "the build already ended"
        assert (states.get("dep") or {}).get("code_hash") == v1["code_hash"]

        v2 = wait_serving(states, "dep", folder, timeout=180)
        after = result_for(reader, send_invocation(cfg, "dep", {}).invocation_id)
    assert v2["code_hash"] != v1["code_hash"]
    assert after["output"]["six"] == "1.16.0" and after["code_hash"] == v2["code_hash"]
    assert after["output"]["prefix"] != before["output"]["prefix"]
