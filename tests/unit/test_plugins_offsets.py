"""The runner's offset tracker: in-order commits over out-of-order completions, and what an earlier
assignment of a partition given back still has out (held) or ended (not published again)."""

from __future__ import annotations

from plugins import offsets
from plugins.offsets import Ack, Earlier, OffsetTracker


def given_back(offset: int = 5) -> tuple[OffsetTracker, Ack, Ack]:
    """A tracker whose partition t[0] was taken away while `offset` was out, then given back and the
    message fetched again: (tracker, the first ack, the second)."""
    t = OffsetTracker()
    t.assign("t", 0)
    first = t.start("t", 0, offset)
    t.revoke("t", 0)
    t.assign("t", 0)
    return t, first, t.start("t", 0, offset)


def test_commit_position_waits_for_the_oldest_unfinished_message():
    t = OffsetTracker()
    t.assign("t", 0)
    acks = [t.start("t", 0, off) for off in (10, 11, 12, 13)]
    t.finish(acks[1])
    t.finish(acks[3])
    assert t.commits() == []  # 10 still running
    t.finish(acks[0])
    assert t.commits() == [("t", 0, 12)]  # 10, 11 done; 12 running
    assert t.commits() == []  # nothing new
    t.finish(acks[2])
    assert t.commits() == [("t", 0, 14)]
    assert t.in_flight() == 0


def test_completions_of_a_revoked_assignment_move_no_position():
    t, old, new = given_back()
    t.finish(old)
    assert t.commits() == []
    t.finish(new)
    assert t.commits() == [("t", 0, 6)]


def test_a_message_still_out_from_before_a_reassignment_is_held_until_its_earlier_completion():
    t, first, again = given_back()
    assert t.earlier(again) is Earlier.RUNNING
    t.hold(again, "item")
    assert t.released() == []
    t.finish(first)  # the earlier call ended (published): hand the item back, mark the offset ended
    assert t.released() == ["item"]
    assert t.released() == []
    assert t.earlier(again) is Earlier.ENDED
    assert t.commits() == []  # the earlier completion moves nothing: only the new one does
    t.finish(again)
    assert t.commits() == [("t", 0, 6)]
    assert t.earlier(again) is None  # committed past: forgotten


def test_a_message_finished_behind_an_unfinished_one_is_remembered_as_ended_over_a_revoke():
    t = OffsetTracker()
    t.assign("t", 0)
    a, b = t.start("t", 0, 1), t.start("t", 0, 2)
    t.finish(b)  # published, not committable: 1 is still out
    t.revoke("t", 0)
    t.assign("t", 0)
    a2, b2 = t.start("t", 0, 1), t.start("t", 0, 2)
    assert (t.earlier(a2), t.earlier(b2)) == (Earlier.RUNNING, Earlier.ENDED)
    t.finish(a)
    assert t.earlier(a2) is Earlier.ENDED


def test_held_items_of_a_partition_taken_away_again_are_the_new_owners():
    t, first, again = given_back()
    t.hold(again, "item")
    t.revoke("t", 0)  # the held message was never started here: not out
    t.assign("t", 0)
    third = t.start("t", 0, 5)
    assert t.earlier(third) is Earlier.RUNNING  # the first call still runs
    t.finish(first)
    assert t.released() == []  # nothing of this assignment was held
    assert t.earlier(third) is Earlier.ENDED


def test_released_items_of_a_partition_revoked_before_they_were_handed_back_are_dropped():
    t, first, again = given_back()
    t.hold(again, "item")
    t.finish(first)
    t.revoke("t", 0)
    assert t.released() == []
    t.assign("t", 0)
    assert t.earlier(t.start("t", 0, 5)) is Earlier.ENDED  # not out: it was waiting, never started


def test_ended_offsets_remembered_are_bounded(monkeypatch):
    monkeypatch.setattr(offsets, "MAX_REMEMBERED_ENDED", 3)
    t = OffsetTracker()
    t.assign("t", 0)
    acks = [t.start("t", 0, off) for off in range(6)]
    for ack in acks[1:]:
        t.finish(ack)
    t.revoke("t", 0)
    t.assign("t", 0)
    assert [t.earlier(t.start("t", 0, off)) for off in range(6)] == [Earlier.RUNNING, None, None] + [Earlier.ENDED] * 3


def test_partitions_are_independent():
    t = OffsetTracker()
    t.assign("x", 0)
    t.assign("x", 1)
    a = t.start("x", 0, 0)
    t.start("x", 1, 0)
    assert a is not None
    t.finish(a)
    assert t.commits(only={("x", 0), ("x", 1)}) == [("x", 0, 1)]
    assert t.in_flight("x") == 1


def test_a_message_dropped_unrun_by_an_earlier_assignment_is_not_taken_as_ended_here():
    """Dropped while queued (revoked): its result, if any, is another runner's, maybe recorded but never
    published before that runner died; fetched again, it must not be settled as if published here."""
    t, queued, again = given_back()
    t.hold(again, "item")
    t.finish(queued, ran=False)
    assert t.released() == ["item"]
    assert t.earlier(again) is None


def test_a_partition_being_revoked_starts_nothing_and_counts_only_its_running_calls():
    t = OffsetTracker()
    t.assign("t", 0)
    running, queued, done = t.start("t", 0, 1), t.start("t", 0, 2), t.start("t", 0, 3)
    t.finish(done)
    t.start_revoking({("t", 0)})
    assert not t.is_current(queued)  # a lane thread drops it rather than start it
    t.finish(queued, ran=False)
    assert t.unsettled({("t", 0)}) == 1  # only the running call is waited for
    t.finish(running)
    assert t.unsettled({("t", 0)}) == 0
    assert t.commits() == [("t", 0, 2)]  # the dropped message is not committed: the new owner runs it
    t.revoke("t", 0)
    t.assign("t", 0)
    assert [t.earlier(t.start("t", 0, o)) for o in (2, 3)] == [None, Earlier.ENDED]


def test_a_message_of_a_partition_not_assigned_here_is_not_started():
    """Fetched, then its partition taken away by the rebalance the next consume() ran: the new owner's."""
    t = OffsetTracker()
    t.assign("t", 0)
    t.revoke("t", 0)
    assert t.start("t", 0, 7) is None
    assert t.commits() == [] and t.in_flight() == 0


def test_a_held_message_counts_as_unsettled_while_its_earlier_call_runs():
    """Revoked again while held: the wait covers the earlier call (else the new owner would run it while
    it still runs here), and the released copy until it is handed back and settled."""
    t, first, again = given_back()
    t.hold(again, "item")
    t.start_revoking({("t", 0)})
    assert t.unsettled({("t", 0)}) == 1
    t.finish(first)
    assert t.released() == ["item"]
    assert t.unsettled({("t", 0)}) == 1  # handed back: the runner settles it (done: committed here)
    t.finish(again)
    assert t.unsettled({("t", 0)}) == 0
    assert t.commits() == [("t", 0, 6)]
