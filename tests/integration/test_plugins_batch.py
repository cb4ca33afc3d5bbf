"""Batch plugins in a real runner (threads of this process, real Kafka, Redis and worker processes):
plugin.json `batch` hands the entry point lists of invocations, and each item still gets its own
result record, retries, dead letter and status (issue 15, item 3)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plugins.runner_ops import RunnerOps
from plugins.store import RunStore
from schemas.config import Config
from schemas.invocation import Invocation
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.plugins import ResultsReader, Runner, all_committed, new_invocation, produce_messages

# Each call appends the invocation ids it got to calls.log (one JSON list a line), so the test knows
# which items shared a call. `mode` per item: ok, fail (this item's result is an exception), raise
# (the whole call raises), short (the call answers one result too few), sleep (past the timeout).
MAIN = """
import json, time


def run(items):
    modes = [item["params"].get("mode", "ok") for item in items]
    with open("calls.log", "a") as fh:
        fh.write(json.dumps([item["context"]["invocation_id"] for item in items]) + "\\n")
    if "raise" in modes:
        raise RuntimeError("the whole batch fails")
    if "sleep" in modes:
        time.sleep(5)
    out = []
    for item, mode in zip(items, modes):
        if mode == "fail":
            out.append(ValueError("item " + str(item["params"]["n"]) + " is bad"))
        else:
            out.append({"n": item["params"]["n"], "batch": len(items), "attempt": item["context"]["attempt"]})
    return out[:-1] if "short" in modes else out
"""
MANIFEST = {
    "name": "bulk",
    "entry_point": "main.run",
    "parameters": {"n": {"type": "integer", "required": True}, "mode": {"type": "string", "default": "ok"}},
    "batch": {"max_size": 50, "max_wait_ms": 50},
    "retries": {"max_retries": 1, "retry_delay": 0.1},
    "timeout_seconds": 2,
    "concurrency": 2,
}
Env = tuple[Config, Path, ResultsReader]


@pytest.fixture
def env(stack: Any, tmp_path: Path) -> Iterator[Env]:
    folder = tmp_path / "plugins" / "bulk"
    folder.mkdir(parents=True)
    (folder / "plugin.json").write_text(json.dumps(MANIFEST))
    (folder / "main.py").write_text(MAIN)
    cfg = write_config(tmp_path, isolated_config_data("batch", plugin_dirs=[folder.parent]))
    s = cfg.settings
    topics = [s.topics.results, s.topics.dlq, s.topics.invoke("bulk"), s.topics.invoke("bulk", "high")]
    ensure_topics(s, topics)
    reader = ResultsReader(s)
    try:
        yield cfg, folder, reader
    finally:
        reader.close()
        remove_test_resources(s, topics)


def send(cfg: Config, params: list[dict[str, Any]]) -> list[str]:
    invocations = [new_invocation("bulk", p) for p in params]
    topic = cfg.settings.topics.invoke("bulk")
    produce_messages(
        cfg.settings, [(topic, i.invocation_id.encode(), i.model_dump_json().encode()) for i in invocations]
    )
    return [i.invocation_id for i in invocations]


def final_results(cfg: Config, reader: ResultsReader, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every published result per invocation id, once each of `ids` has a final one (no retry pending)."""

    def done() -> dict[str, list[dict[str, Any]]] | None:
        by_id: dict[str, list[dict[str, Any]]] = {}
        for key, value in reader.read_for(0.5):
            by_id.setdefault(key, []).append(json.loads(value))
        finished = all(i in by_id and by_id[i][-1].get("next_attempt") is None for i in ids)
        return by_id if finished else None

    found: dict[str, list[dict[str, Any]]] = wait_for(done, 120, interval=0.2, what="a final result for each")
    return found


def calls(folder: Path) -> list[list[str]]:
    return [json.loads(line) for line in (folder / "calls.log").read_text().splitlines()]


def test_items_share_calls_and_each_keeps_its_own_result(env: Env) -> None:
    cfg, folder, reader = env
    ids = send(cfg, [{"n": n} for n in range(300)])
    with Runner(cfg, plugins=["bulk"]):
        results = final_results(cfg, reader, ids)
    assert sorted(results) == sorted(ids)
    for n, iid in enumerate(ids):
        (result,) = results[iid]  # one result each: nothing ran twice
        assert result["status"] == "success" and result["output"]["n"] == n and result["attempt"] == 1
    sizes = [len(c) for c in calls(folder)]
    assert sum(sizes) == 300 and max(sizes) <= 50
    assert max(sizes) > 1, sizes  # a backlog is called in batches, not one by one
    store = RunStore(cfg.settings)
    try:
        assert store.get(ids[7]) is not None and store.get(ids[7]).status == "success"  # type: ignore[union-attr]
    finally:
        store.close()


def test_a_failed_item_alone_is_retried_and_dead_lettered_and_bad_params_are_rejected(env: Env) -> None:
    cfg, folder, reader = env
    ids = send(cfg, [{"n": 0}, {"n": 1, "mode": "fail"}, {"n": "two"}, {"n": 3}])
    with Runner(cfg, plugins=["bulk"]):
        results = final_results(cfg, reader, ids)
    ok0, bad, rejected, ok3 = (results[i] for i in ids)
    assert [r["status"] for r in ok0] == ["success"] and [r["status"] for r in ok3] == ["success"]
    assert [(r["status"], r["attempt"]) for r in bad] == [("failed", 1), ("failed", 2)]  # retried once, alone
    assert bad[-1]["error"]["type"] == "ValueError" and "item 1 is bad" in bad[-1]["error"]["message"]
    assert bad[-1]["dead_lettered"] is True
    assert [r["status"] for r in rejected] == ["rejected"] and "n" in rejected[0]["error"]["message"]
    assert ids[2] not in {i for call in calls(folder) for i in call}  # never sent to the plugin


@pytest.mark.parametrize(
    "mode,status,error_type",
    [("raise", "failed", "RuntimeError"), ("short", "failed", "BatchResultError"), ("sleep", "timeout", "Timeout")],
)
def test_a_call_that_fails_fails_every_item_it_held(env: Env, mode: str, status: str, error_type: str) -> None:
    cfg, folder, reader = env
    ids = send(cfg, [{"n": 0, "mode": mode}, *({"n": n} for n in range(1, 6))])
    with Runner(cfg, plugins=["bulk"]):
        results = final_results(cfg, reader, ids)
    with_bad = {i for call in calls(folder) if ids[0] in call for i in call}
    for iid in with_bad:  # an item that shared a call with the bad one: that attempt failed alike
        first = results[iid][0]
        assert (first["status"], first["attempt"], first["error"]["type"]) == (status, 1, error_type), first
    for iid in set(ids) - with_bad:
        assert [r["status"] for r in results[iid]] == ["success"]
    assert results[ids[0]][-1]["dead_lettered"] is True  # its retry holds the bad mode too


def test_a_runner_fault_while_starting_an_item_fails_that_item_alone(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault of the runner's own (injected where a job is marked running) ends that invocation with a
    `failed` RunnerError result: its offset must not stay uncommitted, holding back its partition."""
    cfg, folder, reader = env
    ids = send(cfg, [{"n": n} for n in range(6)])
    on_start = RunnerOps.on_start

    def faulty(self: RunnerOps, invocation: Invocation) -> None:
        if invocation.invocation_id == ids[2]:
            raise RuntimeError("injected fault")
        on_start(self, invocation)

    monkeypatch.setattr(RunnerOps, "on_start", faulty)
    with Runner(cfg, plugins=["bulk"]):
        results = final_results(cfg, reader, ids)
        wait_for(lambda: all_committed(cfg, cfg.settings.topics.invoke("bulk")), 30, what="offsets committed")
    assert [r["status"] for r in results[ids[2]]] == ["failed"]
    assert (
        results[ids[2]][0]["error"]["type"] == "RunnerError"
        and "injected fault" in results[ids[2]][0]["error"]["message"]
    )
    assert all([r["status"] for r in results[i]] == ["success"] for i in ids if i != ids[2])
    assert ids[2] not in {i for call in calls(folder) for i in call}  # never sent to the plugin
