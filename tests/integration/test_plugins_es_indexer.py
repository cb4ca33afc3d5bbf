"""The bundled es_indexer example: Kafka -> runner -> plugin (own venv with `redis`) -> document read back."""

from __future__ import annotations

import json
import threading
import uuid

import pytest
import redis

from plugins.execution import item_outcomes
from plugins.pool import CallOutcome, WorkerPool
from plugins.runner import run_runner
from schemas.config import Config
from schemas.rules import RulesConfig
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import example_plugin, isolated_settings, plugin_pool, remove_test_resources
from tests.support.plugins import ResultsReader, new_invocation, produce_messages


@pytest.fixture
def settings(stack):
    s = isolated_settings("es")
    topics = [s.topics.invoke("es_indexer"), s.topics.results, s.topics.dlq]
    ensure_topics(s, topics)
    yield s
    remove_test_resources(s, [*topics, s.topics.invoke("es_indexer", "high")])


def _doc(client: redis.Redis, prefix: str, doc_id: str) -> dict | None:
    raw = client.hgetall(f"{prefix}:documents:{doc_id}")
    if not raw:
        return None
    return {
        "_source": json.loads(raw[b"_source"]),
        "_version": int(raw[b"_version"]),
        "_invocation_id": raw[b"_invocation_id"].decode(),
    }


def test_documents_indexed_through_the_runner_once_per_invocation(settings):
    prefix = f"{settings.redis.key_prefix}:es"
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    common = {"key_prefix": prefix, "redis_url": settings.redis.url.get_secret_value()}
    first = new_invocation("es_indexer", {**common, "doc_id": "42", "document": {"title": "hello", "n": [1, 2.5]}})
    second = new_invocation("es_indexer", {**common, "doc_id": "42", "document": {"title": "again"}})
    gone = new_invocation("es_indexer", {**common, "doc_id": "7", "document": {"title": "short-lived"}})
    delete = new_invocation("es_indexer", {**common, "doc_id": "7", "op": "delete"})
    topic = settings.topics.invoke("es_indexer")

    def send(*invs):
        produce_messages(settings, [(topic, i.invocation_id.encode(), i.model_dump_json().encode()) for i in invs])

    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=run_runner,
        args=(Config(path=None, settings=settings, rules=RulesConfig()), stop),
        kwargs={"plugins": ["es_indexer"], "ready": ready, "shutdown_grace": 2.0},
    )
    reader = ResultsReader(settings)
    thread.start()
    try:
        assert ready.wait(180), "runner did not start (venv with redis, workers)"
        send(first)
        ((key, value),) = reader.wait_for(1)
        result = json.loads(value)
        assert key == first.invocation_id and result["status"] == "success", result
        assert result["output"] == {"_index": "documents", "_id": "42", "result": "created", "_version": 1}
        assert _doc(client, prefix, "42") == {
            "_source": {"title": "hello", "n": [1, 2.5]},
            "_version": 1,
            "_invocation_id": first.invocation_id,
        }

        send(second, gone)
        results = {k: json.loads(v) for k, v in reader.wait_for(3)}
        assert results[second.invocation_id]["output"]["result"] == "updated"
        assert results[gone.invocation_id]["output"]["result"] == "created"
        send(delete)
        results = {k: json.loads(v) for k, v in reader.wait_for(4)}
        assert results[delete.invocation_id]["output"] == {
            "_index": "documents",
            "_id": "7",
            "result": "deleted",
            "_version": 2,
        }
        assert _doc(client, prefix, "7") is None

        send(first)  # redelivered: done, so not run again; its stored result is published again
        again = reader.wait_for(5)[4]
        assert again[0] == first.invocation_id and json.loads(again[1])["output"]["result"] == "created"
        assert _doc(client, prefix, "42") == {
            "_source": {"title": "again"},
            "_version": 2,
            "_invocation_id": second.invocation_id,
        }
    finally:
        stop.set()
        thread.join(60)
        reader.close()
        client.close()
    assert not thread.is_alive()


def call_one(pool: WorkerPool, request: dict) -> CallOutcome:
    """One invocation through the bulk entry point: a batch of one, as the runner sends it."""
    (outcome,) = item_outcomes(pool.call({"invocation_id": None, "batch": [request]}, timeout=30), 1)
    return outcome


def test_a_second_run_of_one_invocation_changes_nothing(stack):
    """Even when the runner does run an invocation twice (two copies in flight), the plugin writes once."""
    settings = isolated_settings("es")
    prefix = f"{settings.redis.key_prefix}:es"
    url = settings.redis.url.get_secret_value()
    iid = str(uuid.uuid4())
    request = {
        "invocation_id": iid,
        "params": {
            "doc_id": "a",
            "document": {"v": 1},
            "key_prefix": prefix,
            "redis_url": url,
            "op": "index",
            "index": "documents",
        },
        "context": {"invocation_id": iid, "plugin": "es_indexer", "attempt": 1, "trigger": {"kind": "manual"}},
    }
    client = redis.Redis.from_url(url)
    try:
        with plugin_pool(example_plugin("es_indexer"), size=2) as pool:
            outs = [call_one(pool, request) for _ in range(2)]
            assert [o.output["result"] for o in outs] == ["created", "noop"], [o.error for o in outs]
            assert [o.output["_version"] for o in outs] == [1, 1]
            other = {**request, "params": {**request["params"], "document": {"v": 2}}}
            other["context"] = {**request["context"], "invocation_id": "another"}
            assert call_one(pool, other).output["result"] == "updated"
            assert _doc(client, prefix, "a") == {"_source": {"v": 2}, "_version": 2, "_invocation_id": "another"}
            bad = {**request, "params": {**request["params"], "op": "upsert"}}
            out = call_one(pool, bad)
            assert out.status == "failed" and "unknown op" in out.error["message"]
    finally:
        client.close()
        remove_test_resources(settings, [])


def test_an_older_change_never_overwrites_a_newer_one_nor_brings_a_deleted_row_back(stack):
    """Bound by name from row changes (row, operation, table, event_id), in the wrong order."""
    settings = isolated_settings("es")
    prefix = f"{settings.redis.key_prefix}:es"
    url = settings.redis.url.get_secret_value()

    def call(pool, operation: str, row: dict, pos: int):
        iid = str(uuid.uuid4())
        params = {"row": row, "operation": operation, "table": "teachers", "key_prefix": prefix, "redis_url": url}
        params["event_id"] = f"1:mysql-bin.000003:{pos}:0"
        context = {"invocation_id": iid, "plugin": "es_indexer", "attempt": 1, "trigger": {"kind": "cdc"}}
        out = call_one(pool, {"invocation_id": iid, "params": params, "context": context})
        assert out.status == "success", out.error
        return out.output

    client = redis.Redis.from_url(url)
    try:
        with plugin_pool(example_plugin("es_indexer"), size=1) as pool:
            assert call(pool, "UPDATE", {"id": 9, "n": 2}, 2000)["result"] == "created"
            assert call(pool, "INSERT", {"id": 9, "n": 1}, 1000) == {
                "_index": "teachers",
                "_id": "9",
                "result": "stale",
                "_version": 1,
            }
            assert json.loads(client.hget(f"{prefix}:teachers:9", "_source")) == {"id": 9, "n": 2}
            assert call(pool, "DELETE", {"id": 9, "n": 2}, 3000)["result"] == "deleted"
            assert call(pool, "UPDATE", {"id": 9, "n": 3}, 2500)["result"] == "stale"  # older than the delete
            assert client.hget(f"{prefix}:teachers:9", "_source") is None
            assert call(pool, "INSERT", {"id": 9, "n": 4}, 4000) == {
                "_index": "teachers",
                "_id": "9",
                "result": "created",
                "_version": 3,
            }
    finally:
        client.close()
        remove_test_resources(settings, [])
