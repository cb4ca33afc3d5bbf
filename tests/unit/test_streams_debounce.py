"""Debounce: merging changes into a pending window, and the due order of pending entries (the worker
on the real Kafka: tests/integration/test_streams_debounce.py)."""

from __future__ import annotations

from streams.debounce import is_due, merge_pending


def test_merge_keeps_the_window_and_the_latest_invocations() -> None:
    first = merge_pending(None, [{"n": 1}], 1000, now_ms=10_000, partition=1)
    later = merge_pending(first, [{"n": 2}], 1000, now_ms=10_900, partition=1)
    assert later == {"due_ms": 11_000, "first_ms": 10_000, "changes": 2, "partition": 1, "invocations": [{"n": 2}]}
    assert not is_due(later, 10_999) and is_due(later, 11_000)


def test_pending_entries_are_due_in_turn_and_none_is_missed_after_a_flush() -> None:
    from streams.debounce_pending import PendingDebounces, Staged
    from tests.support import isolated_settings

    pending = PendingDebounces(isolated_settings("pend"))
    tp = ("topic", 0)
    opening = Staged()
    pending.merge(opening, tp, "a", [{"n": 1}], 1000, now_ms=10_000)  # due at 11_000
    pending.merge(opening, tp, "b", [{"n": 2}], 3000, now_ms=10_000)  # due at 13_000
    assert pending.due(opening, 10_500) == []
    pending.apply(opening)
    assert pending.due(Staged(), 10_999) == []
    assert [key for _, key, _ in pending.due(Staged(), 11_000)] == ["a"]
    assert [key for _, key, _ in pending.due(Staged(), 11_500)] == ["a"]  # not flushed yet: still due
    flush = Staged()
    pending.flushed(flush, tp, "a")
    assert pending.due(flush, 11_500) == []  # the batch that flushes it does not see it again
    pending.apply(flush)
    assert pending.due(Staged(), 12_999) == []
    assert [key for _, key, _ in pending.due(Staged(), 13_000)] == ["b"]
    # a change merged into a due entry: the batch flushes the merged one
    merging = Staged()
    pending.merge(merging, tp, "b", [{"n": 3}], 3000, now_ms=13_100)
    assert [entry["invocations"] for _, _, entry in pending.due(merging, 13_100)] == [[{"n": 3}]]
