"""Hot reload in a running runner (real Kafka, Redis, worker processes, files on disk)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from console.cli import cli
from plugins.registry import code_hash, load_plugin
from plugins.state import PluginStates
from plugins.store import RunStore
from plugins.watcher import FolderWatcher
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import EXAMPLES_DIR, isolated_config_data, plugin_pool, remove_test_resources, wait_for, write_config
from tests.test_plugins_pool import _request
from tests.test_plugins_retries import Runner
from tests.test_plugins_runner import ResultsReader, _invocation, _produce

# Like the bundled hot_reload_demo, plus a file per started call so the test knows a call is running.
MAIN = """import os, time
VERSION = {version}

def run(seconds=0, context=None):
    open("started-" + context["invocation_id"], "w").close()
    time.sleep(float(seconds))
    return {{"version": VERSION, "pid": os.getpid()}}
"""


def _write(folder: Path, version: int, manifest_version: str | None = None, main: str | None = None) -> None:
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
    (folder / "main.py").write_text(main if main is not None else MAIN.format(version=version))


@pytest.fixture
def env(stack, tmp_path):
    plugins_dir = tmp_path / "plugins"
    _write(plugins_dir / "demo", 1)
    cfg = write_config(tmp_path, isolated_config_data("reload", plugin_dirs=[plugins_dir]))
    s = cfg.settings
    topics = [s.topics.results, s.topics.dlq] + [
        s.topics.invoke(p, prio) for p in ("demo", "newbie") for prio in ("normal", "high")
    ]
    ensure_topics(s, topics)
    store = RunStore(s)
    reader = ResultsReader(s)
    yield cfg, plugins_dir / "demo", PluginStates(store.client, s.redis.key_prefix), reader
    reader.close()
    store.close()
    remove_test_resources(s, topics)


def _send(cfg, plugin: str, params: dict):
    inv = _invocation(plugin, params)
    _produce(
        cfg.settings, [(cfg.settings.topics.invoke(plugin), inv.invocation_id.encode(), inv.model_dump_json().encode())]
    )
    return inv


def _serving(states: PluginStates, name: str, folder: Path, timeout: float = 60.0) -> dict:
    want = code_hash(folder)
    return wait_for(
        lambda: (st := states.get(name)) and st.get("code_hash") == want and st["state"] == "serving" and st,
        timeout=timeout,
        what=f"{name} serving code {want[:12]}",
    )


def _result(reader: ResultsReader, iid: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for key, value in reader.messages:
            if key == iid:
                return json.loads(value)
        reader.wait_for(len(reader.messages) + 1, timeout=max(0.1, deadline - time.monotonic()))
    raise AssertionError(f"no result for {iid}")


def test_the_bundled_demo_answers_version_1():
    with plugin_pool(load_plugin(EXAMPLES_DIR / "hot_reload_demo"), size=1) as pool:
        out = pool.call(_request({}), timeout=10)
        assert out.status == "success" and out.output["version"] == 1


def test_watcher_reports_a_settled_real_change_once(tmp_path):
    _write(tmp_path / "a", 1)
    watcher = FolderWatcher([tmp_path])
    assert watcher.poll() == ([], [])
    _write(tmp_path / "a", 2)
    assert watcher.poll() == ([], [])  # seen, not settled yet (debounce)
    assert watcher.poll() == ([(tmp_path / "a").resolve()], [])
    assert watcher.poll() == ([], [])
    _write(tmp_path / "b", 1)  # a new folder
    watcher.poll()
    assert watcher.poll() == ([(tmp_path / "b").resolve()], [])
    shutil.rmtree(tmp_path / "b")
    assert watcher.poll() == ([], [(tmp_path / "b").resolve()])


def test_v1_to_v2_while_an_invocation_runs(env):
    cfg, folder, states, reader = env
    with Runner(cfg):
        v1 = _serving(states, "demo", folder)
        slow = _send(cfg, "demo", {"seconds": 4})
        wait_for(lambda: (folder / f"started-{slow.invocation_id}").exists(), what="the slow call to start")
        _write(folder, 2)
        v2 = _serving(states, "demo", folder)
        assert v2["version"] == "2.0.0" and v2["code_hash"] != v1["code_hash"] and v2["loaded_at"] > v1["loaded_at"]
        quick = _send(cfg, "demo", {})
        new = _result(reader, quick.invocation_id)
        old = _result(reader, slow.invocation_id)
        # the running call finished on the old code; the new one ran on the new code, in another worker
        assert (old["output"]["version"], old["plugin_version"], old["code_hash"]) == (1, "1.0.0", v1["code_hash"])
        assert (new["output"]["version"], new["plugin_version"], new["code_hash"]) == (2, "2.0.0", v2["code_hash"])
        assert old["status"] == new["status"] == "success"
        old_pid = old["output"]["pid"]
        wait_for(lambda: not os.path.exists(f"/proc/{old_pid}"), timeout=15, what="the old worker to be stopped")


def test_broken_reloads_keep_v1_serving_and_a_fix_is_picked_up(env):
    cfg, folder, states, reader = env
    good_main = (folder / "main.py").read_text()
    with Runner(cfg):
        v1 = _serving(states, "demo", folder)
        for breakage, expected in [
            ({"main": "def run(:\n"}, "SyntaxError"),
            ({"main": "import no_such_module_here\n"}, "ModuleNotFoundError"),
            ({"manifest": '{"name": "demo", "entry_point": '}, "invalid JSON"),
        ]:
            before = (states.get("demo") or {}).get("error_at") or 0
            if "main" in breakage:
                (folder / "main.py").write_text(breakage["main"])
            else:
                (folder / "plugin.json").write_text(breakage["manifest"])
            st = wait_for(
                lambda: (s := states.get("demo")) and (s.get("error_at") or 0) > before and s,
                timeout=60,
                what=f"the {expected} to be recorded",
            )
            assert expected in st["last_error"], st["last_error"]
            assert st["state"] == "serving" and st["code_hash"] == v1["code_hash"]  # v1 still serves
            inv = _send(cfg, "demo", {})
            r = _result(reader, inv.invocation_id)
            assert r["status"] == "success" and r["output"]["version"] == 1, r
            if "manifest" in breakage:
                _write(folder, 1, main=good_main)  # restore the manifest before the next breakage

        out = CliRunner().invoke(cli, ["-c", str(cfg.path), "plugins", "list", "--json"])
        assert out.exit_code == 0, out.output
        listed = {p["name"]: p for p in json.loads(out.stdout)["plugins"]}
        assert listed["demo"]["state"] == "serving" and listed["demo"]["served_code_hash"] == v1["code_hash"]

        _write(folder, 2)  # fixed: the new version is served and the error is cleared
        st = _serving(states, "demo", folder)
        assert st["last_error"] is None and st["version"] == "2.0.0"
        inv = _send(cfg, "demo", {})
        assert _result(reader, inv.invocation_id)["output"]["version"] == 2


def test_a_new_plugin_folder_is_served_and_reload_restarts_workers(env):
    cfg, folder, states, reader = env
    with Runner(cfg):
        v1 = _serving(states, "demo", folder)
        first = _result(reader, _send(cfg, "demo", {}).invocation_id)

        out = CliRunner().invoke(cli, ["-c", str(cfg.path), "plugins", "reload", "demo"])
        assert out.exit_code == 0, out.output
        wait_for(lambda: states.get("demo")["loaded_at"] > v1["loaded_at"], timeout=15, what="the requested reload")
        again = _result(reader, _send(cfg, "demo", {}).invocation_id)
        assert again["output"]["pid"] != first["output"]["pid"]  # fresh workers, same code
        assert again["code_hash"] == first["code_hash"]

        newbie = folder.parent / "newbie"
        _write(newbie, 1)
        _serving(states, "newbie", newbie)
        r = _result(reader, _send(cfg, "newbie", {}).invocation_id, timeout=60)
        assert r["status"] == "success" and r["plugin"] == "newbie" and r["output"]["version"] == 1
