"""Poison messages on an invoke topic never stall the runner (issue 17).

Raw garbage goes straight onto echo's topic, between good invocations, all in one partition: every
good one runs, every bad one becomes a rejected result (or a failed, dead-lettered one) saying why,
and the runners' group commits to the end of the partition.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import pytest
from click.testing import CliRunner
from confluent_kafka.admin import AdminClient, NewTopic

from console.cli import cli
from plugins.dlq import read_entries, replay
from plugins.store import RunStore
from schemas.config import Config
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.plugins import ResultsReader, Runner
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

MANUAL = {"kind": "manual", "requested_by": "pytest", "requested_at": "2026-01-01T00:00:00Z", "request_id": "r"}


@pytest.fixture
def config(stack, tmp_path):
    cfg = write_config(tmp_path, isolated_config_data("poison"))
    s = cfg.settings
    topics = [s.topics.invoke("echo"), s.topics.invoke("echo", "high"), s.topics.results, s.topics.dlq]
    ensure_topics(s, topics)
    yield cfg
    remove_test_resources(s, topics)


def invocation(iid: str, params: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    return {"invocation_id": iid, "plugin": "echo", "params": params or {}, "trigger": MANUAL, **fields}


def good(tag: str, **params: Any) -> Poison:
    iid = f"good-{tag}-{uuid.uuid4()}"
    return Poison(f"good {tag}", json.dumps(invocation(iid, {"message": tag, **params})).encode(), key=iid.encode())


def shaped(iid: str) -> list[tuple[Poison, str, str]]:
    """Invocation-shaped garbage claiming ids `iid-N`: (message, expected status, words of the reason)."""
    cdc = {"kind": "cdc", "rule": "r", "event_id": "e", "table": "t", "op": "c", "after": "@X@"}
    cases: list[tuple[str, bytes, str, str]] = [
        ("wrong types", json.dumps(invocation("@", attempt="first", priority=7) | {"params": "x"}).encode(), "", ""),
        ("missing trigger", json.dumps({"invocation_id": "@", "plugin": "echo"}).encode(), "rejected", "trigger"),
        ("unknown trigger kind", json.dumps(invocation("@") | {"trigger": {"kind": "x"}}).encode(), "", "trigger"),
        (
            "bad trigger time",
            json.dumps(invocation("@") | {"trigger": MANUAL | {"requested_at": 5.5e300}}).encode(),
            "",
            "",
        ),
        (
            "undeclared param beyond 64 bits",
            raw_json(invocation("@", {"n": "@X@"}), X=HUGE_INT),
            "",
            "unknown parameter",
        ),
        ("param beyond 64 bits", raw_json(invocation("@", {"data": "@X@"}), X=HUGE_INT), "", "beyond 64 bits"),
        ("nested param beyond 64 bits", raw_json(invocation("@", {"data": {"a": ["@X@"]}}), X=HUGE_INT), "", "64 bits"),
        ("NaN param", raw_json(invocation("@", {"data": "@X@"}), X=b"NaN"), "", "nan"),
        ("Infinity number param", raw_json(invocation("@", {"seconds": "@X@"}), X=b"Infinity"), "", "inf"),
        (
            "trigger row beyond 64 bits",
            raw_json(invocation("@") | {"trigger": cdc}, X=b'{"id": ' + HUGE_INT + b"}"),
            "",
            "64 bits",
        ),
        ("trigger row with NaN", raw_json(invocation("@") | {"trigger": cdc}, X=b'{"x": NaN}'), "", "nan"),
        ("attempt beyond 64 bits", raw_json(invocation("@", attempt="@X@"), X=HUGE_INT), "", "attempt"),
        ("300-level nested param", raw_json(invocation("@", {"data": "@X@"}), X=nested(300)), "", "recursion"),
        (
            "another plugin's invocation",
            json.dumps(invocation("@") | {"plugin": "data_processor"}).encode(),
            "",
            "data_processor",
        ),
        ("unknown field", json.dumps(invocation("@") | {"surprise": 1}).encode(), "", "surprise"),
    ]
    out = []
    for n, (name, value, status, reason) in enumerate(cases):
        claimed = f"{iid}-{n}"
        value = value.replace(b'"@"', json.dumps(claimed).encode(), 1)
        out.append((Poison(name, value, key=claimed.encode()), status or "rejected", reason))
    return out


def test_invoke_topic_poison(config: Config, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cdcflow.runner")
    s = config.settings
    topic = s.topics.invoke("echo")
    poison_id = f"poison-{uuid.uuid4()}"
    garbage = generic() + [
        Poison("blank invocation id", json.dumps(invocation("  ")).encode()),
        Poison("300-character invocation id", json.dumps(invocation("i" * 300)).encode()),
        # no id can be claimed from a message that is not UTF-8: the rejection is named by where it is
        Poison(
            "invalid UTF-8 param", json.dumps(invocation("x", {"message": "@"})).encode().replace(b'"@"', b'"\xff"')
        ),
    ]
    claimed = shaped(poison_id)
    big = "x" * (NEAR_LIMIT_BYTES - 1000)
    goods = [
        good("first"),
        good("deep", data=json.loads(nested(100))),
        good("near the size limit", data=big),
        good("no key"),
        good("NaN not-before header"),
        good("infinite not-before header"),
        good("last"),
    ]
    goods[3].key = None
    goods[4].headers = [("cdcflow-not-before", b"nan")]
    goods[5].headers = [("cdcflow-not-before", b"inf")]
    doomed = f"doomed-{uuid.uuid4()}"
    near_limit_failure = Poison(
        "near the size limit, failing",
        json.dumps(invocation(doomed, {"message": big, "mode": "raise"})).encode(),
        key=doomed.encode(),
    )
    assert len(near_limit_failure.value or b"") < 1_000_000
    items = [goods[0], *garbage[:7], goods[1], *(p for p, _, _ in claimed[:8]), goods[2], near_limit_failure]
    items += [goods[3], *garbage[7:], *(p for p, _, _ in claimed[8:]), goods[4], goods[5], goods[6]]
    offsets = dict(zip((id(i) for i in items), produce_raw(s, topic, items), strict=True))

    reader = ResultsReader(s)
    store = RunStore(s)
    try:
        with Runner(config, plugins=["echo"]):
            wait_for(
                lambda: committed(s, s.runners.group_id, topic).get(0) == ends(s, topic)[0],
                120,
                interval=0.5,
                what="the runners' group to commit to the end of the partition",
            )
            results = {k: json.loads(v) for k, v in reader.wait_for(len(items), timeout=30)}
        for g in goods:
            iid = (g.key or b"").decode() or json.loads(g.value or b"")["invocation_id"]
            assert results[iid]["status"] == "success", (g.name, results[iid])
            assert store.get(iid).status == "success"
        assert results[json.loads(goods[1].value or b"")["invocation_id"]]["output"]["data"] == json.loads(nested(100))
        for p in garbage:
            where = f"{topic}[0]@{offsets[id(p)]}"
            r = results.get(f"invalid:{where}")
            assert r is not None, f"{p.name}: no result for {where}"
            assert r["status"] == "rejected" and r["error"]["type"] == "InvalidInvocation", (p.name, r)
            assert where in r["error"]["message"]
        for p, status, reason in claimed:
            r = results[(p.key or b"").decode()]
            assert r["status"] == status, (p.name, r)
            assert reason.lower() in r["error"]["message"].lower(), (p.name, r["error"]["message"])
            assert store.is_done(r["invocation_id"]), p.name
        r = results[doomed]
        assert r["status"] == "failed" and r.get("dead_lettered"), r
        (entry,) = [e for e in read_entries(s, "echo") if e["dlq_id"] == doomed]
        assert entry["invocation"]["params"]["message"] == big  # the dead letter can be replayed as it was
        assert "echo was asked to fail" in entry["error"]["message"]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "the runner logged errors"
    finally:
        reader.close()
        store.close()


def test_a_dead_letter_too_large_for_an_old_dlq_topic(config: Config) -> None:
    """A DLQ topic created before it took large entries (the broker's ~1 MB): the dead letter goes out
    without its params, naming the source message, and replaying it takes the params from there."""
    s = config.settings
    admin = AdminClient(s.kafka_config())
    for future in admin.delete_topics([s.topics.dlq], operation_timeout=10).values():
        future.result()
    wait_for(lambda: s.topics.dlq not in admin.list_topics(timeout=10).topics, 30, what="the DLQ topic gone")
    for future in admin.create_topics([NewTopic(s.topics.dlq, num_partitions=1, replication_factor=1)]).values():
        future.result()
    big = "y" * (NEAR_LIMIT_BYTES - 1000)
    doomed, after = f"doomed-{uuid.uuid4()}", good("after the dead letter")
    topic = s.topics.invoke("echo")
    items = [
        Poison("near the limit", json.dumps(invocation(doomed, {"message": big, "mode": "raise"})).encode()),
        after,
    ]
    offset, _ = produce_raw(s, topic, items)
    reader = ResultsReader(s)
    try:
        with Runner(config, plugins=["echo"]):
            wait_for(
                lambda: committed(s, s.runners.group_id, topic).get(0) == ends(s, topic)[0],
                120,
                interval=0.5,
                what="the runners' group to commit to the end of the partition",
            )
        results = {k: json.loads(v) for k, v in reader.wait_for(2, timeout=30)}
    finally:
        reader.close()
    assert results[doomed]["status"] == "failed" and results[doomed]["dead_lettered"]
    assert results[json.loads(after.value or b"")["invocation_id"]]["status"] == "success"
    (entry,) = read_entries(s, "echo")
    assert entry["invocation"]["params"] == {} and f"{topic}[0]@{offset}" in entry["params_omitted"]
    assert entry["error"]["type"] == "ValueError" and "echo was asked to fail" in entry["error"]["message"]
    ((_, replayed),) = replay(s, [entry])
    assert replayed is not None and replayed.params == {"message": big, "mode": "raise"}


def test_dlq_list_and_replay_skip_what_is_not_a_dead_letter(config: Config, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="plugins.dlq")
    s = config.settings

    def entry(dlq_id: Any, **fields: Any) -> dict[str, Any]:
        inv = invocation(str(dlq_id), {"message": "again"}) | {"created_at": "2026-01-01T00:00:00Z"}
        return {"dlq_id": dlq_id, "plugin": "echo", "invocation": inv, "status": "failed", "attempts": [{}]} | fields

    goods = [f"dead-{uuid.uuid4()}" for _ in range(3)]
    odd = entry(goods[2], error="boom", attempts=7, dead_at=5, status=["failed"])  # listed and replayed all the same
    bad = [
        Poison("dlq_id a number", json.dumps(entry(5)).encode()),
        Poison("blank dlq_id", json.dumps(entry(" ")).encode()),
        Poison("no plugin", json.dumps({k: v for k, v in entry("x").items() if k != "plugin"}).encode()),
        Poison("invocation a list", json.dumps(entry("y") | {"invocation": [1]}).encode()),
        Poison(
            "invocation with a bad priority", json.dumps(entry("z") | {"invocation": {"priority": "urgent"}}).encode()
        ),
    ]
    garbage = generic()
    items = [Poison("good", json.dumps(entry(goods[0])).encode()), *garbage, *bad]
    items += [Poison("good", json.dumps(entry(goods[1])).encode()), Poison("odd", json.dumps(odd).encode())]
    offsets = dict(zip((id(i) for i in items), produce_raw(s, s.topics.dlq, items), strict=True))

    listed = CliRunner().invoke(cli, ["-c", str(config.path), "dlq", "list"])
    assert listed.exit_code == 0, listed.output
    assert all(g in listed.output for g in goods) and "ValueError" not in listed.output
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for p in [*garbage, *bad]:
        assert f"{s.topics.dlq}[0]@{offsets[id(p)]}:" in logged, f"{p.name}: no logged skip naming where it is"
    replayed = CliRunner().invoke(cli, ["-c", str(config.path), "dlq", "replay", "--plugin", "echo"])
    assert replayed.exit_code == 0, replayed.output
    assert [line.split()[0] for line in replayed.output.splitlines()] == goods
