"""The row-change agent's work, in batches: match, de-duplicate and produce; record and ack once delivered.

Per event only what must be per event: parse, match, the de-dup check. A batch's invocations are
handed to the producer at once (streams/invocation_producer.py) and the agent goes on with the next
batch while Kafka acknowledges them. A batch is *settled* (its rows' last event ids written to the
de-dup table, then its events acked) only once every invocation it produced is delivered, and
batches settle in order, so neither the de-dup state nor a committed offset ever runs ahead of what
Kafka acknowledged: a crash in between at worst re-emits invocations under the same deterministic ids.
The de-dup check reads the rows this worker already wrote (or is about to) from memory (`known`,
reset on every rebalance), and only the others from the table.

A batch is sealed when Faust has no further event queued for the agent (so a lone change is not
held back), at BATCH_MAX_EVENTS, or after BATCH_MAX_SECONDS. A background sweep settles delivered
batches when no event comes, and seals a batch whose next event never comes (Faust clears the
agent's queue on a rebalance or a stop, then waits for the acks).
"""
from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import faust
import orjson
from faust.streams import _current_event  # the context var Faust tables read the partition from

from schemas.settings import TopicSettings
from streams.debounce import merge_pending, pending_key
from streams.invocation_producer import InvocationProducer, InvocationsNotDelivered
from streams.matcher import Matcher
from streams.offset_guard import OffsetGuard, Verdict

log = logging.getLogger("cdcflow.streams")


BATCH_MAX_EVENTS = 2000
BATCH_MAX_SECONDS = 0.05
# Then the agent waits for the oldest batch to settle: bounds the unacked events. Counted in events,
# not batches: under a light load a batch is one event, and a few batches' worth of Kafka round
# trips would cap the rate.
MAX_UNSETTLED_EVENTS = 10_000
SWEEP_SECONDS = 0.01
MAX_KNOWN_ROWS = 500_000


def binlog_order(event_id: str) -> tuple[str, int, int] | None:
    """(file, pos, row) of a binlog event id `server:file:pos:row`; None for other ids."""
    parts = event_id.split(":")
    if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
        return None
    return parts[1], int(parts[2]), int(parts[3])


def is_duplicate(last_seen: str | None, event_id: str) -> bool:
    if last_seen is None:
        return False
    if last_seen == event_id:
        return True
    seen, new = binlog_order(last_seen), binlog_order(event_id)
    return seen is not None and new is not None and new <= seen


@contextmanager
def event_context(event: faust.EventT) -> Iterator[None]:
    """Make `event` the current event, as stream iteration does, so a table write lands in (and its
    changelog message goes to) the partition of `event`, not of whatever event came last."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


class Live(Protocol):
    matcher: Matcher


class Ops(Protocol):
    def on_row_change(self, source: dict[str, Any], matches: Any) -> None: ...
    def on_emitted(self, invocation: dict[str, Any]) -> None: ...


@dataclass
class RowBatch:
    started: float = field(default_factory=time.monotonic)
    events: list[faust.EventT] = field(default_factory=list)  # all of them, acked when settled
    outgoing: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # (topic, key, value)
    last_seen: dict[str, tuple[faust.EventT, str]] = field(default_factory=dict)  # row key -> (event, id)


class RowBatches:
    def __init__(self, live: Live, last_position: Any, debounce_pending: Any, producer: InvocationProducer,
                 topics: TopicSettings, ops: Ops, crash: Callable[[BaseException], Awaitable[None]],
                 generation: Callable[[], int], guard: OffsetGuard, consumer: Callable[[], Any]):
        self.live = live
        self.last_position = last_position
        self.debounce_pending = debounce_pending
        self.producer = producer
        self.topics = topics
        self.ops = ops
        self.crash = crash
        self.guard = guard
        self.consumer = consumer
        self._topic_names: dict[tuple[str, str], str] = {}
        self._batch = RowBatch()
        self._in_flight: deque[tuple[RowBatch, asyncio.Future[None]]] = deque()
        # row key -> its last event id, as this worker wrote it to the de-dup table (or will, once
        # the batch settles): spares a table read per event. Valid only while the assignment holds.
        self._known: dict[str, str] = {}
        self._generation = generation
        self._known_generation = -1
        self._unsettled = 0  # events in the in-flight batches
        self._lock = asyncio.Lock()

    async def run(self, stream: faust.StreamT) -> None:
        manual = stream.noack()  # acked when settled
        queue = manual.channel.queue
        self.guard.install(self.consumer())
        sweeper = asyncio.create_task(self._sweep(manual))
        try:
            async for event in manual.events():
                message = event.message
                if await self.guard.admit(message.tp, message.offset) is not Verdict.PROCESS:
                    # Processed before, or out of order (streams/offset_guard.py): the ack only keeps
                    # Faust's books tidy, the guard decides what is committed.
                    await manual.ack(event)
                    continue
                async with self._lock:
                    self.add(self._batch, event)
                    if queue.empty() or len(self._batch.events) >= BATCH_MAX_EVENTS \
                            or time.monotonic() - self._batch.started >= BATCH_MAX_SECONDS:
                        await self._seal()
                    await self._settle(manual, wait=self._unsettled > MAX_UNSETTLED_EVENTS)
        except InvocationsNotDelivered as e:  # nothing of the batch is acked; stop the worker
            log.error("row-change batch failed, stopping: %s", e)
            await self.crash(e)
            raise
        finally:
            sweeper.cancel()

    async def _sweep(self, stream: faust.StreamT) -> None:
        while True:
            try:
                if self._in_flight:  # wake as soon as the oldest batch is delivered
                    await asyncio.wait([self._in_flight[0][1]], timeout=SWEEP_SECONDS)
                else:
                    await asyncio.sleep(SWEEP_SECONDS)
                await self.guard.reseek_stalled()
                async with self._lock:
                    if self._batch.events and time.monotonic() - self._batch.started >= SWEEP_SECONDS:
                        await self._seal()
                    await self._settle(stream, wait=False)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a delivery failed: nothing of it is acked; stop the worker
                log.error("row-change batch failed, stopping: %s", e)
                await self.crash(e)
                return

    async def _seal(self) -> None:
        batch, self._batch = self._batch, RowBatch()
        if batch.events:
            self._in_flight.append((batch, await self.producer.produce_all(batch.outgoing)))
            self._unsettled += len(batch.events)

    async def _settle(self, stream: faust.StreamT, wait: bool) -> None:
        """Record and ack the delivered batches, oldest first (`wait`: at least the oldest one).

        All the batches delivered by now settle together: one de-dup table write per row (its last
        event id), then the acks, so a row changed in many batches costs one changelog message."""
        settled: list[RowBatch] = []
        while self._in_flight and (wait or self._in_flight[0][1].done()):
            batch, delivered = self._in_flight[0]
            await delivered  # raises InvocationsNotDelivered: the batch stays unacked
            self._in_flight.popleft()
            self._unsettled -= len(batch.events)
            settled.append(batch)
            wait = False
        if not settled:
            return
        last_seen: dict[str, tuple[faust.EventT, str]] = {}
        for batch in settled:
            last_seen.update(batch.last_seen)
        for row_key, (event, event_id) in last_seen.items():
            with event_context(event):
                self.last_position[row_key] = event_id
        for batch in settled:
            for event in batch.events:
                await stream.ack(event)
                self.guard.settle(event.message.tp, event.message.offset)

    def topic_for(self, plugin: str, priority: str) -> str:
        name = self._topic_names.get((plugin, priority))
        if name is None:
            name = self._topic_names[(plugin, priority)] = self.topics.invoke(plugin, priority)
        return name

    def add(self, batch: RowBatch, event: faust.EventT) -> None:
        """Parse, match and de-duplicate one event (in its stream context: table reads see its partition)."""
        if not batch.events:
            batch.started = time.monotonic()
        batch.events.append(event)
        try:
            change = orjson.loads(event.value)
            event_id = change["event_id"]
            source = change["source"]
            matches = self.live.matcher.match(change)
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
            message = event.message
            log.error("skipping malformed row change at %s[%d]@%d: %s", message.topic, message.partition,
                      message.offset, e)
            return
        self.ops.on_row_change(source, matches)
        if not matches:
            # Most changes match no rule: they need no de-duplication state, so no table read or write.
            return
        row_key = f"{source.get('db')}.{source.get('table')}|{(event.key or b'').decode()}"
        if self._known_generation != (generation := self._generation()) or len(self._known) > MAX_KNOWN_ROWS:
            # Partitions may have moved (another worker wrote their rows), or the cache is full: start
            # again from what this worker has not settled yet, and the table.
            unsettled = [b for b, _ in self._in_flight] + [batch]
            self._known = {key: seen_id for b in unsettled for key, (_, seen_id) in b.last_seen.items()}
            self._known_generation = generation
        last = self._known.get(row_key)
        if is_duplicate(last if last is not None else self.last_position.get(row_key), event_id):
            log.debug("duplicate row change %s dropped", event_id)
            return
        created_at = datetime.now(timezone.utc).isoformat()
        log_each = log.isEnabledFor(logging.INFO)
        held: dict[str, tuple[int, list[dict[str, Any]]]] = {}
        for planned in matches:
            invocation = planned.invocation
            if planned.debounce_ms:
                held.setdefault(invocation["trigger"]["rule"], (planned.debounce_ms, []))[1].append(invocation)
                continue
            invocation["created_at"] = created_at
            self.ops.on_emitted(invocation)
            batch.outgoing.append((self.topic_for(planned.plugin, invocation["priority"]),
                                   invocation["invocation_id"].encode(), orjson.dumps(invocation)))
            if log_each:
                log.info("row change %s on %s.%s -> %s (rule %s, invocation %s)", event_id, source["db"],
                         source["table"], planned.plugin, invocation["trigger"]["rule"], invocation["invocation_id"],
                         extra={"event_id": event_id, "plugin": planned.plugin,
                                "invocation_id": invocation["invocation_id"]})
        for rule, (window_ms, invocations) in held.items():
            # A pending entry, not an emission: written now, in this event's partition.
            key = pending_key(rule, row_key)
            self.debounce_pending[key] = merge_pending(self.debounce_pending.get(key), invocations, window_ms,
                                                       int(time.time() * 1000), event.message.partition)
        batch.last_seen[row_key] = (event, event_id)
        self._known[row_key] = event_id
