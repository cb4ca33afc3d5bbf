"""Poison messages on the topics `cdcflow replay` reads never stop a replay (issue 17).

Raw garbage between good messages on one partition of the DLQ topic, a row-change topic and the
results topic, replayed with the real command: into the pipeline, every good message's invocation is
published once and every bad one is skipped, counted and logged naming topic, partition and offset;
copies and prints take every message as it is; the replay's group commits to the end of the range.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from console.cli import cli
from schemas.config import Config
from schemas.invocation import invocation_id_for
from schemas.runtime.kafka_topics import ensure_topics
from schemas.settings import Settings
from tests.support import consume_all, topics_config
from tests.support.poison import HUGE_INT, Poison, committed, ends, generic, nested, odd_events, produce_raw, raw_json

RULES = {
    "monitored_tables": {
        "shop.orders": {
            "name": "r",
            "triggers": ["echo"],
            "conditions": {"n": {"gte": 0}},
            "params": {"data": "{after.blob}"},
        }
    }
}
DLQ_LIMIT = 64 * 1024 * 1024  # the DLQ topic's max.message.bytes (DLQ_MAX_MESSAGE_BYTES)


def topics(s: Settings) -> list[str]:
    return [
        s.topics.row_changes("shop", "orders"),
        s.topics.invoke("echo"),
        s.topics.invoke("echo", "high"),
        s.topics.results,
        s.topics.dlq,
    ]


@pytest.fixture
def config(stack: None, tmp_path: Path) -> Iterator[Config]:
    with topics_config(
        tmp_path, "rpoison", RULES, topics, partitions=1, leftovers=lambda s: [f"{s.topics.results}.copy"]
    ) as cfg:
        yield cfg


def cdcflow(config: Config, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-c", str(config.path), *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def replay_id_of(output: str) -> str:
    return next(line.split()[1].rstrip(":") for line in output.splitlines() if line.startswith("replay "))


MANUAL = {"kind": "manual", "requested_by": "t", "requested_at": "2026-01-01T00:00:00Z", "request_id": "q"}


def dead_letter(dlq_id: str, **invocation: Any) -> dict[str, Any]:
    return {
        "dlq_id": dlq_id,
        "plugin": "echo",
        "status": "failed",
        "attempts": [{}],
        "error": {"type": "ValueError", "message": "boom"},
        "invocation": {
            "invocation_id": dlq_id,
            "plugin": "echo",
            "params": {"message": "again"},
            "trigger": MANUAL,
            "attempt": 1,
            "priority": "normal",
            "created_at": "2026-01-01T00:00:00Z",
        }
        | invocation,
    }


def bad_dead_letters() -> list[Poison]:
    def dl(**invocation: Any) -> dict[str, Any]:
        return dead_letter(f"bad-{uuid.uuid4()}", **invocation)

    no_plugin = dl()
    del no_plugin["invocation"]["plugin"]
    return [
        Poison("invocation without plugin", orjson.dumps(no_plugin)),
        Poison("params a list", orjson.dumps(dl(params=[1, 2]))),
        Poison("param beyond 64 bits", raw_json(dl(params={"data": "@X@"}), X=HUGE_INT)),
        Poison("300-level nested param", raw_json(dl(params={"data": "@X@"}), X=nested(300))),
        Poison("trigger a string", orjson.dumps(dl(trigger="manual"))),
        Poison("plugin no topic can be named after", orjson.dumps(dl(plugin="no such/plugin"))),
        Poison("unknown priority", orjson.dumps(dl(priority="urgent"))),
        Poison("dlq_id a number", orjson.dumps(dead_letter("x") | {"dlq_id": 5})),
        # near the DLQ topic's limit: as a replayed invocation, far over what echo's topic takes
        Poison("near the DLQ limit", orjson.dumps(dl(params={"message": "z" * (DLQ_LIMIT - 100_000)}))),
    ]


def test_replay_of_a_poisoned_dlq_into_the_pipeline(config: Config, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    s = config.settings
    dlq, invoke = s.topics.dlq, s.topics.invoke("echo")
    goods = [f"good-{uuid.uuid4()}" for _ in range(4)]
    good = {g: Poison(g, orjson.dumps(dead_letter(g, params={"message": g})), key=g.encode()) for g in goods}
    garbage, bad = generic(), bad_dead_letters()
    items = [good[goods[0]], *garbage[:7], good[goods[1]], *bad[:5], good[goods[2]], *garbage[7:], *bad[5:]]
    items.append(good[goods[3]])
    offsets = dict(zip((id(i) for i in items), produce_raw(s, dlq, items, max_bytes=DLQ_LIMIT), strict=True))

    code, out = cdcflow(config, "replay", "dlq")
    assert code == 0, out
    rid = replay_id_of(out)
    replayed = [orjson.loads(m.value()) for m in consume_all(config, [invoke], idle_seconds=1.5)]
    assert sorted(m["invocation_id"] for m in replayed) == sorted(invocation_id_for("replay", rid, g) for g in goods)
    assert committed(s, f"cdcflow-replay-{rid}", dlq)[0] == ends(s, dlq)[0]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for p in garbage + bad:
        assert f"{dlq}[0]@{offsets[id(p)]}:" in logged, f"{p.name}: no logged skip naming where it is"
    assert sum(int(n) for n in re.findall(r"skipped (\d+):", out)) == len(garbage) + len(bad), out


def test_replay_of_poisoned_row_changes_into_the_pipeline(config: Config, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    s = config.settings
    source, invoke = s.topics.row_changes("shop", "orders"), s.topics.invoke("echo")
    pos = iter(range(1000, 10**6, 10))

    def change(**fields: Any) -> dict[str, Any]:
        event_id = f"1:mysql-bin.000001:{next(pos)}:0"
        return {
            "before": None,
            "after": {"id": 1, "n": 1, "blob": "b"},
            "op": "c",
            "ts_ms": 1,
            "event_id": event_id,
            "source": {"db": "shop", "table": "orders"},
        } | fields

    goods = [change() for _ in range(3)]
    bad = [
        Poison("source a string", orjson.dumps(change(source="shop.orders"))),
        Poison("op a list", orjson.dumps(change(op=["c"]))),
        Poison("after a list", orjson.dumps(change(after=[1]))),
        Poison("event_id a number", orjson.dumps(change(event_id=5))),
        Poison("integer beyond 64 bits", raw_json(change(after={"id": 1, "n": "@X@"}), X=HUGE_INT)),
        Poison(
            "300-level nesting in a parameter", raw_json(change(after={"id": 1, "n": 1, "blob": "@X@"}), X=nested(300))
        ),
    ]
    garbage = generic()
    items = [Poison("good", orjson.dumps(goods[0])), *garbage, Poison("good", orjson.dumps(goods[1])), *bad]
    items.append(Poison("good", orjson.dumps(goods[2])))
    offsets = dict(zip((id(i) for i in items), produce_raw(s, source, items), strict=True))

    code, out = cdcflow(config, "replay", "shop.orders")
    assert code == 0, out
    rid = replay_id_of(out)
    replayed = [orjson.loads(m.value()) for m in consume_all(config, [invoke], idle_seconds=1.5)]
    expected = [invocation_id_for("replay", rid, invocation_id_for("cdc", "r", "echo", g["event_id"])) for g in goods]
    assert sorted(m["invocation_id"] for m in replayed) == sorted(expected)
    assert committed(s, f"cdcflow-replay-{rid}", source)[0] == ends(s, source)[0]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for p in bad:
        assert f"{source}[0]@{offsets[id(p)]}:" in logged, f"{p.name}: no logged skip naming where it is"


def test_copy_and_print_of_poisoned_results_take_every_message(config: Config) -> None:
    s = config.settings
    results, copy = s.topics.results, f"{s.topics.results}.copy"
    good = {"invocation_id": "ok-1", "plugin": "echo", "status": "success", "duration_ms": 1.0, "output": "fine"}
    items = [Poison("good", orjson.dumps(good), key=b"ok-1"), *generic(), *odd_events()]
    produce_raw(s, results, items)

    code, out = cdcflow(config, "replay", "results", "--print")
    assert code == 0, out
    printed = [line for line in out.splitlines() if re.match(r"^\S+\s+0@\d+", line)]
    assert len(printed) == len(items), out
    assert "ok-1" in out

    ensure_topics(s, [copy], partitions=1)  # one partition: the copies in the source's order
    code, out = cdcflow(config, "replay", "results", "--to-topic", copy)
    assert code == 0, out
    copied = [(m.key(), m.value()) for m in consume_all(config, [copy], idle_seconds=1.5)]
    assert copied == [(p.key, p.value if p.value is not None else None) for p in items]
    rid = replay_id_of(out)
    assert committed(s, f"cdcflow-replay-{rid}", results)[0] == ends(s, results)[0]
