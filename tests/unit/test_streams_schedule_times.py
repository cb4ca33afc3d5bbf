"""Pure schedule logic with fixed clocks: slots, DST, misfire grace, coalesce."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from schemas.rules import ScheduleSpec
from streams.schedule_times import due_slots, next_slot, plan_fires, slot_key

UTC = UTC
SH = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


def spec(**kw) -> ScheduleSpec:
    return ScheduleSpec(plugin="p", **kw)


def test_cron_in_shanghai_fires_at_local_two_am() -> None:
    s = spec(cron="0 2 * * *", timezone="Asia/Shanghai")
    anchor = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)  # 20:00 in Shanghai
    first = next_slot(s, anchor, anchor)
    assert first == datetime(2026, 11, 25, 2, 0, tzinfo=SH) == datetime(2026, 11, 24, 18, 0, tzinfo=UTC)
    assert next_slot(s, anchor, first) == first + timedelta(days=1)
    assert slot_key(first) == "2026-11-24T18:00:00+00:00"


def test_cron_spring_forward_gap_fires_once_shifted_and_keeps_order() -> None:
    # 2026-03-29 02:00-03:00 does not exist in Berlin.
    daily = spec(cron="30 2 * * *", timezone="Europe/Berlin")
    anchor = datetime(2026, 3, 28, 12, 0, tzinfo=BERLIN)
    slots, _ = due_slots(daily, anchor, None, datetime(2026, 3, 31, 0, 0, tzinfo=BERLIN))
    assert [s.astimezone(BERLIN).isoformat() for s in slots] == [
        "2026-03-29T03:30:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]
    half_hourly = spec(cron="*/30 * * * *", timezone="Europe/Berlin")
    anchor = datetime(2026, 3, 29, 1, 10, tzinfo=BERLIN)
    slots, _ = due_slots(half_hourly, anchor, None, datetime(2026, 3, 29, 4, 0, tzinfo=BERLIN))
    local = [s.astimezone(BERLIN).strftime("%H:%M%z") for s in slots]
    assert local == ["01:30+0100", "03:00+0200", "03:30+0200", "04:00+0200"]
    assert slots == sorted(set(slots))


def test_cron_fall_back_ambiguous_hour_fires_once() -> None:
    daily = spec(cron="30 2 * * *", timezone="Europe/Berlin")
    anchor = datetime(2026, 10, 24, 12, 0, tzinfo=BERLIN)
    slots, _ = due_slots(daily, anchor, None, datetime(2026, 10, 27, 12, 0, tzinfo=BERLIN))
    assert [s.astimezone(BERLIN).isoformat() for s in slots] == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    # continuing from a stored slot gives the same sequence (restart safety)
    assert next_slot(daily, anchor, slots[0]) == slots[1]


def test_interval_slots_are_anchored_and_deterministic() -> None:
    s = spec(interval_seconds=1.5)
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    assert next_slot(s, anchor, anchor) == anchor + timedelta(seconds=1.5)
    assert next_slot(s, anchor, anchor + timedelta(seconds=3.1)) == anchor + timedelta(seconds=4.5)
    slots, dropped = due_slots(s, anchor, anchor + timedelta(seconds=1.5), anchor + timedelta(seconds=6))
    assert slots == [anchor + timedelta(seconds=x) for x in (3, 4.5, 6)] and dropped == 0


def test_a_long_outage_of_a_short_interval_is_counted_not_listed() -> None:
    s = spec(interval_seconds=1)
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    slots, dropped = due_slots(s, anchor, None, anchor + timedelta(days=7), limit=100)
    assert len(slots) == 100 and dropped == 7 * 86400 - 100
    assert slots[-1] == anchor + timedelta(days=7)


def test_one_off_at_fires_once_and_never_again() -> None:
    at = datetime(2026, 12, 1, 8, 0, tzinfo=SH)
    s = spec(at=at, misfire_grace_time=60)
    anchor = datetime(2026, 11, 1, tzinfo=UTC)
    plan = plan_fires(s, anchor, None, at + timedelta(seconds=5))
    assert plan.fire == [at] and plan.next_due is None
    assert plan_fires(s, anchor, plan.last, at + timedelta(days=1)).fire == []
    # a naive `at` is read in the schedule's timezone
    naive = spec(at=datetime(2026, 12, 1, 8, 0), timezone="Asia/Shanghai")
    assert next_slot(naive, anchor, anchor) == at


def test_nothing_before_the_anchor_is_caught_up() -> None:
    s = spec(cron="0 * * * *")
    anchor = datetime(2026, 1, 1, 10, 30, tzinfo=UTC)
    plan = plan_fires(s, anchor, None, anchor + timedelta(minutes=10))
    assert plan.fire == [] and plan.missed == [] and plan.next_due == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)


def test_missed_slots_within_grace_coalesce_into_the_latest() -> None:
    s = spec(interval_seconds=10, misfire_grace_time=60, coalesce=True)
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    last = anchor + timedelta(seconds=10)
    now = anchor + timedelta(seconds=45)  # slots 20, 30, 40 are due
    plan = plan_fires(s, anchor, last, now)
    assert plan.fire == [anchor + timedelta(seconds=40)]
    assert plan.coalesced == [anchor + timedelta(seconds=20), anchor + timedelta(seconds=30)]
    assert plan.missed == [] and plan.last == anchor + timedelta(seconds=40)
    assert plan.next_due == anchor + timedelta(seconds=50)


def test_without_coalesce_each_slot_within_grace_runs_and_older_ones_are_missed() -> None:
    s = spec(interval_seconds=10, misfire_grace_time=15, coalesce=False)
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    now = anchor + timedelta(seconds=45)  # 10, 20 late by 35/25 s; 30, 40 by 15/5 s
    plan = plan_fires(s, anchor, None, now)
    assert plan.missed == [anchor + timedelta(seconds=10), anchor + timedelta(seconds=20)]
    assert plan.fire == [anchor + timedelta(seconds=30), anchor + timedelta(seconds=40)]


def test_coalesced_latest_beyond_grace_is_missed() -> None:
    s = spec(cron="0 2 * * *", timezone="Asia/Shanghai", misfire_grace_time=60, coalesce=True)
    anchor = datetime(2026, 11, 20, tzinfo=UTC)
    now = datetime(2026, 11, 24, 3, 0, tzinfo=SH)  # an hour after today's 02:00
    plan = plan_fires(s, anchor, None, now)
    assert plan.fire == [] and plan.missed == [datetime(2026, 11, 24, 2, 0, tzinfo=SH)]
    assert len(plan.coalesced) == 3
    assert plan.next_due == datetime(2026, 11, 25, 2, 0, tzinfo=SH)


def test_no_grace_limit_runs_any_late_fire() -> None:
    s = spec(interval_seconds=60, misfire_grace_time=None, coalesce=True)
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    plan = plan_fires(s, anchor, None, anchor + timedelta(days=3))
    assert plan.fire == [anchor + timedelta(days=3)] and plan.missed == []


def test_an_early_wake_up_fires_nothing() -> None:
    s = spec(interval_seconds=1)
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    plan = plan_fires(s, anchor, anchor + timedelta(seconds=1), anchor + timedelta(seconds=1.999))
    assert plan.fire == [] and plan.next_due == anchor + timedelta(seconds=2)


def test_the_emission_allowance_counts_against_the_grace_up_to_half_of_it() -> None:
    s = spec(interval_seconds=10, misfire_grace_time=1.0)
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    late = anchor + timedelta(seconds=10.9)  # the slot at 10 s is 0.9 s late
    assert plan_fires(s, anchor, None, late).fire == [anchor + timedelta(seconds=10)]
    assert plan_fires(s, anchor, None, late, emit_seconds=0.05).fire == [anchor + timedelta(seconds=10)]
    assert plan_fires(s, anchor, None, late, emit_seconds=0.2).missed == [anchor + timedelta(seconds=10)]
    # a slow Kafka never makes a slot less than half its grace late count as missed
    early = anchor + timedelta(seconds=10.4)
    assert plan_fires(s, anchor, None, early, emit_seconds=30).fire == [anchor + timedelta(seconds=10)]
    unbounded = spec(interval_seconds=10, misfire_grace_time=None)
    assert plan_fires(unbounded, anchor, None, late, emit_seconds=30).fire == [anchor + timedelta(seconds=10)]
