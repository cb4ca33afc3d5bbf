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
event ids, at later offsets of the same partition, in binlog order): each partition's last binlog
event id that matched a rule is committed with its offset (the offset commit's metadata, in the
same transaction), and a matched change at or before it in the same binlog file is a duplicate
(see is_resent). Event ids that are not binlog positions (snapshot reads) are not ordered; those
are de-duplicated downstream by invocation id (runners).

Poison never stalls a partition (streams/row_checks.py): a change the loop cannot act on (not JSON,
the wrong shape, a number orjson would round, nesting orjson cannot write) is skipped with a log line
naming its topic, partition and offset; an invocation too large for its plugin's topic goes whole to
the dead-letter topic, with the reason, in the batch's transaction.
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
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from schemas.runtime.kafka_topics import DLQ_MAX_MESSAGE_BYTES, INVOKE_MAX_MESSAGE_BYTES, ensure_topics
from schemas.settings import Settings
from streams.debounce import pending_key
from streams.debounce_pending import PendingDebounces, Staged
from streams.matcher import Matcher, PlannedInvocation
from streams.row_checks import BadRowChange, inexact_number, parse_change, too_large_dead_letter

log = logging.getLogger("cdcflow.streams")

BATCH_MAX_EVENTS = 5000
IDLE_POLL_SECONDS = 0.1
# A batch that keeps being aborted (e.g. the broker refuses one of its invocations) stops the
# worker instead of looping: nothing of it is committed, and the error names what was refused.
MAX_ABORTS_PER_BATCH = 5
# A change this small carries its before/after images in its invocations' triggers (so a run's page
# shows the row diff); a larger one (a blob, a long text) only its ids, not copies per plugin and run.
ROW_IN_TRIGGER_MAX_BYTES = 8 * 1024
MAX_MARK_CHARS = 1024  # see binlog_order
TP = tuple[str, int]
Mark = tuple[tuple[str, int, int], str]  # (binlog order, event id) of a partition's last matched change
Held = dict[str, tuple[int, list[dict[str, Any]]]]  # rule -> (debounce window, its invocations of one change)


def binlog_order(event_id: str) -> tuple[str, int, int] | None:
    """(server:file, pos, row) of a binlog event id `server:file:pos:row`; None for other ids.

    Also None for an id longer than any binlog position's: the mark rides on the committed offset as
    its metadata, which the broker caps (offset.metadata.max.bytes, 4096 by default), and a refused
    commit would abort every batch of the partition."""
    if len(event_id) > MAX_MARK_CHARS:
        return None
    parts = event_id.split(":")
    if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
        return None
    return f"{parts[0]}:{parts[1]}", int(parts[2]), int(parts[3])


def is_resent(order: tuple[str, int, int], mark: Mark | None) -> bool:
    """At or before the partition's mark in the same binlog file of the same server: a re-send.

    Another file is never judged a re-send: after a failover or RESET MASTER, file names and
    positions start over and compare lower, and dropping those would lose real changes silently.
    The cost is that a re-send spanning a file rotation passes here; its invocations carry the same
    deterministic ids, so runners drop them."""
    return mark is not None and order[0] == mark[0][0] and order[1:] <= mark[0][1:]


def transactional_id(settings: Settings) -> str:
    """Stable per worker instance (host and state dir), so a restarted worker fences its killed
    predecessor's open transaction at once instead of waiting for it to time out."""
    where = hashlib.sha1(str(settings.streams.state_dir.resolve()).encode()).hexdigest()[:10]
    return f"{settings.streams.rows_group_id}:{socket.gethostname()}:{where}"


def retrying(call: Callable[[], None], attempts: int = 10) -> None:
    """A transactional call again while librdkafka says its error is retriable (e.g. a timeout)."""
    for attempt in range(1, attempts + 1):
        try:
            call()
            return
        except KafkaException as e:
            error = e.args[0] if e.args else None
            if attempt == attempts or not isinstance(error, KafkaError) or not error.retriable():
                raise


def take_over_faust_offsets(consumer: Consumer, settings: Settings, topics: list[str]) -> None:
    """On the first start after an upgrade from a worker whose Faust agent consumed the row changes
    (group `<app_id>`), start where that group stopped instead of at the log's start, which would
    match the whole retained history again. Done once: afterwards this group has offsets."""
    metadata = consumer.list_topics(timeout=30)
    partitions = [TopicPartition(t, p) for t in topics if t in metadata.topics for p in metadata.topics[t].partitions]
    if not partitions or any(tp.offset >= 0 for tp in consumer.committed(partitions, timeout=60)):
        return
    old = Consumer(settings.kafka_config(**{"group.id": settings.streams.app_id, "enable.auto.commit": False}))
    try:
        found = [tp for tp in old.committed(partitions, timeout=60) if tp.offset >= 0]
    finally:
        old.close()
    if not found:
        return
    try:
        consumer.commit(offsets=[TopicPartition(tp.topic, tp.partition, tp.offset) for tp in found], asynchronous=False)
    except KafkaException as e:  # e.g. another worker joined the group first and commits itself
        log.warning("row changes: could not take over the Faust group's offsets: %s", e)
    else:
        log.warning(
            "row changes: first start of group %s; took over %d partition offset(s) from the Faust group %s",
            settings.streams.rows_group_id,
            len(found),
            settings.streams.app_id,
        )


class Live(Protocol):
    matcher: Matcher


class Ops(Protocol):
    def on_row_batch(
        self, tables: Counter[tuple[str, str]], rules: Counter[str], invocations: Counter[tuple[str, str]]
    ) -> None: ...


class RowChangesFailed(RuntimeError):
    """Kafka refused a batch's output for good (or fenced this worker): nothing of it was committed."""


@dataclass
class Batch:
    """One transaction's worth: what it produced and where each partition ends."""

    next: dict[TP, int] = field(default_factory=dict)  # partition -> offset after the batch
    marks: dict[TP, Mark] = field(default_factory=dict)  # staged dedup marks
    created_at: str = ""  # of the batch's invocations
    tables: Counter[tuple[str, str]] = field(default_factory=Counter)
    rules: Counter[str] = field(default_factory=Counter)
    invocations: Counter[tuple[str, str]] = field(default_factory=Counter)
    duplicates: int = 0
    pending: Staged = field(default_factory=Staged)  # debounce entries merged or flushed


RECENT_WEIGHT = 0.05  # of a transaction in the recent averages: roughly the last 20 count


@dataclass
class Progress:
    """Read by /metrics details and the status line (written by one thread).

    The transaction figures say whether the worker waits on Kafka: every batch is one transaction,
    whose offsets and commit are broker round trips (a few ms on an idle broker, tens on a busy
    one), and a batch holds what arrived meanwhile. The recent averages are for a person reading
    `cdcflow status`; the totals let a benchmark average over exactly its own window."""

    batches: int = 0
    events: int = 0
    emitted: int = 0
    duplicates: int = 0
    aborts: int = 0
    assigned: int = 0
    last_commit: float = 0.0
    commit_seconds: float = 0.0  # total of send_offsets_to_transaction + commit_transaction
    recent_batch_events: float = 0.0  # row changes per transaction that carried any
    recent_commit_ms: float = 0.0

    def record_commit(self, events: int, commit_seconds: float) -> None:
        """A committed transaction. One that only flushed debounced entries (no row change) counts in
        the totals, not in the recent averages: they describe the row changes' wait."""
        if events:
            w = 1.0 if self.recent_batch_events == 0 else RECENT_WEIGHT  # the first one sets them
            self.recent_batch_events += w * (events - self.recent_batch_events)
            self.recent_commit_ms += w * (commit_seconds * 1000 - self.recent_commit_ms)
        self.batches += 1
        self.events += events
        self.commit_seconds += commit_seconds
        self.last_commit = time.time()


class RowChangeLoop:
    def __init__(
        self,
        settings: Settings,
        topics: list[str],
        live: Live,
        ops: Ops,
        on_fatal: Callable[[BaseException], None],
        pending: PendingDebounces | None = None,
    ):
        self.settings = settings
        self.topics = topics
        self.live = live
        self.ops = ops
        self.on_fatal = on_fatal
        self.pending = pending
        self.progress = Progress()
        self._invoke_topics: dict[tuple[str, str], str] = {}
        # owned partition -> its committed dedup mark (None: no matched binlog change yet)
        self._marks: dict[TP, Mark | None] = {}
        self._delivery_errors: list[str] = []
        self._owned: set[TP] = set()
        self._consecutive_aborts = 0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        self._produce_one: Callable[..., None]  # the producer's produce and our delivery callback,
        self._on_delivery: Callable[[KafkaError | None, Message], None]  # bound once in _connect

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
                if messages or self._flush_due():
                    self._commit_batch(messages)
        except BaseException as e:  # noqa: BLE001 - any failure stops the worker, loudly
            log.error("row-change consumer stopped: %s", e)
            self.on_fatal(e)
        finally:
            self._close()

    def _connect(self) -> None:
        settings = self.settings
        self._producer = Producer(
            settings.kafka_config(
                **{
                    "transactional.id": transactional_id(settings),
                    # A kill -9'd worker's open transaction keeps its partitions' offsets unstable (the next
                    # owner waits) until the broker aborts it: short, as batches commit within milliseconds.
                    "transaction.timeout.ms": 10_000,
                    # The broker answers CONCURRENT_TRANSACTIONS to the next batch's first request while it
                    # still writes the previous commit's markers (a few ms); librdkafka retries after
                    # retry.backoff.ms, doubling up to the max. The default of 100 ms set the latency of every
                    # batch (104 ms per transaction); starting at 1 ms, send_offsets + commit take ~3 ms
                    # (p50, at 200 batches/s), 5 ms took ~9 ms.
                    "retry.backoff.ms": 1,
                    "retry.backoff.max.ms": 100,
                    "compression.type": "lz4",
                    "linger.ms": 2,
                    # The Java client's (and aiokafka's) partitioner, so an invocation id lands in the same
                    # partition whichever client produced it.
                    "partitioner": "murmur2_random",
                    # A dead letter may hold an invocation too large for its plugin's topic (the DLQ topic
                    # takes it); invocations are held to INVOKE_MAX_MESSAGE_BYTES by _send_invocation.
                    "message.max.bytes": DLQ_MAX_MESSAGE_BYTES,
                }
            )
        )
        ensure_topics(settings, [settings.topics.dlq])
        self._producer.init_transactions(60)
        self._produce_one = self._producer.produce
        self._on_delivery = self._delivered
        config = settings.kafka_config(
            **{
                "group.id": settings.streams.rows_group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "partition.assignment.strategy": "cooperative-sticky",
                # A kill -9'd worker's partitions move after 10 s, not librdkafka's default 45 s.
                "session.timeout.ms": 10_000,
                "heartbeat.interval.ms": 2_000,
            }
        )
        self._consumer = Consumer(config)
        take_over_faust_offsets(self._consumer, settings, self.topics)
        self._consumer.subscribe(
            self.topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
        )
        log.info(
            "row-change consumer joined group %s for %d topic(s)", settings.streams.rows_group_id, len(self.topics)
        )

    def _close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close()  # leaves the group: its partitions move at once
            except Exception as e:  # noqa: BLE001
                log.warning("row-change consumer close: %s", e)
        if self._producer is not None:
            try:  # a transaction left open by a failure: abort it now rather than at its timeout
                self._producer.abort_transaction(5)
            except KafkaException:
                pass  # none open (the usual case), or the producer is fenced

    # Rebalance callbacks run inside consume()/poll(), between two batches: no transaction is open.
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        log.info("row changes: assigned %s", ", ".join(f"{t}[{p}]" for t, p in tps))
        # The committed offsets first: that waits until the previous owner's last transaction is
        # committed or aborted, so the pending entries read next are exactly those it committed.
        self._restore_marks(tps)
        if self.pending is not None:
            self.pending.restore(tps)
        self._owned.update(tps)
        self.progress.assigned = len(self._owned)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self._owned.discard((p.topic, p.partition))
            self._marks.pop((p.topic, p.partition), None)
        if self.pending is not None:
            self.pending.drop([(p.topic, p.partition) for p in partitions])
        self.progress.assigned = len(self._owned)
        log.info("row changes: revoked %s", ", ".join(f"{p.topic}[{p.partition}]" for p in partitions))

    # -- the loop -------------------------------------------------------------------------------
    def _next_batch(self) -> list[Message]:
        """What is queued now (up to BATCH_MAX_EVENTS), or the first message to arrive within
        IDLE_POLL_SECONDS: a lone change is not held back waiting for a full batch. Only row changes
        of owned partitions, each with its topic, partition and offset set.

        The messages themselves, not (partition, offset, message) tuples: a tuple holding a message
        is a GC-tracked object that lives as long as the batch, two per message with its partition's,
        and they doubled the worker's garbage collections (full ones over its whole heap included: GC
        273 -> 402 ms per bench/streams_matching.py run, ~2% of the worker's CPU)."""
        consumer = self._consumer
        assert consumer is not None
        messages = consumer.consume(BATCH_MAX_EVENTS, 0)
        if not messages:
            first = consumer.poll(IDLE_POLL_SECONDS)
            if first is None:
                return []
            messages = [first, *consumer.consume(BATCH_MAX_EVENTS - 1, 0)]
        good: list[Message] = []
        owned = self._owned
        for m in messages:
            error = m.error()
            if error is None:
                # librdkafka sets all three on a message that is not an error (owned holds no None). The
                # second call may have revoked the first one's partition: not ours to commit.
                if (m.topic(), m.partition()) in owned and m.offset() is not None:
                    good.append(m)
            elif error.fatal():
                raise KafkaException(error)
            elif error.code() != KafkaError._PARTITION_EOF:
                log.warning("row-change consumer: %s", error.str())
        return good

    def _commit_batch(self, messages: list[Message]) -> None:
        """Produce the batch's output and commit it with its offsets. On an abortable failure (a
        refused delivery, a lost group membership) the batch is aborted and its partitions rewound,
        and the loop polls again (rejoining the group if it was dropped): nothing is lost. After
        MAX_ABORTS_PER_BATCH aborts in a row the worker stops, naming the failure."""
        producer, consumer = self._producer, self._consumer
        assert producer is not None and consumer is not None
        self._delivery_errors.clear()
        producer.begin_transaction()
        try:
            batch = self._produce(messages)
            self._flush(batch)
            committing = time.monotonic()
            if batch.next:
                offsets = [self._offset(batch, tp, offset) for tp, offset in batch.next.items()]
                retrying(lambda: producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30))
            retrying(lambda: producer.commit_transaction(30))
        except KafkaException as e:
            error = e.args[0] if e.args else None
            if not isinstance(error, KafkaError) or not error.txn_requires_abort():
                raise RowChangesFailed(self._describe(e)) from e
            self._aborted(messages, e)
            return
        except RowChangesFailed:
            retrying(lambda: producer.abort_transaction(30))
            raise
        self._consecutive_aborts = 0
        self._settled(batch, time.monotonic() - committing)

    def _aborted(self, messages: list[Message], failure: KafkaException) -> None:
        producer, consumer = self._producer, self._consumer
        assert producer is not None and consumer is not None
        self.progress.aborts += 1
        self._consecutive_aborts += 1
        size = len(messages)
        retrying(lambda: producer.abort_transaction(30))
        # The refused message's delivery report names its topic. A refusal that arrived before the commit
        # (seen at send_offsets) has not been served by the commit's flush; after the abort it is queued.
        producer.poll(0)
        why = self._describe(failure)
        log.warning("row-change batch of %d aborted (%d in a row): %s", size, self._consecutive_aborts, why)
        if self._consecutive_aborts >= MAX_ABORTS_PER_BATCH:
            raise RowChangesFailed(
                f"a batch of {size} row change(s) was aborted {self._consecutive_aborts} times in a row: {why}"
            )
        first: dict[TP, int] = {}
        for m in messages:
            topic, partition, offset = m.topic(), m.partition(), m.offset()
            if topic is not None and partition is not None and offset is not None:  # as _next_batch kept
                first.setdefault((topic, partition), offset)
        for (topic, partition), offset in first.items():
            try:  # read it again; a partition no longer ours is read by its new owner
                consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as e:
                log.info("row changes: not rewinding %s[%d] (%s)", topic, partition, e)

    def _describe(self, e: KafkaException) -> str:
        error = e.args[0] if e.args else None
        text = error.str() if isinstance(error, KafkaError) else str(e)
        if self._delivery_errors:
            text += f" (e.g. {self._delivery_errors[0]})"
        return text

    def _settled(self, batch: Batch, commit_seconds: float) -> None:
        self._marks.update(batch.marks)
        if self.pending is not None:
            self.pending.apply(batch.pending)
        progress = self.progress
        progress.record_commit(sum(batch.tables.values()), commit_seconds)
        progress.emitted += sum(batch.invocations.values())
        progress.duplicates += batch.duplicates
        self.ops.on_row_batch(batch.tables, batch.rules, batch.invocations)

    def _offset(self, batch: Batch, tp: TP, offset: int) -> TopicPartition:
        """The offset to commit, carrying the partition's dedup mark (a commit replaces the metadata)."""
        mark = batch.marks.get(tp) or self._marks.get(tp)
        if mark is None:  # TopicPartition takes no None metadata
            return TopicPartition(tp[0], tp[1], offset)
        return TopicPartition(tp[0], tp[1], offset, mark[1])

    def _restore_marks(self, partitions: list[TP]) -> None:
        """The dedup marks of newly assigned partitions: the metadata of their committed offsets
        (committed in the same transaction as the offset, so the two always agree)."""
        assert self._consumer is not None
        for tp in self._consumer.committed([TopicPartition(t, p) for t, p in partitions], timeout=60):
            if tp.error is not None:  # guessing "no mark" would let re-sent changes through
                raise KafkaException(tp.error)
            event_id = tp.metadata or None
            order = binlog_order(event_id) if event_id else None
            self._marks[(tp.topic, tp.partition)] = (order, event_id) if order and event_id else None

    def _produce(self, messages: list[Message]) -> Batch:
        """Parse, match, de-duplicate and produce one batch (inside the open transaction)."""
        matcher = self.live.matcher  # one rules version per batch (hot reload swaps it)
        batch = Batch(created_at=datetime.now(UTC).isoformat())
        log_each = log.isEnabledFor(logging.INFO)
        for message in messages:
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            if topic is None or partition is None or offset is None:
                continue  # never: _next_batch kept only messages with all three (this narrows the types)
            tp = (topic, partition)
            batch.next[tp] = offset + 1
            if message.value() is None and message.key() is not None:
                continue  # a tombstone after a delete (cdc.format: debezium): compaction's, not a change
            try:
                raw = message.value() or b""
                change, source, event_id = parse_change(raw)
                table = (source["db"], source["table"])
                matches = matcher.match(change, carry_row=len(raw) <= ROW_IN_TRIGGER_MAX_BYTES)
                if matches and (inexact := inexact_number(raw)) is not None:
                    raise BadRowChange(inexact)
            except Exception as e:  # noqa: BLE001 - one bad message must not stop the partition
                _skip(tp, offset, e)
                continue
            batch.tables[table] += 1
            if not matches:
                continue  # most changes match no rule: no de-dup state needed
            order = binlog_order(event_id)
            if order is not None:
                mark = batch.marks.get(tp) or self._marks.get(tp)
                if is_resent(order, mark):
                    batch.duplicates += 1
                    log.debug(
                        "re-sent row change %s dropped (%s[%d] is past %s)",
                        event_id,
                        tp[0],
                        tp[1],
                        mark[1] if mark else None,
                    )
                    continue
                batch.marks[tp] = (order, event_id)
            try:  # all of the change's output encoded before any of it is sent: all of it or none
                encoded, held = _encode(batch, matches)
            except Exception as e:  # noqa: BLE001 - e.g. nesting deeper than orjson writes
                _skip(tp, offset, e)
                continue
            self._emit(batch, event_id, source, encoded, log_each, (tp[0], tp[1], offset))
            if held:
                self._hold(batch, tp, source, message.key(), held)
        return batch

    def _emit(
        self,
        batch: Batch,
        event_id: str,
        source: dict[str, Any],
        encoded: list[tuple[PlannedInvocation, bytes]],
        log_each: bool,
        where: tuple[str, int, int],
    ) -> None:
        """Produce a matched change's invocations (debounced ones are held instead, by the caller)."""
        for planned, value in encoded:
            invocation = planned.invocation
            if not self._send_invocation(batch, invocation, value, where):
                continue
            if log_each:
                log.info(
                    "row change %s on %s.%s -> %s (rule %s, invocation %s)",
                    event_id,
                    source["db"],
                    source["table"],
                    planned.plugin,
                    invocation["trigger"]["rule"],
                    invocation["invocation_id"],
                    extra={
                        "event_id": event_id,
                        "plugin": planned.plugin,
                        "invocation_id": invocation["invocation_id"],
                    },
                )

    def _send_invocation(
        self, batch: Batch, invocation: dict[str, Any], value: bytes, where: tuple[str, int, int] | None
    ) -> bool:
        """To its plugin's topic, or, too large for it, to the dead-letter topic (True: sent to the plugin)."""
        topic = self._invoke_topic(invocation["plugin"], invocation["priority"])
        key = invocation["invocation_id"].encode()
        size = len(key) + len(value)
        if size <= INVOKE_MAX_MESSAGE_BYTES:
            self._send(topic, key, value)
            batch.invocations[(invocation["plugin"], "cdc")] += 1
            return True
        entry = too_large_dead_letter(invocation, size, topic, INVOKE_MAX_MESSAGE_BYTES, where)
        log.warning(
            "invocation %s of %s (%d bytes) is too large for %s; dead-lettered with it%s",
            invocation["invocation_id"],
            invocation["plugin"],
            size,
            topic,
            f" (row change {where[0]}[{where[1]}]@{where[2]})" if where else "",
            extra={"plugin": invocation["plugin"], "invocation_id": invocation["invocation_id"]},
        )
        self._send(self.settings.topics.dlq, key, orjson.dumps(entry))
        return False

    def _hold(
        self,
        batch: Batch,
        tp: TP,
        source: dict[str, Any],
        key: bytes | None,
        held: Held,
    ) -> None:
        """Debounced matches: merged into the row's pending entry, whose new state is written to the
        pending topic in this transaction (streams/debounce_pending.py)."""
        if self.pending is None:
            log.error("a debounced rule matched but the worker was started without debouncing; restart it")
            return
        row_key = f"{source.get('db')}.{source.get('table')}|{(key or b'').decode(errors='replace')}"
        now_ms = int(time.time() * 1000)
        for rule, (window_ms, invocations) in held.items():
            record, value = self.pending.merge(
                batch.pending, tp, pending_key(rule, row_key), invocations, window_ms, now_ms
            )
            self._send(self.pending.topic, record, value, partition=tp[1])

    def _flush_due(self) -> bool:
        return self.pending is not None and bool(self.pending.due(Staged(), int(time.time() * 1000)))

    def _flush(self, batch: Batch) -> None:
        """Emit the pending entries whose window closed, and remove them, in this transaction."""
        if self.pending is None:
            return
        created_at = datetime.now(UTC).isoformat()
        for tp, key, entry in self.pending.due(batch.pending, int(time.time() * 1000)):
            for invocation in entry["invocations"]:
                invocation["created_at"] = created_at
                self._send_invocation(batch, invocation, orjson.dumps(invocation), None)
            self._send(self.pending.topic, self.pending.flushed(batch.pending, tp, key), None, partition=tp[1])
            log.info(
                "debounced %d change(s) of %s -> %d invocation(s)", entry["changes"], key, len(entry["invocations"])
            )

    def _send(self, topic: str, key: bytes, value: bytes | None, partition: int = -1) -> None:
        """Into the open transaction (-1: the partitioner picks), waiting while librdkafka's queue is full."""
        while True:
            try:
                # bound once in _connect: ~3 calls per change, each lookup and bound method counts
                self._produce_one(topic, value, key, partition, on_delivery=self._on_delivery)
                return
            except BufferError:  # librdkafka's queue is full: let it drain
                assert self._producer is not None
                self._producer.poll(0.05)
            except KafkaException as e:
                error = e.args[0] if e.args else e
                raise RowChangesFailed(
                    f"{topic}: a message of {len(value or b'')} bytes was refused: "
                    f"{error.str() if isinstance(error, KafkaError) else error}"
                ) from e

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None and len(self._delivery_errors) < 10:
            self._delivery_errors.append(f"{message.topic()}: {error.str()}")

    def _invoke_topic(self, plugin: str, priority: str) -> str:
        name = self._invoke_topics.get((plugin, priority))
        if name is None:
            name = self._invoke_topics[(plugin, priority)] = self.settings.topics.invoke(plugin, priority)
        return name


def _skip(tp: TP, offset: int, error: Exception) -> None:
    log.error("skipping malformed row change at %s[%d]@%d: %s: %s", tp[0], tp[1], offset, type(error).__name__, error)


def _encode(batch: Batch, matches: list[PlannedInvocation]) -> tuple[list[tuple[PlannedInvocation, bytes]], Held]:
    """The change's invocations to send, encoded, and those of debounced rules to hold (checked to
    encode too: a held entry that cannot be written would fail its batch later, and every one after)."""
    encoded: list[tuple[PlannedInvocation, bytes]] = []
    held: Held = {}
    rows: tuple[orjson.Fragment, orjson.Fragment] | None = None
    for planned in matches:
        invocation = planned.invocation
        trigger = invocation["trigger"]
        rule = trigger["rule"]
        # One too large for its topic would not fit the pending topic either: it goes out (dead-lettered) now.
        if planned.debounce_ms and len(orjson.dumps(invocation)) < INVOKE_MAX_MESSAGE_BYTES:
            held.setdefault(rule, (planned.debounce_ms, []))[1].append(invocation)
            continue
        if "after" in trigger and not planned.debounce_ms:
            # The row images (carry_row) are the same for all of the change's triggers: encoded once
            # per change, not once per invocation (~3 per change in bench/streams_matching.py). Only
            # in triggers of rules without debouncing, none of whose invocations is held (a held one
            # stays plain JSON values for the pending topic).
            if rows is None:
                rows = orjson.Fragment(orjson.dumps(trigger["before"])), orjson.Fragment(orjson.dumps(trigger["after"]))
            trigger["before"], trigger["after"] = rows
        invocation["created_at"] = batch.created_at
        encoded.append((planned, orjson.dumps(invocation)))
    for planned in matches:  # counted once the whole change is known to go out
        batch.rules[planned.invocation["trigger"]["rule"]] += 1
    return encoded, held
