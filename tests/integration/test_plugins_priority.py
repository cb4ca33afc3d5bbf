"""High-priority invocations overtake a backlog of normal ones (real Kafka, real runner)."""

from __future__ import annotations

import json

from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, remove_test_resources, write_config
from tests.support.plugins import ResultsReader, Runner, new_invocation, produce_messages

BACKLOG = 300


def test_high_priority_overtakes_a_backlog(stack, tmp_path):
    plugins_dir = tmp_path / "plugins"
    folder = plugins_dir / "slowpoke"
    folder.mkdir(parents=True)
    (folder / "plugin.json").write_text(
        json.dumps(
            {"name": "slowpoke", "entry_point": "main.run", "concurrency": 1, "parameters": {"n": {"type": "integer"}}}
        )
    )
    (folder / "main.py").write_text("import time\n\ndef run(n=0):\n    time.sleep(0.02)\n    return n\n")
    cfg = write_config(tmp_path, isolated_config_data("prio", plugin_dirs=[plugins_dir]))
    s = cfg.settings
    normal_topic, high_topic = s.topics.invoke("slowpoke"), s.topics.invoke("slowpoke", "high")
    assert high_topic == normal_topic + ".high"
    topics = [normal_topic, high_topic, s.topics.results, s.topics.dlq]
    ensure_topics(s, topics)
    backlog = [new_invocation("slowpoke", {"n": i}) for i in range(BACKLOG)]
    urgent = new_invocation("slowpoke", {"n": -1}).model_copy(update={"priority": "high"})
    produce_messages(s, [(normal_topic, i.invocation_id.encode(), i.model_dump_json().encode()) for i in backlog])
    reader = ResultsReader(s)
    try:
        with Runner(cfg):
            # The runner is busy with the backlog (in its lane and in Kafka) when the urgent one arrives.
            started = len(reader.wait_for(20))
            produce_messages(s, [(high_topic, urgent.invocation_id.encode(), urgent.model_dump_json().encode())])
            reader.wait_for(BACKLOG + 1, timeout=120)
        order = [k for k, _ in reader.messages]
        position = order.index(urgent.invocation_id)
        # FIFO would run it after the rest of the backlog (~5 s of work, position 300); it overtakes all
        # that is queued and only waits for Kafka to deliver it (a fetch round, ~0.5 s = ~25 calls here).
        assert position < started + 100, f"the high-priority one finished at position {position} of {len(order)}"
        assert all(json.loads(v)["status"] == "success" for _, v in reader.messages)
    finally:
        reader.close()
        remove_test_resources(s, topics)
