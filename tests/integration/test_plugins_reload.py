"""Hot reload in a running runner (real Kafka, Redis, worker processes, files on disk)."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from console.cli import cli
from plugins.state import PluginStates
from plugins.store import RunStore
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.plugins import (
    ResultsReader,
    Runner,
    result_for,
    send_invocation,
    wait_serving,
    write_demo_plugin,
)


@pytest.fixture
def env(stack, tmp_path):
    plugins_dir = tmp_path / "plugins"
    write_demo_plugin(plugins_dir / "demo", 1)
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


def test_v1_to_v2_while_an_invocation_runs(env):
    cfg, folder, states, reader = env
    with Runner(cfg):
        v1 = wait_serving(states, "demo", folder)
        slow = send_invocation(cfg, "demo", {"seconds": 4})
        wait_for(lambda: (folder / f"started-{slow.invocation_id}").exists(), what="the slow call to start")
        write_demo_plugin(folder, 2)
        v2 = wait_serving(states, "demo", folder)
        assert v2["version"] == "2.0.0" and v2["code_hash"] != v1["code_hash"] and v2["loaded_at"] > v1["loaded_at"]
        quick = send_invocation(cfg, "demo", {})
        new = result_for(reader, quick.invocation_id)
        old = result_for(reader, slow.invocation_id)
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
        v1 = wait_serving(states, "demo", folder)
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
                lambda before=before: (s := states.get("demo")) and (s.get("error_at") or 0) > before and s,
                timeout=60,
                what=f"the {expected} to be recorded",
            )
            assert expected in st["last_error"], st["last_error"]
            assert st["state"] == "serving" and st["code_hash"] == v1["code_hash"]  # v1 still serves
            inv = send_invocation(cfg, "demo", {})
            r = result_for(reader, inv.invocation_id)
            assert r["status"] == "success" and r["output"]["version"] == 1, r
            if "manifest" in breakage:
                write_demo_plugin(folder, 1, main=good_main)  # restore the manifest before the next breakage

        out = CliRunner().invoke(cli, ["-c", str(cfg.path), "plugins", "list", "--json"])
        assert out.exit_code == 0, out.output
        listed = {p["name"]: p for p in json.loads(out.stdout)["plugins"]}
        assert listed["demo"]["state"] == "serving" and listed["demo"]["served_code_hash"] == v1["code_hash"]

        write_demo_plugin(folder, 2)  # fixed: the new version is served and the error is cleared
        st = wait_serving(states, "demo", folder)
        assert st["last_error"] is None and st["version"] == "2.0.0"
        inv = send_invocation(cfg, "demo", {})
        assert result_for(reader, inv.invocation_id)["output"]["version"] == 2


def test_a_new_plugin_folder_is_served_and_reload_restarts_workers(env):
    cfg, folder, states, reader = env
    with Runner(cfg):
        v1 = wait_serving(states, "demo", folder)
        first = result_for(reader, send_invocation(cfg, "demo", {}).invocation_id)

        out = CliRunner().invoke(cli, ["-c", str(cfg.path), "plugins", "reload", "demo"])
        assert out.exit_code == 0, out.output
        wait_for(lambda: states.get("demo")["loaded_at"] > v1["loaded_at"], timeout=15, what="the requested reload")
        again = result_for(reader, send_invocation(cfg, "demo", {}).invocation_id)
        assert again["output"]["pid"] != first["output"]["pid"]  # fresh workers, same code
        assert again["code_hash"] == first["code_hash"]

        newbie = folder.parent / "newbie"
        write_demo_plugin(newbie, 1)
        wait_serving(states, "newbie", newbie)
        r = result_for(reader, send_invocation(cfg, "newbie", {}).invocation_id, timeout=60)
        assert r["status"] == "success" and r["plugin"] == "newbie" and r["output"]["version"] == 1
