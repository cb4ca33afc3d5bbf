"""memory_limit_mb in a running runner: a plugin that allocates past its limit fails with a clear result;
the other plugins do not notice (real Kafka and Redis)."""

from __future__ import annotations

import json

from plugins.store import RunStore
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, remove_test_resources, write_config
from tests.support.plugins import ResultsReader, Runner, hog_plugin, new_invocation, produce_messages


def test_a_hog_in_the_runner_leaves_other_plugins_alone(stack, tmp_path):
    plugins_dir = tmp_path / "plugins"
    hog_plugin(plugins_dir)
    echo = plugins_dir / "echo"
    echo.mkdir()
    (echo / "plugin.json").write_text(json.dumps({"name": "echo", "entry_point": "main.run", "concurrency": 1}))
    (echo / "main.py").write_text("def run():\n    return 'still fine'\n")
    cfg = write_config(tmp_path, isolated_config_data("mem", plugin_dirs=[plugins_dir]))
    s = cfg.settings
    topics = [s.topics.invoke("hog"), s.topics.invoke("echo"), s.topics.results, s.topics.dlq]
    ensure_topics(s, topics)
    hog1, hog2, ok = (
        new_invocation("hog", {"mode": "bytes", "mb": 2048}),
        new_invocation("hog", {"mode": "small"}),
        new_invocation("echo", {}),
    )
    # One key for both hog calls: one partition, so the small one runs after the 2 GB one.
    produce_messages(
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
