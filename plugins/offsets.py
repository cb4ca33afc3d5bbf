"""In-order offset commits over out-of-order completions, across re-assignments of a partition.

Messages of one partition run concurrently (up to the plugin's pool size) and finish in any order.
The committable position of a partition is just past the longest finished prefix: a finished
message behind an unfinished one waits, so a crash can only re-deliver, never skip.

Each assignment of a partition gets a new generation. When a partition is taken away, its messages
still out (queued or running here) and those finished behind an unfinished one (published, not
committed) are kept as the partition's *earlier* work: given back (every rebalance with roundrobin),
the partition is fetched again from its committed offset, and those messages come again. One still
out is held until its earlier completion arrives (it must not run twice at once); one that ended is
not published again (`earlier()`). A completion of an earlier generation never moves a position.

A partition being taken away first stops starting calls (start_revoking) and may wait for the calls
already running to finish and be committed (unsettled), so its new owner does not run them again.

Used by the consumer thread only, except is_current(), which other threads may call (a dict read).
"""

from __future__ import annotations

import collections
import enum
import itertools
from dataclasses import dataclass, field
from typing import Any

TopicPartitionKey = tuple[str, int]

# Ended offsets remembered per partition (a partition that went to another runner for good is
# never given back to prune them).
MAX_REMEMBERED_ENDED = 10_000


@dataclass(frozen=True, slots=True)
class Ack:
    """Identifies one consumed message for its completion."""

    topic: str
    partition: int
    offset: int
    generation: int


class Earlier(enum.Enum):
    """What an earlier assignment of its partition on this runner did with a message fetched again."""

    RUNNING = "running"  # out: queued or running; its completion is still to come
    ENDED = "ended"  # ran here to its result (published), but its offset was not committed


@dataclass
class _PartitionState:
    generation: int
    pending: collections.deque[int] = field(default_factory=collections.deque)  # started, in offset order
    finished: set[int] = field(default_factory=set)  # finished but not yet at the head
    position: int | None = None  # next offset to commit
    reported: int | None = None  # last position handed out by commits()
    held: dict[int, tuple[Ack, Any]] = field(default_factory=dict)  # offset -> (ack, item) waiting for the earlier
    revoking: bool = False  # being taken away: no new call starts (is_current is False)
    dropped: set[int] = field(default_factory=set)  # left unrun while revoking: the new owner runs them


@dataclass
class _EarlierWork:
    out: dict[int, int] = field(default_factory=dict)  # offset -> generation whose completion is to come
    ended: dict[int, None] = field(default_factory=dict)  # offsets completed, not committed (insertion order)


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[TopicPartitionKey, _PartitionState] = {}
        self._earlier: dict[TopicPartitionKey, _EarlierWork] = {}
        self._released: list[tuple[Ack, Any]] = []
        self._generations = itertools.count(1)

    def assign(self, topic: str, partition: int) -> None:
        self._parts[(topic, partition)] = _PartitionState(generation=next(self._generations))

    def revoke(self, topic: str, partition: int) -> None:
        """Forget the assignment; its held items are the new owner's, its work still out is kept as earlier."""
        state = self._parts.pop((topic, partition), None)
        if state is None:
            return
        waiting = set(state.held)  # held, or released but not yet handed back: not out
        for ack, _ in self._released:
            if (ack.topic, ack.partition) == (topic, partition):
                waiting.add(ack.offset)
        self._released = [(a, i) for a, i in self._released if (a.topic, a.partition) != (topic, partition)]
        out = [o for o in state.pending if o not in state.finished and o not in state.dropped and o not in waiting]
        if not out and not state.finished:
            return
        earlier = self._earlier.setdefault((topic, partition), _EarlierWork())
        earlier.out.update(dict.fromkeys(out, state.generation))
        earlier.ended.update(dict.fromkeys(sorted(state.finished)))
        _bound(earlier.ended)

    def start(self, topic: str, partition: int, offset: int) -> Ack | None:
        """The message's Ack; None if its partition is not assigned here (taken away in a rebalance that
        ran between its fetch and now): not ours to run or commit."""
        state = self._parts.get((topic, partition))
        if state is None:
            return None
        state.pending.append(offset)
        return Ack(topic, partition, offset, state.generation)

    def finish(self, ack: Ack, ran: bool = True) -> None:
        """Mark a message done: the current assignment's moves its position, an earlier one's releases a held
        item. ran=False: dropped unrun (revoked while queued), so fetched again it is not taken as ended here."""
        key = (ack.topic, ack.partition)
        state = self._parts.get(key)
        if state is not None and state.generation == ack.generation:
            if not ran:  # not finished: the commit stops before it
                state.dropped.add(ack.offset)
                return
            state.finished.add(ack.offset)
            pending = state.pending
            while pending and pending[0] in state.finished:
                done = pending.popleft()
                state.finished.discard(done)
                state.position = done + 1
            return
        earlier = self._earlier.get(key)
        if earlier is None or earlier.out.get(ack.offset) != ack.generation:
            return
        del earlier.out[ack.offset]
        if ran:
            earlier.ended[ack.offset] = None
            _bound(earlier.ended)
        elif not earlier.out and not earlier.ended:
            del self._earlier[key]
        if state is not None and ack.offset in state.held:
            self._released.append(state.held.pop(ack.offset))

    def earlier(self, ack: Ack) -> Earlier | None:
        """Whether an earlier assignment of the message's partition here still has it out or ended it."""
        if not self._earlier:  # the common case: no partition came back with work of before
            return None
        earlier = self._earlier.get((ack.topic, ack.partition))
        if earlier is None:
            return None
        if ack.offset in earlier.out:
            return Earlier.RUNNING
        return Earlier.ENDED if ack.offset in earlier.ended else None

    def hold(self, ack: Ack, item: Any) -> None:
        """Keep `item` until the earlier completion of its message arrives (then released() hands it back)."""
        state = self._parts.get((ack.topic, ack.partition))
        if state is not None and state.generation == ack.generation:
            state.held[ack.offset] = (ack, item)

    def released(self) -> list[Any]:
        """Held items whose earlier completion arrived since the last call."""
        out, self._released = self._released, []
        return [item for _, item in out]

    def is_current(self, ack: Ack) -> bool:
        """False once the message's partition is being revoked (or was, or was reassigned): its work is
        someone else's."""
        state = self._parts.get((ack.topic, ack.partition))
        return state is not None and state.generation == ack.generation and not state.revoking

    def start_revoking(self, keys: set[TopicPartitionKey]) -> None:
        """No new call starts on these partitions; those running may still finish (and be committed)."""
        for key in keys:
            state = self._parts.get(key)
            if state is not None:
                state.revoking = True

    def unsettled(self, keys: set[TopicPartitionKey]) -> int:
        """Messages of these partitions neither finished nor dropped: running here, or held while an
        earlier assignment's call of them runs, or released and not yet handed back."""
        count = 0
        for key in keys:
            state = self._parts.get(key)
            if state is not None:
                settled = state.finished | state.dropped
                count += sum(1 for o in state.pending if o not in settled)
        return count

    def commits(self, only: set[TopicPartitionKey] | None = None) -> list[tuple[str, int, int]]:
        """(topic, partition, next offset) for every partition whose position moved since the last call."""
        out = []
        for key, state in self._parts.items():
            if only is not None and key not in only:
                continue
            if state.position is not None and state.position != state.reported:
                out.append((key[0], key[1], state.position))
                state.reported = state.position
                if self._earlier:
                    self._prune(key, state.position)
        return out

    def _prune(self, key: TopicPartitionKey, position: int) -> None:
        """Ended offsets below a committed position will not be fetched again."""
        earlier = self._earlier.get(key)
        if earlier is None:
            return
        for offset in [o for o in earlier.ended if o < position]:
            del earlier.ended[offset]
        if not earlier.out and not earlier.ended:
            del self._earlier[key]

    def in_flight(self, topic: str | None = None) -> int:
        return sum(len(s.pending) for (t, _), s in self._parts.items() if topic is None or t == topic)


def _bound(ended: dict[int, None]) -> None:
    while len(ended) > MAX_REMEMBERED_ENDED:
        del ended[next(iter(ended))]
