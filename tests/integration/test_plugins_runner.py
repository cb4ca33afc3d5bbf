"""The runner end to end against the real Kafka and Redis of the local stack."""

from __future__ import annotations

import json
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from plugins.runner import run_runner
from plugins.store import RunStore
from schemas.config import Config
from schemas.rules import RulesConfig
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_settings, remove_test_resources
from tests.support.plugins import ResultsReader, new_invocation, produce_messages

PLUGINS = ["echo", "data_processor"]


@pytest.fixture
def settings(stack):
    s = isolated_settings("runner")
    topics = [s.topics.invoke(p) for p in PLUGINS] + [s.topics.results]
    ensure_topics(s, topics)
    yield s
    remove_test_resources(s, [*topics, *(s.topics.invoke(p, "high") for p in PLUGINS), s.topics.dlq])


class RunnerThread:
    def __init__(self, settings):
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.code: list[int] = []
        self.thread = threading.Thread(
            target=lambda: self.code.append(
                run_runner(
                    Config(path=None, settings=settings, rules=RulesConfig()),
                    self.stop,
                    plugins=PLUGINS,
                    ready=self.ready,
                )
            )
        )

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(90), "runner did not start"
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(60)
        assert not self.thread.is_alive(), "runner did not stop"


def _positions(settings, topic: str) -> dict[int, int]:
    """The runners' committed position per partition (0 when nothing is committed)."""
    c = Consumer(settings.kafka_config(**{"group.id": settings.runners.group_id}))
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        committed = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in committed}
    finally:
        c.close()


def _committed(settings, topic: str) -> int:
    """Sum of the committed positions over the topic's partitions (= messages committed, from offset 0)."""
    return sum(_positions(settings, topic).values())


def test_runner_end_to_end(settings):
    echo = new_invocation("echo", {"message": "hello", "data": {"k": [1, 2]}})
    dp = new_invocation("data_processor", {"operation": "report", "teacher_id": 42, "lessons": "2500"})
    bad = new_invocation("data_processor", {"operation": "report", "colour": "red", "lessons": "many"})
    malformed_id = str(uuid.uuid4())
    echo_topic, dp_topic = settings.topics.invoke("echo"), settings.topics.invoke("data_processor")
    produce_messages(
        settings,
        [
            (echo_topic, echo.invocation_id.encode(), echo.model_dump_json().encode()),
            (dp_topic, dp.invocation_id.encode(), dp.model_dump_json().encode()),
            (dp_topic, bad.invocation_id.encode(), bad.model_dump_json().encode()),
            (echo_topic, b"junk", json.dumps({"invocation_id": malformed_id, "plugin": "echo"}).encode()),
        ],
    )
    reader = ResultsReader(settings)
    store = RunStore(settings)
    try:
        with RunnerThread(settings):
            messages = reader.wait_for(4)
            by_id = {k: json.loads(v) for k, v in messages}
            assert set(by_id) == {echo.invocation_id, dp.invocation_id, bad.invocation_id, malformed_id}

            r = by_id[echo.invocation_id]
            assert r["status"] == "success" and r["plugin"] == "echo" and r["plugin_version"] == "1.0.0"
            assert r["output"]["message"] == "hello" and r["output"]["data"] == {"k": [1, 2]}
            assert r["output"]["invocation_id"] == echo.invocation_id
            assert r["trigger_kind"] == "manual" and r["code_hash"]
            t = r["timings"]
            assert t["created_at"] <= t["consumed_at"] <= t["sent_at"] <= t["entry_called_at"] <= t["received_at"]

            r = by_id[dp.invocation_id]
            assert r["status"] == "success", r["error"]
            assert r["output"]["teacher_id"] == "42"  # coerced to the declared string type
            assert r["output"]["lessons_pretty"] == "2,500" and r["output"]["runner_packages_visible"] == []

            r = by_id[bad.invocation_id]
            assert r["status"] == "rejected" and r["error"]["type"] == "ParamError"
            assert "colour: unknown parameter" in r["error"]["message"]
            assert "lessons: expected integer" in r["error"]["message"]

            r = by_id[malformed_id]
            assert r["status"] == "rejected" and r["error"]["type"] == "InvalidInvocation"
            assert "trigger" in r["error"]["message"] and echo_topic in r["error"]["message"]

            # Redis has the same results, byte for byte what was published
            for iid, payload in messages:
                assert store.get_raw(iid) == payload
            assert store.done_ids(by_id) == set(by_id)
            assert {x.invocation_id for x in store.list(plugin="data_processor")} == {
                dp.invocation_id,
                bad.invocation_id,
            }

            # A redelivered, finished invocation is not run again: its stored result is re-published as is.
            produce_messages(settings, [(echo_topic, echo.invocation_id.encode(), echo.model_dump_json().encode())])
            messages = reader.wait_for(5)
            assert messages[4] == (echo.invocation_id, store.get_raw(echo.invocation_id))

            # Everything consumed gets committed (only after its result was stored and published).
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and (
                _committed(settings, echo_topic),
                _committed(settings, dp_topic),
            ) != (3, 2):
                time.sleep(0.3)
            assert (_committed(settings, echo_topic), _committed(settings, dp_topic)) == (3, 2)
    finally:
        reader.close()
        store.close()


def test_shutdown_abandons_running_calls_without_committing_them(settings):
    hang = new_invocation("echo", {"mode": "sleep", "seconds": 30})
    quick = new_invocation("echo", {"message": "quick"})
    topic = settings.topics.invoke("echo")
    (hang_partition, hang_offset), _ = produce_messages(
        settings,
        [
            (topic, hang.invocation_id.encode(), hang.model_dump_json().encode()),
            (topic, quick.invocation_id.encode(), quick.model_dump_json().encode()),
        ],
    )
    store = RunStore(settings)
    try:
        runner = RunnerThread(settings)
        runner.thread = threading.Thread(
            target=lambda: runner.code.append(
                run_runner(
                    Config(path=None, settings=settings, rules=RulesConfig()),
                    runner.stop,
                    plugins=["echo"],
                    ready=runner.ready,
                    shutdown_grace=0.5,
                )
            )
        )
        with runner:
            deadline = time.monotonic() + 60
            while store.get(quick.invocation_id) is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert store.get(quick.invocation_id).status == "success"
            time.sleep(0.5)
        assert runner.code == [0]
        assert store.get(hang.invocation_id) is None  # abandoned, not recorded as a failure
        assert not store.is_done(hang.invocation_id)
        # the abandoned message is not covered by a commit: it will be redelivered
        assert _positions(settings, topic)[hang_partition] <= hang_offset
    finally:
        store.close()


def test_a_broken_plugin_does_not_stop_the_others(settings, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "plugin.json").write_text(json.dumps({"name": "broken", "entry_point": "main.run"}))
    (broken / "main.py").write_text("raise RuntimeError('cannot import me')\n")
    bad_manifest = tmp_path / "bad_manifest"
    bad_manifest.mkdir()
    (bad_manifest / "plugin.json").write_text('{"name": "bad_manifest"')
    settings.runners.plugin_dirs = [*settings.runners.plugin_dirs, tmp_path]
    echo = new_invocation("echo", {"message": "still here"})
    produce_messages(
        settings, [(settings.topics.invoke("echo"), echo.invocation_id.encode(), echo.model_dump_json().encode())]
    )
    reader = ResultsReader(settings)
    runner = RunnerThread(settings)
    runner.thread = threading.Thread(
        target=lambda: runner.code.append(
            run_runner(
                Config(path=None, settings=settings, rules=RulesConfig()),
                runner.stop,
                plugins=["echo", "broken"],
                ready=runner.ready,
            )
        )
    )
    try:
        with runner:
            ((iid, payload),) = reader.wait_for(1)
            assert iid == echo.invocation_id and json.loads(payload)["status"] == "success"
    finally:
        reader.close()
    assert runner.code == [0]


def test_an_output_too_large_for_kafka_is_published_without_it(settings, tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    (big / "plugin.json").write_text(
        json.dumps(
            {"name": "big", "entry_point": "main.run", "parameters": {"size": {"type": "integer", "required": True}}}
        )
    )
    (big / "main.py").write_text("def run(size):\n    return {'blob': 'x' * size}\n")
    settings.runners.plugin_dirs = [tmp_path]
    topic = settings.topics.invoke("big")
    ensure_topics(settings, [topic])
    inv = new_invocation("big", {"size": 3_000_000})
    produce_messages(settings, [(topic, inv.invocation_id.encode(), inv.model_dump_json().encode())])
    reader = ResultsReader(settings)
    store = RunStore(settings)
    runner = RunnerThread(settings)
    runner.thread = threading.Thread(
        target=lambda: runner.code.append(
            run_runner(Config(path=None, settings=settings, rules=RulesConfig()), runner.stop, ready=runner.ready)
        )
    )
    try:
        with runner:
            ((iid, payload),) = reader.wait_for(1)
            published = json.loads(payload)
            assert iid == inv.invocation_id and published["status"] == "success"
            assert published["output"] is None and published["output_truncated"]["bytes"] > 3_000_000
            assert len(store.get(iid).output["blob"]) == 3_000_000  # the run history keeps all of it
    finally:
        reader.close()
        store.close()
        remove_test_resources(settings, [topic, settings.topics.invoke("big", "high"), settings.topics.dlq])
