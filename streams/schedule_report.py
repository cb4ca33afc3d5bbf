"""`cdcflow schedules list`, the logic: each schedule with its state in Redis, its next fire and the
result of its last one."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from plugins.store import RunStore
from schemas.config import Config
from schemas.rules import Schedule
from streams.schedule_state import ScheduleState, ScheduleStore
from streams.schedule_times import next_slot


def next_fire(schedule: Schedule, state: ScheduleState, now: datetime) -> datetime | None:
    """When the timer will fire it next (None: paused or disabled)."""
    if state.paused or not schedule.enabled:
        return None
    anchor = state.anchor or now.replace(microsecond=0)  # what the timer will store on first sight
    return next_slot(schedule, anchor, max(filter(None, [state.last, now])))


def describe_timing(schedule: Schedule) -> str:
    if schedule.cron:
        return f"cron {schedule.cron} {schedule.timezone}"
    return f"every {schedule.interval_seconds:g}s" if schedule.interval_seconds else f"at {schedule.at}"


def schedule_rows(config: Config, now: datetime) -> list[dict[str, Any]]:
    """One row per schedule, times in the schedule's own timezone."""
    store, runs = ScheduleStore(config.settings), RunStore(config.settings)
    try:
        return [_row(s, store, runs, now) for s in config.rules.schedules]
    finally:
        store.close()
        runs.close()


def _row(s: Schedule, store: ScheduleStore, runs: RunStore, now: datetime) -> dict[str, Any]:
    state = store.load(s.name)
    nxt = next_fire(s, state, now)
    tz = ZoneInfo(s.timezone)
    result = runs.get(state.last_invocation) if state.last_invocation else None
    return {
        "name": s.name,
        "plugin": s.plugin,
        "when": describe_timing(s),
        "next_fire": nxt.astimezone(tz).isoformat() if nxt else None,
        "last_fire": state.last.astimezone(tz).isoformat() if state.last else None,
        "last_result": result.status if result else ("pending" if state.last_invocation else None),
        "paused": state.paused,
        "enabled": s.enabled,
        "missed": state.missed_total,
    }
