"""Skipped schedule slots recorded as `skipped` runs with the reason (issue 14): the timer with a fixed
clock, the real Redis run history and the real results topic."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import Producer

from plugins.run_query import RunFilter, query_runs
from plugins.store import RunStore
from schemas.config import parse_rules
from schemas.invocation import invocation_id_for
from schemas.runtime.kafka_topics import ensure_topics
from streams.schedule_state import ScheduleStore
from streams.schedule_timer import ScheduleTimer
from streams.skipped_slots import SkippedSlots
from tests.support import isolated_settings, remove_test_resources
from tests.support.plugins import ResultsReader, result_for

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def settings(stack: None):
    s = isolated_settings("skip")
    ensure_topics(s, [s.topics.results])
    yield s
    remove_test_resources(s, [s.topics.results])


def test_missed_and_max_instances_slots_are_recorded_skipped_with_the_reason(settings) -> None:
    schedules = parse_rules(
        {
            "schedules": {
                "strict": {"plugin": "p", "interval_seconds": 10, "misfire_grace_time": 1, "coalesce": False},
                "single": {"plugin": "q", "interval_seconds": 10, "misfire_grace_time": 60, "max_instances": 1},
            }
        },
        "t.yaml",
        "db",
    ).schedules
    producer = Producer(settings.kafka_config(**{"acks": "all"}))

    async def send(key: bytes, value: bytes) -> None:
        producer.produce(settings.topics.results, key=key, value=value)
        assert producer.flush(30) == 0

    sent: list[dict[str, Any]] = []

    async def emit(invocation: dict[str, Any]) -> None:
        sent.append(invocation)

    now = [T0]
    skipped = SkippedSlots(settings, send)
    timer = ScheduleTimer(schedules, ScheduleStore(settings), emit, clock=lambda: now[0], skipped_runs=skipped)
    store = RunStore(settings)
    reader = ResultsReader(settings)
    try:
        asyncio.run(timer.tick())  # anchors both at T0
        now[0] = T0 + timedelta(seconds=10.2)  # both due: both fire
        asyncio.run(timer.tick())
        assert sorted(i["plugin"] for i in sent) == ["p", "q"]
        # 25 s later: strict's 20 s slot is past its 1 s grace (missed), its 30 s slot not due yet;
        # single's 20 s slot is due while its 10 s run has no result (max_instances=1)
        now[0] = T0 + timedelta(seconds=21.5 + 3)
        asyncio.run(timer.tick())
        missed_id = invocation_id_for("schedule", "strict", "2026-01-01T00:00:20+00:00")
        capped_id = invocation_id_for("schedule", "single", "2026-01-01T00:00:20+00:00")
        missed, capped = store.get(missed_id), store.get(capped_id)
        assert missed is not None and missed.status == "skipped" and missed.error is not None
        assert missed.error.type == "MisfireGraceExceeded" and "misfire_grace_time=1" in missed.error.message
        assert missed.trigger == {"kind": "schedule", "schedule": "strict", "fire_time": "2026-01-01T00:00:20+00:00"}
        assert capped is not None and capped.status == "skipped" and capped.error is not None
        assert capped.error.type == "MaxInstancesReached" and "max_instances=1 still running" in capped.error.message
        assert capped.plugin == "q" and capped.trigger_kind == "schedule"
        assert {r.invocation_id for r in query_runs(store, RunFilter(status="skipped"), 10).runs} == {
            missed_id,
            capped_id,
        }
        assert result_for(reader, missed_id, 30)["error"]["type"] == "MisfireGraceExceeded"
        assert result_for(reader, capped_id, 30)["status"] == "skipped"
        assert len(sent) == 2  # neither skipped slot ran
    finally:
        reader.close()
        store.close()
        skipped.close()
        timer.store.close()
