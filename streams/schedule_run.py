"""`cdcflow schedules run NAME`, the logic: fire a schedule now, outside its slots.

The invocation is the one its timer would emit (plugin, params, priority, a `schedule` trigger whose
fire_time is now), with its own deterministic id ("schedule", name, "run", key): the same key (the
CLI's --key) gives the same invocation, which the runners run once; without one each run is new.
It goes straight onto the plugin's topic (acks=all) and is then recorded like any fire: a `run` tick
in the schedule's history, its last invocation (`schedules list` shows its result), and its recent
invocations (so max_instances counts it). The schedule's slots are untouched: the next slot fires
as planned.

A manual run is an operator's explicit request: it runs even when the schedule is paused or
max_instances invocations are still running (APScheduler's `job.func()` by hand does the same).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
from confluent_kafka import KafkaError, Producer

from schemas.invocation import invocation_id_for
from schemas.rules import Schedule
from schemas.runtime.kafka_topics import ensure_topics
from schemas.settings import Settings
from schemas.trigger_request import ScheduleTick
from streams.schedule_state import ScheduleStore
from streams.schedule_timer import schedule_invocation

SEND_TIMEOUT = 30.0


class ScheduleRunError(RuntimeError):
    """Kafka did not accept the run; nothing was recorded."""


def run_invocation_id(schedule: str, key: str) -> str:
    return invocation_id_for("schedule", schedule, "run", key)


def run_schedule_now(settings: Settings, schedule: Schedule, key: str | None = None) -> str:
    """Fire `schedule` now; returns the invocation id (the same for the same key)."""
    now = datetime.now(UTC)
    invocation = schedule_invocation(schedule, now)
    invocation["invocation_id"] = run_invocation_id(schedule.name, key or str(uuid.uuid4()))
    invocation["created_at"] = now.isoformat()
    _publish(settings, invocation)
    tick = ScheduleTick(
        schedule=schedule.name,
        plugin=schedule.plugin,
        fire_time=now,
        emitted_at=datetime.now(UTC),
        status="run",
        invocation_id=invocation["invocation_id"],
    )
    store = ScheduleStore(settings)
    try:
        store.record(schedule.name, None, [tick], [invocation["invocation_id"]], 0)
    finally:
        store.close()
    return str(invocation["invocation_id"])


def _publish(settings: Settings, invocation: dict[str, object]) -> None:
    topic = settings.topics.invoke(str(invocation["plugin"]), str(invocation["priority"]))
    ensure_topics(settings, [topic])
    producer = Producer(settings.kafka_config(**{"acks": "all", "enable.idempotence": True, "linger.ms": 0}))
    delivered: list[KafkaError | None] = []
    producer.produce(
        topic,
        key=str(invocation["invocation_id"]).encode(),
        value=orjson.dumps(invocation),
        on_delivery=lambda error, _msg: delivered.append(error),
    )
    producer.flush(SEND_TIMEOUT)
    if not delivered or delivered[0] is not None:
        why = delivered[0] if delivered else f"no answer within {SEND_TIMEOUT:.0f}s"
        raise ScheduleRunError(f"Kafka at {settings.kafka.bootstrap_servers} did not accept the run of {topic}: {why}")
