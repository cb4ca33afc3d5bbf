"""Hot reload in a running runner (real Kafka, Redis, worker processes, files on disk)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from console.cli import cli
from plugins.state import PluginStates
from plugins.store import RunStore
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import (
    EXAMPLES_DIR,
    REPO_ROOT,
    isolated_config_data,
    remove_test_resources,
    wait_for,
    write_config,
)
from tests.support.plugins import (
    ResultsReader,
    Runner,
    all_committed,
    new_invocation,
    produce_messages,
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


def test_reload_while_every_worker_is_busy_serves_the_next_at_once(env):
    cfg, folder, states, reader = env
    with Runner(cfg):
        v1 = wait_serving(states, "demo", folder)
        slow = [send_invocation(cfg, "demo", {"seconds": 8}) for _ in range(2)]  # both of its workers
        wait_for(
            lambda: all((folder / f"started-{inv.invocation_id}").exists() for inv in slow),
            timeout=30,
            what="both slow calls to start",
        )
        out = CliRunner().invoke(cli, ["-c", str(cfg.path), "plugins", "reload", "demo"])
        assert out.exit_code == 0, out.output
        wait_for(lambda: states.get("demo")["loaded_at"] > v1["loaded_at"], timeout=15, what="the requested reload")
        quick = send_invocation(cfg, "demo", {})
        r = result_for(reader, quick.invocation_id, timeout=30)
        old = [result_for(reader, inv.invocation_id) for inv in slow]
        assert all(x["status"] == "success" for x in [r, *old]), [r, *old]
        # it ran on a new worker before either old call ended: it did not wait for a place in the old pool
        assert r["output"]["pid"] not in {x["output"]["pid"] for x in old}
        assert r["timings"]["finished_at"] < min(x["timings"]["finished_at"] for x in old)


# -- reloads of an idle or busy plugin, in a real runner process ------------------------------------
# Found by the dashboard's browser test: a reload of a plugin that had not run anything yet left its
# next invocation unrun until the runner stopped (lane threads still holding places in the old pool
# took the job, while the threads holding every place of the new pool waited for a job).

NAME = "hot_reload_demo"


@pytest.fixture
def demo_runner(stack, tmp_path):
    """The bundled hot_reload_demo (a copy) served by a `cdcflow runners run` process."""
    folder = tmp_path / "plugins" / "hot_reload_demo"
    shutil.copytree(EXAMPLES_DIR / "hot_reload_demo", folder, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = write_config(tmp_path, isolated_config_data("reloadidle", plugin_dirs=[folder.parent]))
    s = cfg.settings
    topics = [s.topics.results, s.topics.dlq, s.topics.invoke(NAME), s.topics.invoke(NAME, "high")]
    ensure_topics(s, topics)
    store = RunStore(s)
    reader = ResultsReader(s)
    with (tmp_path / "runner.log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "console.cli", "-c", str(cfg.path), "runners", "run"],
            cwd=REPO_ROOT,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        states = PluginStates(store.client, s.redis.key_prefix)
        yield cfg, states, reader, wait_serving(states, NAME, folder)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.close()
        store.close()
        remove_test_resources(s, topics)


def _reload(cfg, states: PluginStates, after: dict) -> dict:
    out = CliRunner().invoke(cli, ["-c", str(cfg.path), "plugins", "reload", NAME])
    assert out.exit_code == 0, out.output
    return wait_for(
        lambda: (st := states.get(NAME)) and st["loaded_at"] > after["loaded_at"] and st,
        timeout=30,
        what="the requested reload",
    )


def _results_by_id(reader: ResultsReader) -> dict[str, list[dict]]:
    by_id: dict[str, list[dict]] = {}
    for key, value in reader.messages:
        by_id.setdefault(key, []).append(json.loads(value))
    return by_id


def test_reload_before_the_first_invocation_then_it_runs(demo_runner):
    cfg, states, reader, v1 = demo_runner
    _reload(cfg, states, v1)  # nothing has run yet
    for _ in range(3):  # each lane thread that held a place in the old pool takes its turn
        inv = send_invocation(cfg, NAME, {})
        r = result_for(reader, inv.invocation_id, timeout=15)
        assert r["status"] == "success" and r["output"]["invocation_id"] == inv.invocation_id, r


def test_reload_while_idle_after_running_then_the_next_runs(demo_runner):
    cfg, states, reader, v1 = demo_runner
    # A call long enough that the pool is not pipelined (one place per worker), as for most plugins.
    before = result_for(reader, send_invocation(cfg, NAME, {"seconds": 0.05}).invocation_id, timeout=30)
    v2 = _reload(cfg, states, v1)
    after = [send_invocation(cfg, NAME, {"seconds": 0.05}) for _ in range(3)]
    pids = {result_for(reader, inv.invocation_id, timeout=15)["output"]["pid"] for inv in after}
    assert before["output"]["pid"] not in pids  # served by the new workers
    _reload(cfg, states, v2)  # and once more, now that the new pool has run something
    inv = send_invocation(cfg, NAME, {})
    assert result_for(reader, inv.invocation_id, timeout=15)["status"] == "success"


def test_reload_with_invocations_queued_runs_each_once(demo_runner):
    cfg, states, reader, v1 = demo_runner
    store = RunStore(cfg.settings)
    try:
        queued = [new_invocation(NAME, {"seconds": 1}) for _ in range(8)]  # 2 workers: 2 run, 6 wait
        topic = cfg.settings.topics.invoke(NAME)
        messages = [(topic, i.invocation_id.encode(), i.model_dump_json().encode()) for i in queued]
        produce_messages(cfg.settings, messages)  # in one batch: a producer each would take seconds
        # The first done (in any partition), watched in Redis: the results reader only joins its group
        # (seconds) when first polled.
        wait_for(lambda: store.seen([(i.invocation_id, 1) for i in queued])[0], timeout=30, what="a first one done")
        _reload(cfg, states, v1)
        late = [send_invocation(cfg, NAME, {}) for _ in range(2)]
        results = [result_for(reader, inv.invocation_id, timeout=30) for inv in queued + late]
        assert all(r["status"] == "success" for r in results), results
        # the queued ones ran on both pools: the old one's 2 workers, then the new one's
        assert len({r["output"]["pid"] for r in results[: len(queued)]}) > 2
        with pytest.raises(AssertionError):  # and no second result of any of them comes later
            reader.wait_for(len(reader.messages) + 1, timeout=3)
        by_id = _results_by_id(reader)
        assert all(len(by_id[inv.invocation_id]) == 1 for inv in queued + late), by_id
        done, _ = store.seen([(inv.invocation_id, 1) for inv in queued + late])
        assert done == {inv.invocation_id for inv in queued + late}
    finally:
        store.close()
    wait_for(lambda: all_committed(cfg, cfg.settings.topics.invoke(NAME)), timeout=15, what="every offset committed")
