"""`cdcflow replay` against the real Kafka and Redis, with the echo plugin run by the real runner."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition

from console.cli import cli
from plugins.runner import run_runner
from plugins.store import RunStore
from schemas.config import Config
from schemas.invocation import invocation_id_for
from schemas.settings import Settings
from streams.matcher import Matcher
from streams.replay import TRANSACTION_TIMEOUT
from tests.support import (
    REPO_ROOT,
    consume_all,
    topics_config,
    wait_for,
)

RULES = {
    "monitored_tables": {
        "shop.orders": [
            {
                "name": "flagged",
                "triggers": ["echo"],
                "operations": ["INSERT", "UPDATE"],
                "conditions": {"flag": True},
                "params": {"message": "order {after.id}", "data": "{event_id}"},
            }
        ]
    }
}


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
    with topics_config(tmp_path, "replay", RULES, topics, leftovers=lambda s: [f"{s.topics.results}.copy"]) as cfg:
        yield cfg


@contextmanager
def echo_runner(config: Config) -> Iterator[None]:
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=run_runner, args=(config, stop), kwargs={"plugins": ["echo"], "ready": ready})
    thread.start()
    try:
        assert ready.wait(120), "runner did not start"
        yield
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "runner did not stop"


def produce_changes(config: Config, changes: list[tuple[int, int, bool, int | None]]) -> list[dict]:
    """(partition, row id, flag, timestamp ms) per change, in order; returns the envelopes."""
    topic = config.settings.topics.row_changes("shop", "orders")
    producer = Producer(config.settings.kafka_config(**{"acks": "all", "enable.idempotence": True}))
    events = []
    for i, (partition, row, flag, ts) in enumerate(changes):
        event = {
            "before": None,
            "after": {"id": row, "flag": flag},
            "op": "c",
            "ts_ms": ts or 1,
            "event_id": f"1:mysql-bin.000001:{1000 + 10 * i}:0",
            "source": {"server_id": 1, "db": "shop", "table": "orders", "ts_ms": ts or 1},
        }
        extra = {"timestamp": ts} if ts else {}
        producer.produce(topic, key=orjson.dumps({"id": row}), value=orjson.dumps(event), partition=partition, **extra)
        events.append(event)
    assert producer.flush(30) == 0
    return events


def publish_original_runs(config: Config, events: list[dict]) -> list[str]:
    """What the streams worker did when the changes were new: the matched invocations, published."""
    matcher = Matcher.compile(config.rules)
    producer = Producer(config.settings.kafka_config(**{"acks": "all"}))
    ids = []
    for event in events:
        for planned in matcher.match(event):
            inv = {**planned.invocation, "created_at": datetime.now(UTC).isoformat()}
            producer.produce(
                config.settings.topics.invoke("echo"), key=inv["invocation_id"].encode(), value=orjson.dumps(inv)
            )
            ids.append(inv["invocation_id"])
    assert producer.flush(30) == 0
    return ids


def cdcflow(config: Config, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-c", str(config.path), *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def replay_id_of(output: str) -> str:
    return next(line.split()[1].rstrip(":") for line in output.splitlines() if line.startswith("replay "))


def messages(config: Config, topic: str) -> list:
    return list(consume_all(config, [topic], idle_seconds=1.5))


def results_by_id(config: Config) -> Counter:
    return Counter(m.key().decode() for m in messages(config, config.settings.topics.results))


def wait_for_results(config: Config, ids: list[str]) -> None:
    store = RunStore(config.settings)
    try:
        wait_for(
            lambda: all(store.get_raw(i) for i in ids), 120, interval=0.2, what=f"results of {len(ids)} invocation(s)"
        )
    finally:
        store.close()


def test_replay_by_offsets_into_the_pipeline_runs_each_change_again_once(config: Config) -> None:
    events = produce_changes(
        config,
        [
            (0, 0, True, None),
            (0, 1, True, None),
            (0, 2, False, None),
            (1, 3, True, None),
            (1, 4, False, None),
            (1, 5, True, None),
        ],
    )
    with echo_runner(config):
        originals = publish_original_runs(config, events)
        assert len(originals) == 4
        wait_for_results(config, originals)

        # partition 0 offsets 1..2 (rows 1, 2) and all of partition 1 (rows 3, 4, 5); the rule runs on flagged rows
        args = ["replay", "shop.orders", "--from-offset", "0:1", "--to-offset", "0:3", "--from-offset", "1:0"]
        code, out = cdcflow(config, *args)
        assert code == 0, out
        replay_id = replay_id_of(out)
        replayed_events = [events[1], events[3], events[5]]
        expected = {
            invocation_id_for("replay", replay_id, invocation_id_for("cdc", "flagged", "echo", e["event_id"])): e
            for e in replayed_events
        }
        assert f"sent 3 to {config.settings.topics.invoke('echo')}" in out
        wait_for_results(config, list(expected))

        invoke_topic = config.settings.topics.invoke("echo")
        replays = [
            orjson.loads(m.value())
            for m in messages(config, invoke_topic)
            if orjson.loads(m.value())["trigger"]["kind"] == "replay"
        ]
        assert {r["invocation_id"] for r in replays} == set(expected) and len(replays) == 3
        for r in replays:
            event = expected[r["invocation_id"]]
            t = r["trigger"]
            assert t["original_event_id"] == event["event_id"] and t["replay_id"] == replay_id
            assert t["original_invocation_id"] == invocation_id_for("cdc", "flagged", "echo", event["event_id"])
            assert t["rule"] == "flagged" and t["table"] == "shop.orders" and t["source_topic"].endswith("shop.orders")
            assert r["params"] == {"message": f"order {event['after']['id']}", "data": event["event_id"]}

        # the same command again: same replay id, nothing sent a second time
        code, again = cdcflow(config, *args)
        assert code == 0 and replay_id_of(again) == replay_id
        assert "sent" not in again.replace("sent 0", "") and "were replayed by an earlier run" in again
        assert len(messages(config, invoke_topic)) == 4 + 3

        # --status on invocations: the status of each one's recorded run
        code, out = cdcflow(config, "replay", "invoke:echo", "--status", "success", "--dry-run")
        assert code == 0 and "dry run: 7 selected" in out
        code, out = cdcflow(config, "replay", "invoke:echo", "--status", "failed,pending", "--dry-run")
        assert code == 0 and "dry run: 0 selected" in out

    runs = results_by_id(config)
    store = RunStore(config.settings)
    try:
        for iid in [*originals, *expected]:
            assert runs[iid] == 1, f"{iid} ran {runs[iid]} times"
        assert all(store.get(i).trigger_kind == "replay" and store.get(i).status == "success" for i in expected)
        assert {store.get(i).output["data"] for i in expected} == {e["event_id"] for e in replayed_events}
    finally:
        store.close()


def test_replay_by_time_uses_offsets_for_times(config: Config) -> None:
    now = datetime.now(UTC)
    ms = lambda d: int((now - d).timestamp() * 1000)  # noqa: E731
    events = produce_changes(
        config,
        [
            (0, 10, True, ms(timedelta(hours=3))),
            (1, 11, True, ms(timedelta(hours=3))),
            (0, 12, True, ms(timedelta(minutes=90))),
            (1, 13, True, ms(timedelta(minutes=80))),
            (0, 14, True, ms(timedelta(minutes=10))),
            (1, 15, True, ms(timedelta(minutes=5))),
        ],
    )
    with echo_runner(config):
        code, out = cdcflow(config, "replay", "shop.orders", "--since", "2h", "--until", "30m")
        assert code == 0, out
        rid = replay_id_of(out)
        window = {
            invocation_id_for("replay", rid, invocation_id_for("cdc", "flagged", "echo", e["event_id"]))
            for e in events[2:4]
        }
        wait_for_results(config, list(window))

        # ISO bounds, only --since: the last two changes
        since = (now - timedelta(minutes=20)).isoformat()
        code, out = cdcflow(config, "replay", "shop.orders", "--since", since)
        assert code == 0, out
        rid2 = replay_id_of(out)
        assert rid2 != rid
        recent = {
            invocation_id_for("replay", rid2, invocation_id_for("cdc", "flagged", "echo", e["event_id"]))
            for e in events[4:]
        }
        wait_for_results(config, list(recent))

    invoked = Counter(m.key().decode() for m in messages(config, config.settings.topics.invoke("echo")))
    assert set(invoked) == window | recent and set(invoked.values()) == {1}
    runs = results_by_id(config)
    assert set(runs) == window | recent and set(runs.values()) == {1}


def test_dry_run_and_print_send_nothing(config: Config) -> None:
    produce_changes(config, [(0, 1, True, None), (0, 2, False, None), (1, 3, True, None)])
    code, out = cdcflow(config, "replay", "shop.orders", "--dry-run")
    assert code == 0, out
    assert "dry run: 3 selected, 2 message(s) would be sent; nothing sent" in out
    assert f"would send 2 to {config.settings.topics.invoke('echo')}" in out
    code, out = cdcflow(config, "replay", "shop.orders", "--dry-run", "--where", "after.id>=2", "--op", "INSERT")
    assert "dry run: 2 selected, 1 message(s) would be sent" in out
    code, out = cdcflow(config, "replay", "shop.orders", "--print", "--where", "after.flag=false")
    assert code == 0 and out.count("INSERT shop.orders") == 1 and '"id":2' in out

    assert messages(config, config.settings.topics.invoke("echo")) == []
    rid = replay_id_of(out)
    store = RunStore(config.settings)
    try:
        assert store.client.get(f"{config.settings.redis.key_prefix}:replay:{rid}") is None
    finally:
        store.close()


def test_replay_of_invocations_and_dead_letters_reruns_them_under_new_ids(config: Config) -> None:
    events = produce_changes(config, [(0, 1, True, None), (1, 2, True, None)])
    originals = publish_original_runs(config, events)
    dead = {
        "dlq_id": "dead-1",
        "plugin": "echo",
        "status": "failed",
        "attempts": [{}, {}],
        "error": {"type": "ValueError", "message": "boom"},
        "invocation": {
            "invocation_id": "dead-1",
            "plugin": "echo",
            "params": {"message": "again"},
            "trigger": {
                "kind": "manual",
                "requested_by": "t",
                "requested_at": "2026-01-01T00:00:00Z",
                "request_id": "q",
            },
            "attempt": 3,
            "priority": "high",
            "created_at": "2026-01-01T00:00:00Z",
        },
    }
    producer = Producer(config.settings.kafka_config())
    producer.produce(config.settings.topics.dlq, key=b"dead-1", value=orjson.dumps(dead))
    assert producer.flush(10) == 0

    code, out = cdcflow(config, "replay", "invoke:echo", "--where", "params.message=order 2")
    assert code == 0, out
    rid = replay_id_of(out)
    code, out = cdcflow(config, "replay", "dlq", "--status", "failed")
    assert code == 0, out
    rid_dlq = replay_id_of(out)

    normal = [orjson.loads(m.value()) for m in messages(config, config.settings.topics.invoke("echo"))]
    replays = [i for i in normal if i["trigger"]["kind"] == "replay"]
    assert [r["invocation_id"] for r in replays] == [invocation_id_for("replay", rid, originals[1])]
    assert (
        replays[0]["trigger"]["original_event_id"] == events[1]["event_id"]
        and replays[0]["trigger"]["rule"] == "flagged"
    )
    high = [orjson.loads(m.value()) for m in messages(config, config.settings.topics.invoke("echo", "high"))]
    assert len(high) == 1 and high[0]["invocation_id"] == invocation_id_for("replay", rid_dlq, "dead-1")
    assert high[0]["attempt"] == 1 and high[0]["params"] == {"message": "again"}
    assert high[0]["trigger"]["original_invocation_id"] == "dead-1"

    # results cannot be re-run (they have no parameters): refused before anything is read
    code, out = cdcflow(config, "replay", "results")
    assert code != 0 and "results carry no parameters" in out


def _committed(config: Config, group: str, topic: str, partitions: int, timeout: float = 10) -> int:
    c = Consumer(config.settings.kafka_config(**{"group.id": group}))
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return sum(max(tp.offset, 0) for tp in c.committed(tps, timeout=timeout))
    finally:
        c.close()


def start_and_kill_mid_way(config: Config, args: list[str], source: str) -> tuple[str, int]:
    """Run the replay command, kill -9 it once some batches are committed; (replay id, messages committed)."""
    first = subprocess.Popen(args, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ})
    try:
        header = ""
        while not header.startswith("replay "):
            header = first.stdout.readline().decode()  # type: ignore[union-attr]
            assert header or first.poll() is None, "the replay exited before saying its id"
        rid = header.split()[1].rstrip(":")
        group = f"cdcflow-replay-{rid}"
        wait_for(lambda: _committed(config, group, source, 2) >= 10, 60, interval=0.1, what="a few committed batches")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    # Killed inside a transaction, the group's offsets stay unstable (reads wait) until the broker
    # aborts it after the transaction timeout.
    return rid, _committed(config, group, source, 2, timeout=TRANSACTION_TIMEOUT + 30)


def assert_copied_once(config: Config, source: str, target: str, count: int) -> None:
    copies = messages(config, target)  # read_committed: the killed run's open transaction is invisible
    origins = Counter(dict(m.headers())["cdcflow-replay-source"].decode() for m in copies)
    assert len(copies) == count and len(origins) == count and set(origins.values()) == {1}
    originals = {(m.partition(), m.offset()): m for m in messages(config, source)}
    for m in copies:
        _, p, o = dict(m.headers())["cdcflow-replay-source"].decode().rsplit("/", 2)
        assert m.value() == originals[(int(p), int(o))].value() and m.key() == originals[(int(p), int(o))].key()


def test_interrupted_copy_to_another_topic_resumes_without_duplicates(config: Config) -> None:
    source = config.settings.topics.row_changes("shop", "orders")
    target = f"{config.settings.topics.results}.copy"
    produce_changes(config, [(i % 2, i, i % 3 == 0, None) for i in range(60)])
    args = [
        sys.executable,
        "-m",
        "console.cli",
        "-c",
        str(config.path),
        "replay",
        "shop.orders",
        "--to-topic",
        target,
        "--rate",
        "15",
        "--batch-size",
        "5",
    ]
    rid, done_before = start_and_kill_mid_way(config, args, source)
    assert 10 <= done_before < 60, "the first run was not interrupted mid-way"

    again = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ}, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"replay {rid}:" in again.stderr
    assert f"{done_before} message(s) of the range were replayed by an earlier run" in again.stderr
    assert_copied_once(config, source, target, 60)

    # a third run has nothing left
    third = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ}, timeout=60)
    assert third.returncode == 0 and "60 message(s) of the range were replayed by an earlier run" in third.stderr
    assert len(messages(config, target)) == 60

    # the copy, written in transactions (one aborted by the kill), is itself a replay source: its
    # committed messages are read once each, and the transaction markers at its end do not stall it
    code, out = cdcflow(config, "replay", target, "--dry-run")
    assert code == 0 and "scanned 60 message(s)" in out and "dry run: 60 selected, 20 message(s) would be sent" in out


def test_rerun_of_an_interrupted_relative_time_replay_continues_it(config: Config) -> None:
    """`--since 1h` resolves to a later start a few seconds on; the same command still continues its replay."""
    source = config.settings.topics.row_changes("shop", "orders")
    target = f"{config.settings.topics.results}.copy"
    now = time.time()
    edge = int((now - 3600 + 4) * 1000)  # inside `--since 1h` now, outside of it 4 s from now
    produce_changes(config, [(0, 0, True, edge)] + [(i % 2, i, True, int((now - 600) * 1000)) for i in range(1, 45)])
    args = [
        sys.executable,
        "-m",
        "console.cli",
        "-c",
        str(config.path),
        "replay",
        "shop.orders",
        "--since",
        "1h",
        "--to-topic",
        target,
        "--rate",
        "15",
        "--batch-size",
        "5",
    ]
    rid, done_before = start_and_kill_mid_way(config, args, source)
    assert 10 <= done_before < 45, "the first run was not interrupted mid-way"
    wait_for(lambda: time.time() > now + 5, 10, what="the first change to fall out of `--since 1h`")
    code, out = cdcflow(config, "replay", "shop.orders", "--since", "1h", "--to-topic", target, "--dry-run")
    assert code == 0 and replay_id_of(out) != rid  # resolved afresh, the range is another one

    again = subprocess.run(args, cwd=REPO_ROOT, capture_output=True, text=True, env={**os.environ}, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"continuing the unfinished replay {rid}" in again.stderr and f"replay {rid}:" in again.stderr
    assert_copied_once(config, source, target, 45)


def test_bad_ranges_and_filters_are_named(config: Config) -> None:
    produce_changes(config, [(0, 1, True, None)])
    code, out = cdcflow(config, "replay", "shop.orders", "--from-offset", "7:0")
    assert code == 2 and "has no partition 7" in out
    code, out = cdcflow(config, "replay", "shop.orders", "--since", "yesterday")
    assert code == 2 and "--since 'yesterday'" in out
    code, out = cdcflow(config, "replay", "shop.orders", "--where", "after.flag")
    assert code == 2 and "FIELD OP VALUE" in out
    code, out = cdcflow(config, "replay", "nosuch.table", "--dry-run")
    assert code == 2 and "no topic 'nosuch.table'" in out
    code, out = cdcflow(config, "replay", "shop.orders", "--op", "UPSERT")
    assert code == 2 and "--op 'UPSERT'" in out
