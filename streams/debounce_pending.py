"""Pending debounced invocations of the row-change loop, kept with the loop's own transactions.

In memory per source partition the worker owns; durable in a compacted topic
(`<app_id>-debounce-pending`, one partition per source partition number) whose records are written
in the same Kafka transaction as the batch that changed them: a merge commits with the change's
offset, a flush (the invocations plus a tombstone) commits in one transaction too. So after a crash
or a rebalance the next owner restores exactly the committed entries, read_committed, before it
reads the partition's changes: no change is merged twice, none is lost, no entry is flushed twice.

A batch stages its updates (`Staged`); they reach memory only once its transaction committed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from schemas.settings import Settings
from streams.debounce import is_due, merge_pending

log = logging.getLogger("cdcflow.streams")

TP = tuple[str, int]
Entry = dict[str, Any]
NEVER = 2**63


def pending_topic(settings: Settings) -> str:
    return f"{settings.streams.app_id}-debounce-pending"


def record_key(tp: TP, key: str) -> bytes:
    # The source topic is part of the key: partition p of this topic serves partition p of every
    # row-change topic.
    return f"{tp[0]}|{key}".encode()


@dataclass
class Staged:
    """A batch's updates: (source partition, pending key) -> entry, or None for a flushed one."""

    updates: dict[tuple[TP, str], Entry | None] = field(default_factory=dict)


class PendingDebounces:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.topic = pending_topic(settings)
        self.entries: dict[TP, dict[str, Entry]] = {}
        # No committed entry is due before this: the loop asks on every batch and idle poll, and
        # only a scan of all entries can say which are due. Kept at or below the true earliest.
        self._earliest_due_ms = NEVER

    def get(self, staged: Staged, tp: TP, key: str) -> Entry | None:
        if (tp, key) in staged.updates:
            return staged.updates[(tp, key)]
        return self.entries.get(tp, {}).get(key)

    def merge(
        self, staged: Staged, tp: TP, key: str, invocations: list[dict[str, Any]], window_ms: int, now_ms: int
    ) -> tuple[bytes, bytes]:
        """Stage one more matching change; the (key, value) record to produce in the transaction."""
        entry = merge_pending(self.get(staged, tp, key), invocations, window_ms, now_ms, tp[1])
        staged.updates[(tp, key)] = entry
        return record_key(tp, key), orjson.dumps({**entry, "source": tp[0], "key": key})

    def due(self, staged: Staged, now_ms: int) -> list[tuple[TP, str, Entry]]:
        found = [
            (tp, key, entry)
            for (tp, key), entry in staged.updates.items()
            if entry is not None and is_due(entry, now_ms)
        ]
        if now_ms < self._earliest_due_ms:
            return found
        earliest = NEVER
        for tp, entries in self.entries.items():
            for key, entry in entries.items():
                if (tp, key) in staged.updates:
                    continue
                earliest = min(earliest, entry["due_ms"])
                if is_due(entry, now_ms):
                    found.append((tp, key, entry))
        self._earliest_due_ms = earliest  # the due ones included: until flushed, they stay due
        return found

    def flushed(self, staged: Staged, tp: TP, key: str) -> bytes:
        """Stage the entry's removal; the tombstone's record key."""
        staged.updates[(tp, key)] = None
        return record_key(tp, key)

    def apply(self, staged: Staged) -> None:
        """The batch committed: its updates are the state now."""
        for (tp, key), entry in staged.updates.items():
            if entry is None:
                self.entries.get(tp, {}).pop(key, None)
            else:
                self.entries.setdefault(tp, {})[key] = entry
                self._earliest_due_ms = min(self._earliest_due_ms, entry["due_ms"])

    def drop(self, partitions: list[TP]) -> None:
        for tp in partitions:
            self.entries.pop(tp, None)

    def restore(self, partitions: list[TP]) -> int:
        """Read the committed entries of newly assigned source partitions (their partition numbers of
        the pending topic, from the start to the end); the number restored."""
        wanted = set(partitions)
        numbers = sorted({p for _, p in partitions})
        reader = Consumer(
            self.settings.kafka_config(
                **{
                    "group.id": f"{self.settings.streams.app_id}-debounce-restore",  # never commits
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "enable.partition.eof": True,
                }
            )
        )
        restored: dict[TP, dict[str, Entry]] = {tp: {} for tp in partitions}
        try:
            reader.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in numbers])
            open_partitions = set(numbers)
            while open_partitions:
                message = reader.poll(30)
                if message is None:
                    raise RuntimeError(f"restoring pending debounces from {self.topic}: no answer in 30 s")
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        open_partitions.discard(message.partition())
                        continue
                    raise KafkaException(error)
                source, _, key = (message.key() or b"").decode().partition("|")
                tp = (source, message.partition())
                if tp not in wanted:
                    continue
                value = message.value()
                if value is None:
                    restored[tp].pop(key, None)
                else:
                    entry = orjson.loads(value)
                    entry.pop("source", None)
                    entry.pop("key", None)
                    restored[tp][key] = entry
        finally:
            reader.close()
        self.entries.update(restored)
        for entries in restored.values():
            for entry in entries.values():
                self._earliest_due_ms = min(self._earliest_due_ms, entry["due_ms"])
        count = sum(len(e) for e in restored.values())
        if count:
            log.info("restored %d pending debounced entr%s from %s", count, "y" if count == 1 else "ies", self.topic)
        return count
