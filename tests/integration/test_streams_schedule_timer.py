"""ScheduleTimer with a fixed clock and the real Redis: failures re-emit the same slot, never skip it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.config import parse_rules
from schemas.invocation import invocation_id_for
from streams.schedule_state import ScheduleStore
from streams.schedule_timer import ScheduleTimer
from tests.support import isolated_settings, remove_test_resources

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def store(stack: None):
    settings = isolated_settings("tmr")
    s = ScheduleStore(settings)
    yield s
    remove_test_resources(settings, [])
    s.close()


def test_a_failed_emit_is_retried_with_the_same_id_and_other_schedules_still_fire(store: ScheduleStore) -> None:
    schedules = parse_rules(
        {
            "schedules": {
                "a": {"plugin": "p", "interval_seconds": 10, "misfire_grace_time": 60},
                "b": {"plugin": "q", "interval_seconds": 10, "misfire_grace_time": 60},
            }
        },
        "t.yaml",
        "db",
    ).schedules
    sent: list[dict[str, Any]] = []
    fail = {"p"}

    async def emit(invocation: dict[str, Any]) -> None:
        if invocation["plugin"] in fail:
            raise RuntimeError("Kafka down")
        sent.append(invocation)

    clock = Clock()
    timer = ScheduleTimer(schedules, store, emit, clock=clock)
    wait = asyncio.run(timer.tick())  # anchors both at T0
    assert sent == [] and wait == pytest.approx(1.0)  # capped by max_sleep
    clock.now = T0 + timedelta(seconds=10.5)
    asyncio.run(timer.tick())
    slot = "2026-01-01T00:00:10+00:00"
    assert [i["invocation_id"] for i in sent] == [invocation_id_for("schedule", "b", slot)]
    assert store.load("a").last is None  # not advanced: the slot is still due
    fail.clear()
    clock.now = T0 + timedelta(seconds=12)
    asyncio.run(timer.tick())
    assert [i["invocation_id"] for i in sent][1:] == [invocation_id_for("schedule", "a", slot)]
    assert sent[1]["trigger"] == {"kind": "schedule", "schedule": "a", "fire_time": slot}
    clock.now = T0 + timedelta(seconds=19.99)
    assert asyncio.run(timer.tick()) == pytest.approx(0.01, abs=1e-6)  # sleeps exactly until the next slot
    assert len(sent) == 2


def test_a_changed_timing_counts_from_now_instead_of_catching_up_old_slots(store: ScheduleStore) -> None:
    def schedules(timing: dict[str, Any]):
        spec = {"plugin": "p", "misfire_grace_time": None, "coalesce": False, "max_instances": 10, **timing}
        return parse_rules({"schedules": {"s": spec}}, "t.yaml", "db").schedules

    sent: list[dict[str, Any]] = []

    async def emit(invocation: dict[str, Any]) -> None:
        sent.append(invocation)

    clock = Clock()
    daily = ScheduleTimer(schedules({"cron": "0 2 * * *"}), store, emit, clock=clock)
    asyncio.run(daily.tick())  # anchors at T0 (00:00)
    clock.now = T0 + timedelta(hours=2, seconds=1)
    asyncio.run(daily.tick())
    assert [i["trigger"]["fire_time"] for i in sent] == ["2026-01-01T02:00:00+00:00"]

    # Ten hours later the cron becomes hourly: with no grace limit, the old state would run all ten
    # hourly slots since 02:00. The new timing starts counting at the change instead.
    clock.now = T0 + timedelta(hours=12, minutes=30)
    hourly = ScheduleTimer(schedules({"cron": "0 * * * *"}), store, emit, clock=clock)
    asyncio.run(hourly.tick())
    assert len(sent) == 1
    state = store.load("s")
    assert state.anchor == state.last == T0 + timedelta(hours=12, minutes=30)
    clock.now = T0 + timedelta(hours=13, seconds=1)
    asyncio.run(hourly.tick())
    assert [i["trigger"]["fire_time"] for i in sent][1:] == ["2026-01-01T13:00:00+00:00"]

    # Same timing again (a restart, or a params-only edit): nothing is reset.
    again = ScheduleTimer(schedules({"cron": "0 * * * *"}), store, emit, clock=clock)
    clock.now = T0 + timedelta(hours=14, seconds=1)
    asyncio.run(again.tick())
    assert [i["trigger"]["fire_time"] for i in sent][2:] == ["2026-01-01T14:00:00+00:00"]
    assert store.load("s").anchor == T0 + timedelta(hours=12, minutes=30)


def test_a_slow_emission_of_one_schedule_does_not_stretch_the_grace_time_of_the_next(store: ScheduleStore) -> None:
    # Seen in CI: right after a restart the first emission waited ~0.5 s for Kafka, and the next
    # schedule, judged at the moment before it, fired a slot already past its 0.5 s grace time.
    schedules = parse_rules(
        {
            "schedules": {
                "slow": {"plugin": "p", "interval_seconds": 10, "misfire_grace_time": 3600},
                "strict": {"plugin": "q", "interval_seconds": 10, "misfire_grace_time": 0.5, "coalesce": False},
            }
        },
        "t.yaml",
        "db",
    ).schedules
    clock = Clock()
    sent: list[str] = []

    async def emit(invocation: dict[str, Any]) -> None:
        if invocation["plugin"] == "p":
            clock.now += timedelta(seconds=0.6)  # a slow first ack
        sent.append(invocation["plugin"])

    timer = ScheduleTimer(schedules, store, emit, clock=clock)
    asyncio.run(timer.tick())  # anchors both at T0
    clock.now = T0 + timedelta(seconds=10.1)  # both slots 0.1 s late: within both grace times
    asyncio.run(timer.tick())
    assert sent == ["p"]
    assert [t.status for t in store.ticks("strict")] == ["missed"]  # 0.7 s late when its turn came


def test_a_slot_is_fired_only_if_its_emission_is_expected_within_the_grace(store: ScheduleStore) -> None:
    """The grace bounds when the invocation is on Kafka, not when the timer looked: a slot judged 0.49 s
    late against a 0.5 s grace, whose emission then takes 30 ms, would be on Kafka 0.52 s late."""
    schedules = parse_rules(
        {
            "schedules": {
                "strict": {"plugin": "p", "interval_seconds": 1, "misfire_grace_time": 0.5, "max_instances": 9}
            }
        },
        "t.yaml",
        "db",
    ).schedules
    sent: list[str] = []

    async def emit(invocation: dict[str, Any]) -> None:
        await asyncio.sleep(0.03)
        sent.append(invocation["trigger"]["fire_time"])

    clock = Clock()
    timer = ScheduleTimer(schedules, store, emit, clock=clock)
    asyncio.run(timer.tick())  # anchors at T0
    clock.now = T0 + timedelta(seconds=1.3)  # 0.3 s late: within the grace even with the first allowance
    asyncio.run(timer.tick())
    clock.now = T0 + timedelta(seconds=2.49)  # 0.49 s late: 0.52 s once emitted, as the last emission took
    asyncio.run(timer.tick())
    clock.now = T0 + timedelta(seconds=3.45)  # 0.45 s late: 0.48 s once emitted
    asyncio.run(timer.tick())
    assert sent == ["2026-01-01T00:00:01+00:00", "2026-01-01T00:00:03+00:00"]
    assert [t.status for t in store.ticks("strict")][-3:] == ["fired", "missed", "fired"]
