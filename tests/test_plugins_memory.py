"""memory_limit_mb: a plugin that allocates past its limit fails with a clear result; nothing else does."""

from __future__ import annotations

import json

import pytest

from plugins.registry import load_plugin
from plugins.store import RunStore
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, plugin_pool, remove_test_resources, write_config
from tests.test_plugins_pool import _request
from tests.test_plugins_retries import Runner
from tests.test_plugins_runner import ResultsReader, _invocation, _produce

HOG_MAIN = """
import resource

def run(mode="small", mb=50):
    if mode == "bytes":  # one 2 GB allocation
        return len(bytearray(mb * 1024 * 1024))
    if mode == "grow":  # touched memory, 10 MB at a time
        chunks = []
        for _ in range(mb // 10):
            chunks.append(b"x" * (10 * 1024 * 1024))
        return len(chunks)
    data = b"y" * (mb * 1024 * 1024)
    return {"mb": len(data) // (1024 * 1024), "limit": resource.getrlimit(resource.RLIMIT_DATA)[0]}
"""


def _hog(base, limit_mb: int | None = 256):
    folder = base / "hog"
    folder.mkdir(parents=True)
    manifest = {
        "name": "hog",
        "entry_point": "main.run",
        "concurrency": 1,
        "parameters": {"mode": {"type": "string"}, "mb": {"type": "integer"}},
    }
    if limit_mb is not None:
        manifest["memory_limit_mb"] = limit_mb
    (folder / "plugin.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(HOG_MAIN)
    return load_plugin(folder)


@pytest.mark.parametrize("mode", ["bytes", "grow"])
def test_allocating_2gb_with_a_256mb_limit_fails_and_the_worker_is_replaced(tmp_path, mode):
    with plugin_pool(_hog(tmp_path)) as pool:
        assert pool.startup_error is None
        (before,) = pool.pids()
        out = pool.call(_request({"mode": mode, "mb": 2048}), timeout=30)
        assert out.status == "failed"
        assert out.error["type"] == "MemoryLimitExceeded", out.error
        assert "memory limit of 256 MB" in out.error["message"]
        assert out.worker_pid == before and before not in pool.pids() and len(pool.pids()) == 1
        ok = pool.call(_request({"mode": "small", "mb": 50}), timeout=30)  # the fresh worker works, under its limit
        assert ok.status == "success", ok.error
        assert ok.output == {"mb": 50, "limit": 256 * 1024 * 1024}


def test_without_a_limit_nothing_is_capped(tmp_path):
    with plugin_pool(_hog(tmp_path, limit_mb=None)) as pool:
        out = pool.call(_request({"mode": "small", "mb": 300}), timeout=30)
        assert out.status == "success" and out.output["mb"] == 300 and out.output["limit"] == -1  # RLIM_INFINITY


def test_a_hog_in_the_runner_leaves_other_plugins_alone(stack, tmp_path):
    plugins_dir = tmp_path / "plugins"
    _hog(plugins_dir)
    echo = plugins_dir / "echo"
    echo.mkdir()
    (echo / "plugin.json").write_text(json.dumps({"name": "echo", "entry_point": "main.run", "concurrency": 1}))
    (echo / "main.py").write_text("def run():\n    return 'still fine'\n")
    cfg = write_config(tmp_path, isolated_config_data("mem", plugin_dirs=[plugins_dir]))
    s = cfg.settings
    topics = [s.topics.invoke("hog"), s.topics.invoke("echo"), s.topics.results, s.topics.dlq]
    ensure_topics(s, topics)
    hog1, hog2, ok = (
        _invocation("hog", {"mode": "bytes", "mb": 2048}),
        _invocation("hog", {"mode": "small"}),
        _invocation("echo", {}),
    )
    # One key for both hog calls: one partition, so the small one runs after the 2 GB one.
    _produce(
        s, [(s.topics.invoke(i.plugin), i.plugin.encode(), i.model_dump_json().encode()) for i in (hog1, hog2, ok)]
    )
    reader = ResultsReader(s)
    store = RunStore(s)
    try:
        with Runner(cfg):
            by_id = {k: json.loads(v) for k, v in reader.wait_for(3)}
        assert by_id[hog1.invocation_id]["status"] == "failed"
        assert by_id[hog1.invocation_id]["error"]["type"] == "MemoryLimitExceeded"
        assert by_id[hog2.invocation_id]["status"] == "success"  # on the replacement worker
        assert by_id[hog2.invocation_id]["worker_pid"] != by_id[hog1.invocation_id]["worker_pid"]
        assert by_id[ok.invocation_id]["status"] == "success" and by_id[ok.invocation_id]["output"] == "still fine"
    finally:
        reader.close()
        store.close()
        remove_test_resources(s, [*topics, s.topics.invoke("hog", "high"), s.topics.invoke("echo", "high")])
