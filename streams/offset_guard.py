"""Commit, for the row-change topics, only what the agent settled, contiguously from the committed offset.

A fix for faust-streaming 0.15.3, which can lose messages of a partition around a rebalance (seen in
tests/test_streams_rebalance.py: a fetch batch never processed). Faust commits a partition's offset
from the offsets its streams acked, and around a rebalance that bookkeeping goes wrong:
- messages fetched under the previous generation and still queued are skipped *and acked*
  (streams.py, the generation_id check);
- `Consumer._drain_messages` drops every message below its read offset, and a message callback that
  finishes after the post-rebalance seek (`perform_seek`) leaves the read offset ahead of the
  committed one: the re-fetched messages are dropped ("DROPPED MESSAGE ROFF");
- `Consumer._new_offset` lets a gap of one at the committed offset pass (`min(acked) - committed > 1`),
  skips the check when the committed offset is 0, and counts gaps between fetched offsets
  (`_add_gap`) as acked.

So for these partitions the worker keeps its own books: the agent admits only the offset it
expects next (from the committed offset after each rebalance), seeks back to it when a later one
shows up, acks and ignores an earlier one (already processed), and the consumer commits the offset
after the last settled one instead of what Faust's ack lists say.
"""
from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from faust.types import TP

from schemas.settings import Settings

log = logging.getLogger("cdcflow.streams")

RESEEK_SECONDS = 1.0  # a seek back that has not brought the expected offset yet is repeated


class Verdict(enum.Enum):
    PROCESS = "process"
    SEEN = "seen"  # below the expected offset: processed before (a re-fetch)
    GAP = "gap"  # above it: something before it was not delivered


class OffsetGuard:
    def __init__(self, settings: Settings, group_id: str, topics: set[str], generation: Callable[[], int]):
        self._settings = settings
        self._group_id = group_id
        self._kafka: Consumer | None = None  # only asks for committed offsets; never joins the group
        self.topics = topics
        self._generation = generation
        self._seen_generation: int | None = None
        self.expected: dict[TP, int] = {}  # next offset to process, per partition
        self.settled: dict[TP, int] = {}  # offset after the last settled one: what may be committed
        self._seeks: dict[TP, tuple[int, float]] = {}  # last seek back: (offset, when)
        self._consumer: Any = None

    def install(self, consumer: Any) -> None:
        """Make `consumer` commit our offsets for the guarded topics (Faust's own logic for the rest)."""
        if self._consumer is consumer:
            return
        self._consumer = consumer
        faust_new_offset = consumer._new_offset

        def new_offset(tp: TP) -> int | None:
            if tp.topic not in self.topics:
                return faust_new_offset(tp)
            # Faust's ack lists are not used for these partitions: keep them from growing.
            consumer._acked[tp].clear()
            consumer._acked_index[tp].clear()
            consumer._gap.pop(tp, None)
            return self.settled.get(tp)

        consumer._new_offset = new_offset

    async def admit(self, tp: TP, offset: int) -> Verdict:
        if self._seen_generation != (generation := self._generation()):
            # A rebalance: everything earlier settled before it completed (Faust waits for the acks),
            # and each partition starts again from its committed offset.
            self._seen_generation = generation
            self.expected.clear()
            self.settled.clear()
            self._seeks.clear()
        expected = self.expected.get(tp)
        if expected is None:
            # Asked of Kafka, not of Faust's books (which may not have it yet on a new worker).
            expected = self.expected[tp] = await asyncio.to_thread(self._start_offset, tp)
        if offset == expected:
            self.expected[tp] = offset + 1
            self._seeks.pop(tp, None)
            return Verdict.PROCESS
        if offset < expected:
            return Verdict.SEEN
        # Each message Faust delivers moves its read offset up, and `_drain_messages` drops what is
        # below it: so the messages still queued from before the seek would have the re-fetched
        # ones dropped again. Keep it at the offset we wait for.
        self._consumer._read_offset[tp] = expected
        last = self._seeks.get(tp)
        now = time.monotonic()
        if last is None or last[0] != expected or now - last[1] > RESEEK_SECONDS:
            log.warning("%s[%d]: offset %d arrived, %d expected (messages %d-%d not delivered); seeking back to %d",
                        tp.topic, tp.partition, offset, expected, expected, offset - 1, expected)
            await self._seek(tp, expected)
        return Verdict.GAP

    async def _seek(self, tp: TP, offset: int) -> None:
        self._seeks[tp] = (offset, time.monotonic())
        consumer = self._consumer
        thread = getattr(consumer, "_thread", None)
        if thread is None:
            await consumer.seek(tp, offset)
            return
        # Faust's Consumer.seek calls aiokafka's seek from this thread, while aiokafka runs on the
        # consumer thread's loop (seen: the fetch never resumed). Seek there, as Faust's own
        # seek_to_committed does.
        await thread.call_thread(thread._ensure_consumer().seek, tp, offset)
        consumer._read_offset[tp] = offset

    async def reseek_stalled(self) -> None:
        """Seek again where a seek back has not brought the expected offset for a while (no later
        message needs to arrive to notice: the fetch may have stopped altogether)."""
        now = time.monotonic()
        for tp, (offset, when) in list(self._seeks.items()):
            if now - when > RESEEK_SECONDS and self.expected.get(tp) == offset:
                log.warning("%s[%d]: offset %d still not delivered; seeking back to it again", tp.topic, tp.partition,
                            offset)
                await self._seek(tp, offset)

    def _start_offset(self, tp: TP) -> int:
        """Where this group resumes the partition: its committed offset, or the log's start
        (auto_offset_reset=earliest) when nothing is committed yet."""
        if self._kafka is None:
            self._kafka = Consumer(self._settings.kafka_config(**{"group.id": self._group_id,
                                                                   "enable.auto.commit": False}))
        partition = TopicPartition(tp.topic, tp.partition)
        committed = self._kafka.committed([partition], timeout=30)[0].offset
        low, _high = self._kafka.get_watermark_offsets(partition, timeout=30)
        # A committed offset that retention has deleted since: the consumer resets to the log's
        # start, so waiting for the committed one would stall the partition for good.
        return max(committed, low) if committed >= 0 else low

    def settle(self, tp: TP, offset: int) -> None:
        self.settled[tp] = offset + 1
