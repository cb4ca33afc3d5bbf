"""Poison messages on the topics `cdcflow tail` reads never stop it (issue 17).

Raw garbage between good results on one partition of the results topic (and a row-change topic):
without a filter every message gets its line (garbage as its raw text), with --json too; with filters
the good ones matching them are printed and nothing stops the tail.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from schemas.config import Config
from schemas.runtime.kafka_topics import ensure_topics
from streams.event_filter import EventFilter
from streams.tail import tail
from tests.support import isolated_config_data, remove_test_resources, write_config
from tests.support.poison import NEAR_LIMIT_BYTES, Poison, generic, odd_events, produce_raw


@pytest.fixture
def config(stack: None, tmp_path: Path) -> Iterator[Config]:
    cfg = write_config(tmp_path, isolated_config_data("tpoison"))
    s = cfg.settings
    topics = [s.topics.results, s.topics.row_changes("shop", "orders")]
    ensure_topics(s, topics, partitions=1)
    yield cfg
    remove_test_resources(s, topics)


def result(iid: str, status: str = "success", output: object = "fine") -> Poison:
    value = {"invocation_id": iid, "plugin": "echo", "status": status, "duration_ms": 1.0, "output": output}
    return Poison(iid, orjson.dumps(value), key=iid.encode())


def run_tail(config: Config, topic: str, event_filter: EventFilter, limit: int, as_json: bool = False) -> list[str]:
    lines: list[str] = []
    stop = threading.Event()
    timer = threading.Timer(60, stop.set)  # a tail that stopped printing would wait here, and fail below
    timer.start()
    try:
        tail(
            config.settings,
            topic,
            event_filter,
            lines.append,
            from_beginning=True,
            limit=limit,
            as_json=as_json,
            stop=stop,
        )
    finally:
        timer.cancel()
    return lines


def test_tail_of_poisoned_results(config: Config) -> None:
    topic = config.settings.topics.results
    goods = [result("ok-1"), result("failed-1", "failed"), result("big-1", output="z" * NEAR_LIMIT_BYTES)]
    goods.append(result("ok-2"))
    items = [goods[0], *generic(), goods[1], *odd_events(), goods[2], goods[3]]
    offsets = produce_raw(config.settings, topic, items)

    lines = run_tail(config, topic, EventFilter(), len(items))
    assert len(lines) == len(items)
    for line, offset in zip(lines, offsets, strict=True):
        assert f" 0@{offset} " in line, line
    for good in goods:
        assert any(f"id={good.name}" in line for line in lines), good.name

    as_json = [orjson.loads(line) for line in run_tail(config, topic, EventFilter(), len(items), as_json=True)]
    assert [j["offset"] for j in as_json] == offsets
    assert as_json[0]["value"]["invocation_id"] == "ok-1" and as_json[0]["kind"] == "result"

    # with filters: only what matches, and the garbage between does not stop the tail before the last good one
    succeeded = run_tail(config, topic, EventFilter.build(statuses=["success"], plugins=["echo"]), 3)
    assert [line.split("id=")[-1] for line in succeeded] == ["ok-1", "big-1", "ok-2"]
    where = run_tail(config, topic, EventFilter.build(where=["output~^fi"]), 3)
    assert [line.split("id=")[-1] for line in where] == ["ok-1", "failed-1", "ok-2"]


def test_tail_of_poisoned_row_changes_with_a_condition(config: Config) -> None:
    topic = config.settings.topics.row_changes("shop", "orders")

    def change(n: object) -> Poison:
        value = {
            "before": None,
            "after": {"n": n},
            "op": "c",
            "event_id": "e",
            "source": {"db": "shop", "table": "orders"},
        }
        return Poison(f"n={n}", orjson.dumps(value))

    items = [change(1), *generic(), *odd_events(), change("x"), change([1]), change({"a": 1}), change(2)]
    produce_raw(config.settings, topic, items)
    lines = run_tail(config, topic, EventFilter.build(tables=["orders"], ops=["c"], where=["after.n>=1"]), 2)
    assert len(lines) == 2 and '{"n":1}' in lines[0] and '{"n":2}' in lines[1]
