"""Hot reload of plugins without a runner: the bundled demo plugin and the folder watcher (a running
runner: tests/integration/test_plugins_reload.py)."""

from __future__ import annotations

import shutil

from plugins.registry import load_plugin
from plugins.watcher import FolderWatcher
from tests.support import EXAMPLES_DIR, plugin_pool
from tests.support.plugins import (
    worker_request,
    write_demo_plugin,
)


def test_the_bundled_demo_answers_version_1():
    with plugin_pool(load_plugin(EXAMPLES_DIR / "hot_reload_demo"), size=1) as pool:
        out = pool.call(worker_request({}), timeout=10)
        assert out.status == "success" and out.output["version"] == 1


def test_watcher_reports_a_settled_real_change_once(tmp_path):
    write_demo_plugin(tmp_path / "a", 1)
    watcher = FolderWatcher([tmp_path])
    assert watcher.poll() == ([], [])
    write_demo_plugin(tmp_path / "a", 2)
    assert watcher.poll() == ([], [])  # seen, not settled yet (debounce)
    assert watcher.poll() == ([(tmp_path / "a").resolve()], [])
    assert watcher.poll() == ([], [])
    write_demo_plugin(tmp_path / "b", 1)  # a new folder
    watcher.poll()
    assert watcher.poll() == ([(tmp_path / "b").resolve()], [])
    shutil.rmtree(tmp_path / "b")
    assert watcher.poll() == ([], [(tmp_path / "b").resolve()])
