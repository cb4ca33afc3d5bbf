"""Schedule slots that were not run, recorded as `skipped` runs (issue 14): in the run history and on the
results topic, under the id the slot would have run with, with the reason as the error.

Two reasons, as APScheduler names them: a slot found later than its schedule's misfire_grace_time
(`MisfireGraceExceeded`), and a slot due while max_instances runs of the schedule have no result yet
(`MaxInstancesReached`). The schedule's ticks and alerts keep their own record; this one is what
`runs list --status skipped`, `runs show` and the dashboard's Runs page see.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from plugins.execution import RUNNER_ID
from plugins.store import RunStore
from schemas.invocation import invocation_id_for
from schemas.result import ErrorInfo, Result
from schemas.rules import Schedule
from schemas.settings import Settings
from streams.schedule_times import slot_key

log = logging.getLogger("cdcflow.streams.schedules")

MISFIRE = "MisfireGraceExceeded"
MAX_INSTANCES = "MaxInstancesReached"
# (key, value) onto the results topic; awaited until Kafka acknowledged it
SendResult = Callable[[bytes, bytes], Awaitable[Any]]


def skipped_result(schedule: Schedule, slot: datetime, reason: str, why: str) -> Result:
    key = slot_key(slot)
    now = datetime.now(UTC)
    return Result(
        invocation_id=invocation_id_for("schedule", schedule.name, key),
        plugin=schedule.plugin,
        plugin_version="",
        status="skipped",
        started_at=now,
        finished_at=now,
        duration_ms=0.0,
        error=ErrorInfo(type=reason, message=f"schedule {schedule.name}: slot {key} skipped: {why}"),
        trigger_kind="schedule",
        runner=RUNNER_ID,
        params=dict(schedule.params),
        trigger={"kind": "schedule", "schedule": schedule.name, "fire_time": key},
    )


class SkippedSlots:
    def __init__(self, settings: Settings, send: SendResult | None = None):
        self.settings = settings
        self.send = send
        self._store: RunStore | None = None  # made at the first skip: most workers never see one

    async def record(self, schedule: Schedule, slots: list[datetime], reason: str, why: str) -> None:
        """Record and publish; a failure is logged, never raised: the timer must go on firing."""
        if not slots:
            return
        results = [skipped_result(schedule, s, reason, why) for s in slots]
        payloads = [r.model_dump_json().encode() for r in results]
        try:
            if self._store is None:
                self._store = RunStore(self.settings)
            await asyncio.to_thread(self._store.record_many, results, payloads)
            if self.send is not None:
                for result, payload in zip(results, payloads, strict=True):
                    await self.send(result.invocation_id.encode(), payload)
        except Exception:
            log.exception("schedule %s: cannot record %d skipped slot(s) as runs", schedule.name, len(slots))

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
