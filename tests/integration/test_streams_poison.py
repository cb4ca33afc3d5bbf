"""Poison messages on the topics the streams worker consumes never stall it (issue 17).

Raw garbage between good changes on one partition of a cdc topic, read by the row-change
loop (streams/row_changes.py): every good change yields its invocation, every bad one is a logged skip
naming topic, partition and offset (or, for a change whose invocation is too large for the plugin's
topic, a dead letter carrying it and the reason), the loop keeps running and its group commits to the
end of the partition. (Manual triggers: test_streams_trigger_poison.py.)
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from plugins.dlq import read_entries
from schemas.config import Config
from schemas.invocation import invocation_id_for
from schemas.settings import Settings
from streams.matcher import Matcher
from streams.row_changes import RowChangeLoop
from streams.validation import validated_matcher
from tests.support import topics_config, wait_for
from tests.support.poison import (
    HUGE_INT,
    Poison,
    committed,
    ends,
    generic,
    nested,
    produce_raw,
    raw_json,
)
from tests.support.streams import Collector

RULES = {
    "monitored_tables": {
        "shop.orders": {
            "name": "r",
            "triggers": ["echo"],
            "conditions": {"n": {"gte": 0}},
            "params": {"data": "{after.blob}"},
        }
    },
    # makes the worker create echo's topics (and so the manual triggers' target)
    "schedules": {"rare": {"plugin": "echo", "cron": "0 0 1 1 *"}},
}
ROW_LIMIT = 64 * 1024 * 1024  # the row-change topics' max.message.bytes (ROW_CHANGE_MAX_MESSAGE_BYTES)


@dataclass
class Live:
    matcher: Matcher


@dataclass
class Ops:
    events: Counter[tuple[str, str]] = field(default_factory=Counter)

    def on_row_batch(self, tables: Counter[tuple[str, str]], rules: Counter[str], invocations: Any) -> None:
        self.events.update(tables)


def topics(s: Settings) -> list[str]:
    return [
        s.topics.row_changes("shop", "orders"),
        s.topics.invoke("echo"),
        s.topics.invoke("echo", "high"),
        s.topics.triggers,
        s.topics.dlq,
    ]


@pytest.fixture
def config(stack: None, tmp_path: Path) -> Iterator[Config]:
    with topics_config(tmp_path, "spoison", RULES, topics, partitions=1) as cfg:
        yield cfg


POS = iter(range(1000, 10**9, 10))


def envelope(**fields: Any) -> dict[str, Any]:
    return {
        "before": None,
        "after": {"id": 1, "n": 1, "blob": "b"},
        "op": "u",
        "ts_ms": 1,
        "event_id": f"1:mysql-bin.000001:{next(POS)}:0",
        "source": {"db": "shop", "table": "orders"},
    } | fields


def good_change(blob: Any = "b", key: bytes | None = b'{"id": 1}') -> tuple[Poison, str]:
    change = envelope(after={"id": 1, "n": 1, "blob": blob})
    iid = invocation_id_for("cdc", "r", "echo", change["event_id"])
    return Poison(f"good change {iid}", orjson.dumps(change), key=key), iid


def bad_changes() -> list[Poison]:
    """Row-change-shaped garbage; every one would match the rule if it were well formed."""
    deep = envelope(after={"id": 1, "n": 1, "blob": "@X@"})
    return [
        Poison("no event_id", orjson.dumps({k: v for k, v in envelope().items() if k != "event_id"})),
        Poison("no source", orjson.dumps({k: v for k, v in envelope().items() if k != "source"})),
        Poison("source is a string", orjson.dumps(envelope(source="shop.orders"))),
        Poison("source names a list", orjson.dumps(envelope(source={"db": ["shop"], "table": "orders"}))),
        Poison("no op", orjson.dumps({k: v for k, v in envelope().items() if k != "op"})),
        Poison("after is a list", orjson.dumps(envelope(after=[1, 2]))),
        Poison("before is a string", orjson.dumps(envelope(before="x", op="d", after=None))),
        Poison("event_id is a number", orjson.dumps(envelope(event_id=12345))),
        Poison("event_id is an object", orjson.dumps(envelope(event_id={"pos": 1}))),
        Poison("integer beyond 64 bits", raw_json(envelope(after={"id": 1, "n": "@X@", "blob": "b"}), X=HUGE_INT)),
        Poison(
            "negative integer beyond 64 bits",
            raw_json(envelope(after={"id": 1, "n": 1, "blob": "@X@"}), X=b"-" + HUGE_INT),
        ),
        Poison("NaN in the row", raw_json(envelope(after={"id": 1, "n": "@X@", "blob": "b"}), X=b"NaN")),
        Poison("Infinity in the row", raw_json(envelope(after={"id": 1, "n": "@X@", "blob": "b"}), X=b"1e400")),
        Poison("300-level nesting in a matched row", raw_json(deep, X=nested(300))),
        Poison("1100-level nesting", raw_json(deep, X=nested(1100))),
    ]


def test_row_change_poison(config: Config, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cdcflow.streams")
    s = config.settings
    source, invoke = s.topics.row_changes("shop", "orders"), s.topics.invoke("echo")
    # Event ids (binlog positions) rise in the order the changes are produced, as the reader's do:
    # a change at or before the partition's last matched position would be dropped as a re-send.
    garbage = generic()
    goods = [good_change()]
    items = [goods[0][0], *garbage[:10]]
    goods.append(good_change(nested_value := orjson.loads(nested(100))))
    # near the row-change topic's limit: a valid change, but its invocation is far too large for echo's topic
    huge, huge_id = good_change("z" * (ROW_LIMIT - 100_000))
    garbage += bad_changes()
    items += [goods[1][0], huge, *garbage[10:]]
    goods += [good_change(key=None), good_change(key=b"\xff\xfe not json")]
    items += [goods[2][0], goods[3][0]]
    # an event id far longer than any binlog position's: its invocation goes out, the id is no dedup mark
    long_id = envelope(event_id="1:" + "f" * 10_000 + ":5:0")
    goods.append(
        (Poison("10 KB event id", orjson.dumps(long_id)), invocation_id_for("cdc", "r", "echo", long_id["event_id"]))
    )
    goods.append(good_change())
    items += [goods[4][0], goods[5][0]]
    offsets = dict(zip((id(i) for i in items), produce_raw(s, source, items, max_bytes=ROW_LIMIT), strict=True))

    fatal: list[BaseException] = []
    loop = RowChangeLoop(s, [source], Live(validated_matcher(config)), Ops(), on_fatal=fatal.append)
    collector = Collector(config, invoke)
    loop.start()
    try:
        wait_for(
            lambda: fatal or committed(s, s.streams.rows_group_id, source).get(0) == ends(s, source)[0],
            120,
            interval=0.5,
            what="the row-change group to commit to the end of the partition",
        )
        assert not fatal, fatal
        assert loop.running
        wait_for(lambda: len(collector.poll()) >= len(goods), 60, what="every good change's invocation")
        time.sleep(1)  # anything emitted twice, or for a bad change, would be there by now too
        emitted = collector.poll()
    finally:
        loop.stop()
        collector.consumer.close()
    got = Counter(m["invocation_id"] for m in emitted)
    assert got == Counter(iid for _, iid in goods), "good changes lost or emitted twice, or bad ones emitted"
    deep = [m for m in emitted if m["params"]["data"] == nested_value]
    assert len(deep) == 1
    skipped = "\n".join(r.getMessage() for r in caplog.records if "skipping" in r.getMessage())
    for p in garbage:
        assert f"{source}[0]@{offsets[id(p)]}:" in skipped, f"{p.name}: no logged skip naming where it is"
    (entry,) = [e for e in read_entries(s, "echo") if e["dlq_id"] == huge_id]
    assert entry["invocation"]["params"]["data"] == "z" * (ROW_LIMIT - 100_000)
    assert entry["error"]["type"] == "InvocationTooLarge" and invoke in entry["error"]["message"]
    assert (entry["source_topic"], entry["source_partition"], entry["source_offset"]) == (source, 0, offsets[id(huge)])
