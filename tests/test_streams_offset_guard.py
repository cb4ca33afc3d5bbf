"""The offset guard's books (pure logic; the real rebalance is tests/test_streams_rebalance.py): each
partition's offsets are admitted contiguously from where the group resumes it, a gap seeks back,
and the consumer commits the offset after the last settled message, never Faust's ack lists."""
from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from faust.types import TP

from streams.offset_guard import OffsetGuard, Verdict
from tests.support import isolated_settings

TOPIC = "cdc.shop.orders"
P0, P1 = TP(TOPIC, 0), TP(TOPIC, 1)


class FakeConsumer:
    """What the guard touches of Faust's consumer: its commit hook, its ack books and its seek."""

    def __init__(self) -> None:
        self._acked: defaultdict[TP, list[int]] = defaultdict(list)
        self._acked_index: defaultdict[TP, set[int]] = defaultdict(set)
        self._gap: dict[TP, Any] = {}
        self._read_offset: dict[TP, int] = {}
        self.seeks: list[tuple[TP, int]] = []

    def _new_offset(self, tp: TP) -> int | None:  # Faust's own: commit whatever was acked
        return max(self._acked[tp]) + 1 if self._acked[tp] else None

    async def seek(self, tp: TP, offset: int) -> None:
        self.seeks.append((tp, offset))


def guard_for(resume_at: dict[TP, int]) -> tuple[OffsetGuard, FakeConsumer, list[int]]:
    generation = [1]
    guard = OffsetGuard(isolated_settings("og"), "group", {TOPIC}, lambda: generation[0])
    guard._start_offset = lambda tp: resume_at[tp]  # type: ignore[method-assign]  # Kafka's committed offset
    consumer = FakeConsumer()
    guard.install(consumer)
    return guard, consumer, generation


def test_offsets_are_admitted_contiguously_and_a_gap_seeks_back() -> None:
    async def run() -> None:
        guard, consumer, _ = guard_for({P0: 100, P1: 7})
        assert await guard.admit(P0, 100) is Verdict.PROCESS
        assert await guard.admit(P0, 101) is Verdict.PROCESS
        assert await guard.admit(P0, 99) is Verdict.SEEN  # a re-fetch of what was processed
        # 102-104 never delivered (Faust dropped them): 105 is not processed, the fetch goes back to 102
        assert await guard.admit(P0, 105) is Verdict.GAP
        assert consumer.seeks == [(P0, 102)] and consumer._read_offset[P0] == 102
        assert await guard.admit(P0, 106) is Verdict.GAP
        assert consumer.seeks == [(P0, 102)]  # one seek per gap, not one per late message
        assert [await guard.admit(P0, o) for o in (102, 103, 104, 105)] == [Verdict.PROCESS] * 4
        assert await guard.admit(P1, 8) is Verdict.GAP and consumer.seeks[-1] == (P1, 7)
        assert await guard.admit(P1, 7) is Verdict.PROCESS

    asyncio.run(run())


def test_commits_follow_what_was_settled_not_faust_acks() -> None:
    async def run() -> None:
        guard, consumer, generation = guard_for({P0: 100, P1: 0})
        other = TP("other-topic", 0)
        consumer._acked[other] = [5, 6]
        assert consumer._new_offset(other) == 7  # other topics keep Faust's logic
        for offset in (100, 101, 102):
            assert await guard.admit(P0, offset) is Verdict.PROCESS
        consumer._acked[P0] += [100, 101, 102, 150]  # e.g. skipped messages Faust acked
        assert consumer._new_offset(P0) is None  # nothing settled yet: nothing to commit
        assert consumer._acked[P0] == []  # and Faust's list for it does not grow
        guard.settle(P0, 100)
        guard.settle(P0, 101)
        assert consumer._new_offset(P0) == 102
        # A rebalance: the partition starts again from the group's committed offset.
        generation[0] = 2
        guard._start_offset = lambda tp: 250  # type: ignore[method-assign]
        assert await guard.admit(P0, 102) is Verdict.SEEN
        assert consumer._new_offset(P0) is None
        assert await guard.admit(P0, 250) is Verdict.PROCESS

    asyncio.run(run())
