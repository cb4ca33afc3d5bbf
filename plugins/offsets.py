"""In-order offset commits over out-of-order completions.

Messages of one partition run concurrently (up to the plugin's pool size) and finish in any order.
The committable position of a partition is just past the longest finished prefix: a finished
message behind an unfinished one waits, so a crash can only re-deliver, never skip.

Each assignment of a partition gets a new generation; completions of an older generation (work
that was still running when the partition was revoked) are ignored. Used by the consumer thread
only, except is_current(), which other threads may call (a single dict read).
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass, field

TopicPartitionKey = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Ack:
    """Identifies one consumed message for its completion."""

    topic: str
    partition: int
    offset: int
    generation: int


@dataclass
class _PartitionState:
    generation: int
    pending: collections.deque[int] = field(default_factory=collections.deque)  # started, in offset order
    finished: set[int] = field(default_factory=set)  # finished but not yet at the head
    position: int | None = None  # next offset to commit
    reported: int | None = None  # last position handed out by commits()


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[TopicPartitionKey, _PartitionState] = {}
        self._generations = itertools.count(1)

    def assign(self, topic: str, partition: int) -> None:
        self._parts[(topic, partition)] = _PartitionState(generation=next(self._generations))

    def revoke(self, topic: str, partition: int) -> None:
        self._parts.pop((topic, partition), None)

    def start(self, topic: str, partition: int, offset: int) -> Ack:
        state = self._parts.get((topic, partition))
        if state is None:  # a message of a partition we were not told about: track it anyway
            self.assign(topic, partition)
            state = self._parts[(topic, partition)]
        state.pending.append(offset)
        return Ack(topic, partition, offset, state.generation)

    def finish(self, ack: Ack) -> bool:
        """Mark a message done; False if it belongs to a revoked assignment."""
        state = self._parts.get((ack.topic, ack.partition))
        if state is None or state.generation != ack.generation:
            return False
        state.finished.add(ack.offset)
        pending = state.pending
        while pending and pending[0] in state.finished:
            done = pending.popleft()
            state.finished.discard(done)
            state.position = done + 1
        return True

    def is_current(self, ack: Ack) -> bool:
        """False once the message's partition was revoked (or reassigned): its work is someone else's."""
        state = self._parts.get((ack.topic, ack.partition))
        return state is not None and state.generation == ack.generation

    def commits(self, only: set[TopicPartitionKey] | None = None) -> list[tuple[str, int, int]]:
        """(topic, partition, next offset) for every partition whose position moved since the last call."""
        out = []
        for key, state in self._parts.items():
            if only is not None and key not in only:
                continue
            if state.position is not None and state.position != state.reported:
                out.append((key[0], key[1], state.position))
                state.reported = state.position
        return out

    def in_flight(self, topic: str | None = None) -> int:
        return sum(len(s.pending) for (t, _), s in self._parts.items() if topic is None or t == topic)
