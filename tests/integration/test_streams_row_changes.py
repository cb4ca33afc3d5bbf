"""The row-change loop (streams/row_changes.py) against the real broker, in this process: one
transaction per batch, de-duplication of re-sent changes across restarts, a refused invocation,
and a committed offset that retention has deleted."""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from plugins.dlq import read_entries
from schemas.config import Config
from schemas.invocation import invocation_id_for
from schemas.runtime.kafka_topics import ensure_topics
from streams.matcher import Matcher
from streams.row_changes import MAX_ABORTS_PER_BATCH, Batch, RowChangeLoop
from streams.validation import validated_matcher
from tests.support import isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.streams import Collector

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


@dataclass
class Live:
    matcher: Matcher


@dataclass
class Ops:
    events: Counter[tuple[str, str]] = field(default_factory=Counter)

    def on_row_batch(
        self, tables: Counter[tuple[str, str]], rules: Counter[str], invocations: Counter[tuple[str, str]]
    ) -> None:
        self.events.update(tables)


@dataclass
class Env:
    config: Config
    source: str
    invoke: str
    producer: Producer
    collector: Collector
    fatal: list[BaseException] = field(default_factory=list)
    ops: Ops = field(default_factory=Ops)

    def loop(self, kind: type[RowChangeLoop] = RowChangeLoop) -> RowChangeLoop:
        loop = kind(
            self.config.settings,
            [self.source],
            Live(validated_matcher(self.config)),
            self.ops,
            on_fatal=self.fatal.append,
        )
        loop.start()
        return loop

    def send(self, pos: int, n: int = 0, blob: str = "") -> str:
        event_id = f"1:mysql-bin.000001:{pos}:0"
        self.producer.produce(
            self.source,
            key=orjson.dumps({"id": pos % 3}),
            partition=0,
            value=orjson.dumps(
                {
                    "before": None,
                    "after": {"id": pos % 3, "n": n, "blob": blob},
                    "op": "u",
                    "ts_ms": 1,
                    "event_id": event_id,
                    "source": {"db": "shop", "table": "orders"},
                }
            ),
        )
        assert self.producer.flush(30) == 0
        return invocation_id_for("cdc", "r", "echo", event_id)

    def committed(self) -> TopicPartition:
        probe = Consumer(self.config.settings.kafka_config(**{"group.id": self.config.settings.streams.rows_group_id}))
        try:
            return probe.committed([TopicPartition(self.source, 0)], timeout=60)[0]
        finally:
            probe.close()


@pytest.fixture
def env(stack: None, tmp_path: Path) -> Iterator[Env]:
    config = write_config(tmp_path, isolated_config_data("rowl", RULES))
    settings = config.settings
    source, invoke = settings.topics.row_changes("shop", "orders"), settings.topics.invoke("echo")
    ensure_topics(settings, [source, invoke], partitions=1)
    producer = Producer(settings.kafka_config(**{"message.max.bytes": 8_000_000}))
    collector = Collector(config, invoke)
    yield Env(config, source, invoke, producer, collector)
    collector.consumer.close()
    remove_test_resources(settings, [source, invoke, settings.topics.dlq])


def ids(env: Env) -> list[str]:
    return [m["invocation_id"] for m in env.collector.poll()]


def test_re_sent_changes_are_dropped_across_a_restart_and_the_mark_rides_on_the_offset(env: Env) -> None:
    env.send(50, n=-1)  # matches no rule: its batch commits an offset without a mark
    loop = env.loop()
    try:
        wait_for(lambda: env.committed().offset == 1, 60, what="a change that matches nothing to be consumed")
        assert env.committed().metadata in (None, "")
        expected = [env.send(pos) for pos in (100, 200, 300)]
        wait_for(lambda: sorted(ids(env)) == sorted(expected), 60, what="three invocations")
        env.send(310, n=-1)  # no match: the mark must survive this commit
        wait_for(lambda: env.committed().offset == 5, 60, what="the last change to be consumed")
    finally:
        loop.stop()
    assert not env.fatal
    committed = env.committed()
    assert (committed.offset, committed.metadata) == (5, "1:mysql-bin.000001:300:0")

    # The reader re-sends 200 and 300 after its own crash (same event ids, later offsets), then 400.
    env.send(200)
    env.send(300)
    expected.append(env.send(400))
    loop = env.loop()  # a new loop: the mark comes back from the committed offset, not from memory
    try:
        wait_for(lambda: env.committed().offset == 8, 60, what="the re-sent changes to be consumed")
    finally:
        loop.stop()
    assert not env.fatal
    got = ids(env)
    assert sorted(got) == sorted(expected), "a re-sent change was emitted again (or one was lost)"
    assert env.committed().metadata == "1:mysql-bin.000001:400:0"
    assert loop.progress.duplicates == 2
    assert loop.progress.recent_commit_ms > 0 and loop.progress.recent_batch_events >= 1  # the real transactions


def test_an_invocation_too_large_for_its_topic_is_dead_lettered_whole_and_the_partition_moves_on(env: Env) -> None:
    # Issue 17: this used to stop the loop (and so the worker, again at every restart) with nothing
    # committed. The invocation is not lost: the dead letter holds it whole, with the reason.
    big = env.send(100, blob="x" * 2_000_000)  # its invocation is over INVOKE_MAX_MESSAGE_BYTES (1 MB)
    loop = env.loop()
    try:
        wait_for(lambda: env.committed().offset == 1, 60, what="the change's offset to be committed")
        after = env.send(200)
        wait_for(lambda: ids(env) == [after], 60, what="the next change's invocation")
    finally:
        loop.stop()
    assert not env.fatal
    (entry,) = read_entries(env.config.settings, "echo")
    assert entry["dlq_id"] == big and entry["invocation"]["params"]["data"] == "x" * 2_000_000
    assert entry["error"]["type"] == "InvocationTooLarge"
    assert f"{env.invoke} takes messages of up to 1000000 bytes" in entry["error"]["message"]
    assert (entry["source_topic"], entry["source_partition"], entry["source_offset"]) == (env.source, 0, 0)
    assert ids(env) == [after]


def test_a_committed_offset_deleted_by_retention_resumes_at_the_log_start(env: Env) -> None:
    sent = [env.send(100 + 10 * i) for i in range(10)]
    settings = env.config.settings
    committer = Consumer(
        settings.kafka_config(**{"group.id": settings.streams.rows_group_id, "enable.auto.commit": False})
    )
    committer.commit(offsets=[TopicPartition(env.source, 0, 3)], asynchronous=False)
    committer.close()
    # retention (here: delete-records) removes offsets 0..5: the committed 3 no longer exists
    admin = AdminClient(settings.kafka_config())
    for future in admin.delete_records([TopicPartition(env.source, 0, 6)]).values():
        future.result(timeout=30)
    loop = env.loop()
    try:
        wait_for(lambda: sorted(ids(env)) == sorted(sent[6:]), 60, what="the changes from the log start")
    finally:
        loop.stop()
    assert not env.fatal


def test_stop_leaves_the_group_and_a_second_loop_continues_without_gaps(env: Env) -> None:
    first = env.loop()
    expected: list[str] = []
    feeding = threading.Event()

    def feed() -> None:
        for i in range(300):
            expected.append(env.send(1000 + 10 * i, n=i))
        feeding.set()

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        wait_for(lambda: len(ids(env)) >= 50, 60, interval=0.01, what="some invocations")
    finally:
        first.stop()
    second = env.loop()
    try:
        feeder.join()
        wait_for(lambda: len(ids(env)) >= len(expected), 60, what="every invocation")
    finally:
        second.stop()
    assert not env.fatal
    got = Counter(ids(env))
    assert set(got) == set(expected)
    assert all(c == 1 for c in got.values()), "an invocation was emitted twice"
    assert uuid.UUID(expected[0]).version == 5


class RefusedBeforeTheOffsets(RowChangeLoop):
    """The broker's refusal arrives before the batch's offsets are sent (it failed at send_offsets in
    CI once, whose delivery report the commit's flush had not served: the error did not name the topic)."""

    def _flush(self, batch: Batch) -> None:
        time.sleep(0.5)
        super()._flush(batch)


@pytest.mark.parametrize("seen_at", ["commit", "send_offsets"])
def test_an_invocation_the_broker_refuses_aborts_and_retries_the_batch_then_stops_naming_it(
    stack: None, tmp_path: Path, seen_at: str
) -> None:
    config = write_config(tmp_path, isolated_config_data("rowr", RULES))
    settings = config.settings
    source, invoke = settings.topics.row_changes("shop", "orders"), settings.topics.invoke("echo")
    ensure_topics(settings, [source], partitions=1)
    admin = AdminClient(settings.kafka_config())
    # the broker, not the client, refuses: the failure shows at commit, in an abortable transaction
    admin.create_topics([NewTopic(invoke, 1, 1, config={"max.message.bytes": "2000"})])[invoke].result(30)
    env = Env(config, source, invoke, Producer(settings.kafka_config()), Collector(config, invoke))
    try:
        env.send(100, blob=secrets.token_hex(5000))  # incompressible: lz4 must not shrink it under the limit
        loop = env.loop(RefusedBeforeTheOffsets if seen_at == "send_offsets" else RowChangeLoop)
        try:
            wait_for(lambda: bool(env.fatal), 60, what="the loop to give up")
        finally:
            loop.stop()
        assert loop.progress.aborts == MAX_ABORTS_PER_BATCH  # rewound and read again each time
        assert f"aborted {MAX_ABORTS_PER_BATCH} times" in str(env.fatal[0])
        assert f"{invoke}: Broker: Message size too large" in str(env.fatal[0])
        assert env.committed().offset < 0, "the refused batch's offset was committed"
        assert ids(env) == []
    finally:
        env.collector.consumer.close()
        remove_test_resources(settings, [source, invoke])


def test_first_start_takes_over_the_offsets_of_the_faust_group_of_earlier_versions(env: Env) -> None:
    sent = [env.send(100 + 10 * i) for i in range(5)]
    settings = env.config.settings
    faust_group = Consumer(settings.kafka_config(**{"group.id": settings.streams.app_id, "enable.auto.commit": False}))
    faust_group.commit(offsets=[TopicPartition(env.source, 0, 3)], asynchronous=False)
    faust_group.close()
    loop = env.loop()
    try:
        wait_for(lambda: env.committed().offset == 5, 60, what="the rest to be consumed")
    finally:
        loop.stop()
    assert not env.fatal
    wait_for(lambda: len(ids(env)) >= 2, 30, what="the two invocations")
    time.sleep(1)  # anything matched again would be there by now too
    assert sorted(ids(env)) == sorted(sent[3:]), "changes the Faust group had consumed were matched again"
