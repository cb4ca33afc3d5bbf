"""Row changes -> invocations: batches read by librdkafka, each committed in one Kafka transaction.

Why not a Faust agent: faust-streaming hands each message through its own consumer, channel and
stream machinery (~13k messages/s on this machine with an agent that does nothing, measured by
bench/streams_matching.py), and it lost messages around rebalances (the offset guard of earlier
versions). This is the app's hot path, so it runs on a librdkafka consumer in a thread of the
Faust worker, in its own consumer group (`<app_id>-rows`, cooperative-sticky assignment).

Exactly once per (rule, plugin, row change), by Kafka transactions (EOS v2): a batch's
invocations, its debounce holds and the consumer offsets after it commit together, and
`send_offsets_to_transaction` carries the group generation, so a worker that lost a partition
cannot commit it. A crash, kill -9 or rebalance between two commits leaves the batch aborted and
read again by whoever owns the partition; read_committed consumers (the runners, librdkafka's
default) never see aborted invocations, and invocation ids are deterministic anyway.

Redelivery from the source (the reader re-sends rows after its own crash, with their original
event ids, at later offsets of the same partition, in binlog order): each partition's highest
binlog event id that matched a rule is committed with its offset (the offset commit's metadata,
in the same transaction), and a matched change at or below it is a duplicate. Event ids that are
not binlog positions (snapshot reads) are not ordered; those are de-duplicated downstream by
invocation id (runners).
"""
from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from schemas.settings import Settings
from streams.debounce import pending_key
from streams.matcher import Matcher

log = logging.getLogger("cdcflow.streams")

BATCH_MAX_EVENTS = 5000
IDLE_POLL_SECONDS = 0.1
# A batch that keeps being aborted (e.g. the broker refuses one of its invocations) stops the
# worker instead of looping: nothing of it is committed, and the error names what was refused.
MAX_ABORTS_PER_BATCH = 5
TP = tuple[str, int]


def binlog_order(event_id: str) -> tuple[str, int, int] | None:
    """(file, pos, row) of a binlog event id `server:file:pos:row`; None for other ids."""
    parts = event_id.split(":")
    if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
        return None
    return parts[1], int(parts[2]), int(parts[3])


def debounce_hold_topic(settings: Settings) -> str:
    return f"{settings.streams.app_id}-debounce-hold"


def transactional_id(settings: Settings) -> str:
    """Stable per worker instance (host and state dir), so a restarted worker fences its killed
    predecessor's open transaction at once instead of waiting for it to time out."""
    where = hashlib.sha1(str(settings.streams.state_dir.resolve()).encode()).hexdigest()[:10]
    return f"{settings.streams.rows_group_id}:{socket.gethostname()}:{where}"


class Live(Protocol):
    matcher: Matcher


class Ops(Protocol):
    def on_row_batch(self, tables: Counter[tuple[str, str]], rules: Counter[str],
                     invocations: Counter[tuple[str, str]]) -> None: ...


class RowChangesFailed(RuntimeError):
    """Kafka refused a batch's output for good (or fenced this worker): nothing of it was committed."""


@dataclass
class Batch:
    """One transaction's worth: what it produced and where each partition started and ends."""

    first: dict[TP, int] = field(default_factory=dict)  # partition -> first offset in the batch
    next: dict[TP, int] = field(default_factory=dict)  # partition -> offset after the batch
    highest: dict[TP, tuple[tuple[str, int, int], str]] = field(default_factory=dict)  # staged dedup marks
    tables: Counter[tuple[str, str]] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    invocations: Counter[tuple[str, str]] = field(default_factory=Counter)
    duplicates: int = 0


@dataclass
class Progress:
    """Read by /metrics details and the status line (plain ints: written by one thread)."""

    batches: int = 0
    events: int = 0
    emitted: int = 0
    duplicates: int = 0
    aborts: int = 0
    assigned: int = 0
    last_commit: float = 0.0


class RowChangeLoop:
    def __init__(self, settings: Settings, topics: list[str], live: Live, ops: Ops,
                 on_fatal: Callable[[BaseException], None], debounce_topic: str | None = None):
        self.settings = settings
        self.topics = topics
        self.live = live
        self.ops = ops
        self.on_fatal = on_fatal
        self.debounce_topic = debounce_topic
        self.progress = Progress()
        self._invoke_topics: dict[tuple[str, str], str] = {}
        # partition -> (binlog order, event id) of the highest matched change committed
        self._highest: dict[TP, tuple[tuple[str, int, int], str] | None] = {}
        self._delivery_errors: list[str] = []
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="row-changes", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch in hand (its transaction commits), leave the group, close."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._connect()
            while not self._stopping.is_set():
                messages = self._next_batch()
                if messages:
                    self._commit_batch(messages)
        except BaseException as e:  # noqa: BLE001 - any failure stops the worker, loudly
            log.error("row-change consumer stopped: %s", e)
            self.on_fatal(e)
        finally:
            self._close()

    def _connect(self) -> None:
        settings = self.settings
        self._producer = Producer(settings.kafka_config(**{
            "transactional.id": transactional_id(settings),
            # A kill -9'd worker's open transaction keeps its partitions' offsets unstable (the next
            # owner waits) until the broker aborts it: short, as batches commit within milliseconds.
            "transaction.timeout.ms": 10_000,
            # The broker answers CONCURRENT_TRANSACTIONS to the next batch's AddOffsetsToTxn while it
            # still writes the previous commit's markers (a few ms); librdkafka retries after
            # retry.backoff.ms, whose default of 100 ms set the latency of every batch (measured:
            # 104 ms per transaction, 9 ms with these).
            "retry.backoff.ms": 5,
            "retry.backoff.max.ms": 100,
            "compression.type": "lz4",
            "linger.ms": 2,
            # The Java client's (and aiokafka's) partitioner, so an invocation id lands in the same
            # partition whichever client produced it.
            "partitioner": "murmur2_random",
        }))
        self._producer.init_transactions(60)
        self._consumer = Consumer(settings.kafka_config(**{
            "group.id": settings.streams.rows_group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "partition.assignment.strategy": "cooperative-sticky",
            # A kill -9'd worker's partitions move after 10 s, not librdkafka's default 45 s.
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 2_000,
        }))
        self._consumer.subscribe(self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                 on_lost=self._on_revoke)
        log.info("row-change consumer joined group %s for %d topic(s)", settings.streams.rows_group_id, len(self.topics))

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()  # leaves the group: its partitions move at once
            except Exception as e:  # noqa: BLE001
                log.warning("row-change consumer close: %s", e)
        if self._producer is not None:
            self._producer.flush(5)

    # Rebalance callbacks run inside consume()/poll(), between two batches: no transaction is open.
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.progress.assigned += len(partitions)
        log.info("row changes: assigned %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.progress.assigned = max(0, self.progress.assigned - len(partitions))
        for p in partitions:
            self._highest.pop((p.topic, p.partition), None)
        log.info("row changes: revoked %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    # -- the loop -------------------------------------------------------------------------------
    def _next_batch(self) -> list[Message]:
        """What is queued now (up to BATCH_MAX_EVENTS), or the first message to arrive within
        IDLE_POLL_SECONDS: a lone change is not held back waiting for a full batch."""
        consumer = self._consumer
        assert consumer is not None
        messages = consumer.consume(BATCH_MAX_EVENTS, 0)
        if not messages:
            first = consumer.poll(IDLE_POLL_SECONDS)
            if first is None:
                return []
            messages = [first, *consumer.consume(BATCH_MAX_EVENTS - 1, 0)]
        good = []
        for m in messages:
            error = m.error()
            if error is None:
                good.append(m)
            elif error.fatal():
                raise KafkaException(error)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("row-change consumer: %s", error.str())
        return good

    def _commit_batch(self, messages: list[Message]) -> None:
        """Produce the batch's output and commit it with its offsets; on an abortable failure, rewind
        and do it again (so nothing is lost), at most MAX_ABORTS_PER_BATCH times."""
        producer, consumer = self._producer, self._consumer
        assert producer is not None and consumer is not None
        self._restore_highest({(m.topic(), m.partition()) for m in messages})
        for attempt in range(1, MAX_ABORTS_PER_BATCH + 1):
            self._delivery_errors.clear()
            producer.begin_transaction()
            try:
                batch = self._produce(messages)
                offsets = [TopicPartition(topic, partition, offset, self._mark(batch, (topic, partition)))
                           for (topic, partition), offset in batch.next.items()]
                producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
                self._commit(producer)
            except KafkaException as e:
                error = e.args[0] if e.args else None
                if not isinstance(error, KafkaError) or not error.txn_requires_abort():
                    raise RowChangesFailed(self._describe(e)) from e
                self.progress.aborts += 1
                log.warning("row-change batch of %d aborted (attempt %d of %d): %s", len(messages), attempt,
                            MAX_ABORTS_PER_BATCH, self._describe(e))
                producer.abort_transaction(30)
                if attempt == MAX_ABORTS_PER_BATCH:
                    raise RowChangesFailed(f"a batch of {len(messages)} row change(s) was aborted "
                                           f"{attempt} times: {self._describe(e)}") from e
                continue
            except RowChangesFailed:
                producer.abort_transaction(30)
                raise
            self._settled(batch)
            return

    def _commit(self, producer: Producer) -> None:
        while True:
            try:
                producer.commit_transaction(30)
                return
            except KafkaException as e:
                error = e.args[0] if e.args else None
                if isinstance(error, KafkaError) and error.retriable():
                    continue
                raise

    def _describe(self, e: KafkaException) -> str:
        error = e.args[0] if e.args else None
        text = error.str() if isinstance(error, KafkaError) else str(e)
        if self._delivery_errors:
            text += f" (e.g. {self._delivery_errors[0]})"
        return text

    def _settled(self, batch: Batch) -> None:
        for tp, mark in batch.highest.items():
            self._highest[tp] = mark
        progress = self.progress
        progress.batches += 1
        progress.events += sum(batch.tables.values())
        progress.emitted += sum(batch.invocations.values())
        progress.duplicates += batch.duplicates
        progress.last_commit = time.time()
        self.ops.on_row_batch(batch.tables, batch.rules, batch.invocations)

    def _mark(self, batch: Batch, tp: TP) -> str | None:
        mark = batch.highest.get(tp) or self._highest.get(tp)
        return mark[1] if mark else None

    def _restore_highest(self, partitions: set[TP]) -> None:
        """The dedup mark of partitions new to this worker: the metadata of their committed offset
        (committed in the same transaction as the offset, so the two always agree)."""
        missing = [TopicPartition(t, p) for t, p in partitions if (t, p) not in self._highest]
        if not missing:
            return
        assert self._consumer is not None
        for tp in self._consumer.committed(missing, timeout=60):
            event_id = tp.metadata or None
            order = binlog_order(event_id) if event_id else None
            self._highest[(tp.topic, tp.partition)] = (order, event_id) if order and event_id else None

    def _produce(self, messages: list[Message]) -> Batch:
        """Parse, match, de-duplicate and produce one batch (inside the open transaction)."""
        producer = self._producer
        assert producer is not None
        produce = producer.produce
        delivered = self._delivered
        matcher = self.live.matcher  # one rules version per batch (hot reload swaps it)
        batch = Batch()
        log_each = log.isEnabledFor(logging.INFO)
        created_at = datetime.now(timezone.utc).isoformat()
        for message in messages:
            tp = (message.topic(), message.partition())
            offset = message.offset()
            batch.first.setdefault(tp, offset)
            batch.next[tp] = offset + 1
            try:
                change = orjson.loads(message.value())
                event_id = change["event_id"]
                source = change["source"]
                matches = matcher.match(change)
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
                log.error("skipping malformed row change at %s[%d]@%d: %s", tp[0], tp[1], offset, e)
                continue
            batch.tables[(source.get("db") or "?", source.get("table") or "?")] += 1
            if not matches:
                continue  # most changes match no rule: no de-dup state needed
            order = binlog_order(event_id)
            if order is not None:
                highest = batch.highest.get(tp) or self._highest.get(tp)
                if highest is not None and order <= highest[0]:
                    batch.duplicates += 1
                    log.debug("duplicate row change %s dropped (%s[%d] is past %s)", event_id, tp[0], tp[1],
                              highest[1])
                    continue
                batch.highest[tp] = (order, event_id)
            held: dict[str, tuple[int, list[dict[str, Any]]]] = {}
            for planned in matches:
                invocation = planned.invocation
                rule = invocation["trigger"]["rule"]
                batch.rules[rule] += 1
                if planned.debounce_ms:
                    held.setdefault(rule, (planned.debounce_ms, []))[1].append(invocation)
                    continue
                invocation["created_at"] = created_at
                batch.invocations[(planned.plugin, "cdc")] += 1
                self._send(produce, self._invoke_topic(planned.plugin, invocation["priority"]),
                           invocation["invocation_id"].encode(), orjson.dumps(invocation), delivered)
                if log_each:
                    log.info("row change %s on %s.%s -> %s (rule %s, invocation %s)", event_id, source["db"],
                             source["table"], planned.plugin, rule, invocation["invocation_id"],
                             extra={"event_id": event_id, "plugin": planned.plugin,
                                    "invocation_id": invocation["invocation_id"]})
            if held:
                self._hold(produce, tp, source, message.key(), held, delivered)
        return batch

    def _hold(self, produce: Callable[..., None], tp: TP, source: dict[str, Any], key: bytes | None,
              held: dict[str, tuple[int, list[dict[str, Any]]]], delivered: Callable[..., None]) -> None:
        """Debounced matches go to the Faust app's hold topic, in the source's partition number: its
        agent merges them into the debounce table partition of the same number (streams/app.py)."""
        if self.debounce_topic is None:
            log.error("a debounced rule matched but the worker was started without debouncing; restart it")
            return
        row_key = f"{source.get('db')}.{source.get('table')}|{(key or b'').decode(errors='replace')}"
        for rule, (window_ms, invocations) in held.items():
            hold_key = pending_key(rule, row_key)
            value = orjson.dumps({"key": hold_key, "window_ms": window_ms, "invocations": invocations})
            self._send(produce, self.debounce_topic, hold_key.encode(), value, delivered, partition=tp[1])

    def _send(self, produce: Callable[..., None], topic: str, key: bytes, value: bytes,
              delivered: Callable[..., None], partition: int | None = None) -> None:
        extra = {} if partition is None else {"partition": partition}
        while True:
            try:
                produce(topic, value, key, on_delivery=delivered, **extra)
                return
            except BufferError:  # librdkafka's queue is full: let it drain
                assert self._producer is not None
                self._producer.poll(0.05)
            except KafkaException as e:
                error = e.args[0] if e.args else e
                raise RowChangesFailed(f"{topic}: a message of {len(value)} bytes was refused: "
                                       f"{error.str() if isinstance(error, KafkaError) else error}") from e

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None and len(self._delivery_errors) < 10:
            self._delivery_errors.append(f"{message.topic()}: {error.str()}")

    def _invoke_topic(self, plugin: str, priority: str) -> str:
        name = self._invoke_topics.get((plugin, priority))
        if name is None:
            name = self._invoke_topics[(plugin, priority)] = self.settings.topics.invoke(plugin, priority)
        return name
