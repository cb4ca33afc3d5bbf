"""Poison messages on the triggers topic never stall the streams worker's Faust agent (issue 17).

Raw garbage between good trigger requests on one partition of the triggers topic, read by a real
`cdcflow streams worker`: every good request becomes its invocation; a bad one that names a plugin and
a request id gets a `rejected` result (Redis and the results topic) under the invocation id it would
have had, saying why and where it was; one that names none is a logged skip naming topic, partition
and offset. The worker keeps running and its group commits to the end of the partition.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from plugins.store import RunStore
from schemas.config import Config
from schemas.invocation import invocation_id_for
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.poison import (
    HUGE_INT,
    NEAR_LIMIT_BYTES,
    Poison,
    committed,
    ends,
    generic,
    nested,
    produce_raw,
    raw_json,
)
from tests.support.streams import Collector, Worker

# The schedule makes the worker create echo's topics; it never fires during the test.
RULES = {"schedules": {"rare": {"plugin": "echo", "cron": "0 0 1 1 *"}}}


@pytest.fixture
def config(stack: None, tmp_path: Path) -> Iterator[Config]:
    cfg = write_config(tmp_path, isolated_config_data("tpoison", RULES))
    s = cfg.settings
    topics = [s.topics.invoke("echo"), s.topics.invoke("echo", "high"), s.topics.triggers, s.topics.results]
    ensure_topics(s, topics, partitions=1)
    yield cfg
    remove_test_resources(s, topics)


def trigger(request_id: str, **fields: Any) -> dict[str, Any]:
    return {"request_id": request_id, "plugin": "echo", "params": {"message": "hi"}, "requested_by": "pytest"} | fields


def good_trigger(**params: Any) -> tuple[Poison, str]:
    rid = f"good-{uuid.uuid4()}"
    return (
        Poison(f"good trigger {rid}", orjson.dumps(trigger(rid, params={"message": "hi", **params})), key=rid.encode()),
        invocation_id_for("manual", rid, "echo"),
    )


def bad_triggers() -> list[tuple[Poison, str | None]]:
    """Trigger-shaped garbage: (message, the invocation id its rejected result is recorded under, or
    None when it names no plugin to record against: then a logged skip)."""
    out: list[tuple[Poison, str | None]] = []
    cases: list[tuple[str, Any, bool]] = [
        ("no plugin", lambda r: orjson.dumps({k: v for k, v in trigger(r).items() if k != "plugin"}), False),
        ("no request id", lambda r: orjson.dumps({k: v for k, v in trigger(r).items() if k != "request_id"}), False),
        ("plugin name no topic can have", lambda r: orjson.dumps(trigger(r, plugin="no such/plugin")), False),
        ("300-character plugin name", lambda r: orjson.dumps(trigger(r, plugin="p" * 300)), False),
        ("params is a list", lambda r: orjson.dumps(trigger(r, params=[1, 2])), True),
        ("unknown priority", lambda r: orjson.dumps(trigger(r, priority="urgent")), True),
        ("requested_at is not a time", lambda r: orjson.dumps(trigger(r, requested_at="yesterday")), True),
        ("unknown field", lambda r: orjson.dumps(trigger(r, surprise=1)), True),
        ("param beyond 64 bits", lambda r: raw_json(trigger(r, params={"data": "@X@"}), X=HUGE_INT), True),
        ("NaN param", lambda r: raw_json(trigger(r, params={"data": "@X@"}), X=b"NaN"), True),
        ("Infinity param", lambda r: raw_json(trigger(r, params={"seconds": "@X@"}), X=b"Infinity"), True),
        ("300-level nested param", lambda r: raw_json(trigger(r, params={"data": "@X@"}), X=nested(300)), True),
    ]
    for name, build, recorded in cases:
        rid = f"bad-{uuid.uuid4()}"
        out.append(
            (Poison(name, build(rid), key=rid.encode()), invocation_id_for("manual", rid, "echo") if recorded else None)
        )
    return out


def test_trigger_poison(config: Config, tmp_path: Path) -> None:
    s = config.settings
    topic, invoke = s.topics.triggers, s.topics.invoke("echo")
    garbage = generic()
    shaped = bad_triggers()
    goods = [good_trigger(), good_trigger(data=orjson.loads(nested(100))), good_trigger(), good_trigger()]
    goods.append(good_trigger(data="z" * (NEAR_LIMIT_BYTES - 1000)))  # near the triggers topic's limit
    goods.append(good_trigger())
    goods[2][0].key = None
    items = [goods[0][0], *garbage[:8], goods[1][0], *(p for p, _ in shaped[:6]), goods[2][0]]
    # a request the topic takes whose invocation is a little larger: over what the plugins' topics take
    rid = f"big-{uuid.uuid4()}"
    too_big = Poison("invocation too large", orjson.dumps(trigger(rid, params={"data": "z" * 999_800})))
    too_big_id = invocation_id_for("manual", rid, "echo")
    items += [*garbage[8:], goods[3][0], *(p for p, _ in shaped[6:]), goods[4][0], too_big, goods[5][0]]
    offsets = dict(zip((id(i) for i in items), produce_raw(s, topic, items, max_bytes=1_048_000), strict=True))

    worker = Worker(config, tmp_path / "worker.log")
    collector = Collector(config, invoke)
    store = RunStore(s)
    worker.start()
    try:
        wait_for(
            lambda: committed(s, s.streams.app_id, topic).get(0) == ends(s, topic)[0],
            180,
            interval=0.5,
            what="the worker's group to commit to the end of the triggers partition",
        )
        wait_for(lambda: len(collector.poll()) >= len(goods), 60, what="every good trigger's invocation")
        time.sleep(1)
        emitted = collector.poll()
        assert worker.process is not None and worker.process.poll() is None, "the worker died"
    finally:
        worker.stop()
        collector.consumer.close()
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert Counter(m["invocation_id"] for m in emitted) == Counter(iid for _, iid in goods)
    for p in garbage + [p for p, iid in shaped if iid is None]:
        assert f"{topic}[0]@{offsets[id(p)]}:" in log, f"{p.name}: no logged skip naming where it is"
    for p, iid in shaped:
        if iid is not None:
            result = store.get(iid)
            assert result is not None and result.status == "rejected", f"{p.name}: no rejected result"
            assert result.error is not None and f"{topic}[0]@{offsets[id(p)]}" in result.error.message, p.name
    big = store.get(too_big_id)
    assert big is not None and big.status == "rejected" and big.error is not None
    assert (
        big.error.type == "InvocationTooLarge" and f"{topic}[0]@{offsets[id(too_big)]}: {invoke}" in big.error.message
    )
    store.close()
    assert "Traceback" not in log, log[-3000:]
