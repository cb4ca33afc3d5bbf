"""The schedule timer: fires due schedule slots as invocations, on the leader worker only.

Not Faust's `crontab`/`timer` (which skip missed fires, can fire twice around a leader change or an
early wake-up, and end the app on an unhandled exception): one guarded loop that
- sleeps until the next due slot (at most `max_sleep`, to notice pause/resume and leadership),
- plans with the pure functions of schedule_times from the state in Redis (anchor, last slot),
- emits each slot as an invocation with the deterministic id ("schedule", name, slot), *then*
  advances the stored last slot. A crash between the two re-emits the same id on recovery, and
  two workers that both believe they lead (during a rebalance) emit the same id: downstream
  de-duplicates by invocation id, so a slot runs once.

max_instances: a slot is skipped (recorded as `skipped_max_instances`, APScheduler's "maximum
number of running instances reached") while `max_instances` invocations of the schedule still have
no result (no done marker from the runners in Redis). A result of any status counts as finished.
Slots skipped either way are also recorded as `skipped` runs with the reason (streams/skipped_slots.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from schemas.invocation import invocation_id_for
from schemas.rules import Schedule
from schemas.trigger_request import ScheduleTick
from streams.schedule_state import ScheduleStore
from streams.schedule_times import plan_fires, slot_key
from streams.skipped_slots import MAX_INSTANCES, MISFIRE, SkippedSlots

log = logging.getLogger("cdcflow.streams.schedules")

Emit = Callable[[dict[str, Any]], Awaitable[None]]
Clock = Callable[[], datetime]
# (schedule, slots not run, why): the worker's alert hook for missed and skipped slots
OnSkipped = Callable[[Schedule, list[datetime], str], None]
FIRST_EMIT_ALLOWANCE_SECONDS = 0.05


def utcnow() -> datetime:
    return datetime.now(UTC)


def schedule_invocation(schedule: Schedule, slot: datetime) -> dict[str, Any]:
    key = slot_key(slot)
    return {
        "invocation_id": invocation_id_for("schedule", schedule.name, key),
        "plugin": schedule.plugin,
        "params": dict(schedule.params),
        "trigger": {"kind": "schedule", "schedule": schedule.name, "fire_time": key},
        "attempt": 1,
        "priority": schedule.priority,
    }


class ScheduleTimer:
    def __init__(
        self,
        schedules: list[Schedule],
        store: ScheduleStore,
        emit: Emit,
        is_leader: Callable[[], bool] = lambda: True,
        clock: Clock = utcnow,
        max_sleep: float = 1.0,
        on_skipped: OnSkipped | None = None,
        skipped_runs: SkippedSlots | None = None,
    ):
        self.schedules = [s for s in schedules if s.enabled]
        self.on_skipped = on_skipped
        self.skipped_runs = skipped_runs
        self.store = store
        self.emit = emit
        self.is_leader = is_leader
        self.clock = clock
        self.max_sleep = max_sleep
        self.lateness_ms: list[float] = []  # emission time - slot time, for the lateness benchmark
        self._synced_timing: dict[str, str] = {}  # name -> timing already checked against Redis
        # How long the last emissions took until Kafka acknowledged them; the slowest is the allowance
        # plan_fires keeps inside a slot's grace (before any: FIRST_EMIT_ALLOWANCE_SECONDS, as the first
        # after a start can wait for a connection and the topic's metadata).
        self._emit_seconds: deque[float] = deque(maxlen=20)

    async def tick(self) -> float:
        """Handle every due slot of every schedule; return seconds until the next due slot."""
        wait = self.max_sleep
        for schedule in self.schedules:
            try:
                # Each schedule judged at its own moment: an earlier one's emission may have waited for
                # Kafka (the first after a restart: half a second), and a `now` from before it would
                # take a slot already past its misfire_grace_time as still within it.
                next_due = await self._tick_one(schedule, self.clock())
            except Exception:
                # One schedule's failure (Redis hiccup, Kafka timeout) must not stop the others.
                log.exception("schedule %s: tick failed; retrying", schedule.name)
                next_due = None
            if next_due is not None:
                wait = min(wait, (next_due - self.clock()).total_seconds())
        return max(0.0, wait)

    async def _tick_one(self, schedule: Schedule, now: datetime) -> datetime | None:
        self._sync_timing(schedule, now)
        state = self.store.load(schedule.name)
        anchor = state.anchor or self.store.ensure_anchor(schedule.name, now)
        if state.paused:
            return None
        plan = plan_fires(
            schedule,
            anchor,
            state.last,
            now,
            emit_seconds=max(self._emit_seconds, default=FIRST_EMIT_ALLOWANCE_SECONDS),
        )
        if not (plan.fire or plan.missed or plan.coalesced):
            return plan.next_due
        ticks, fired = await self._fire(schedule, plan.fire, state.recent)
        for status, slots in (("missed", plan.missed), ("coalesced", plan.coalesced)):
            ticks += [
                ScheduleTick(schedule=schedule.name, plugin=schedule.plugin, fire_time=s, status=status) for s in slots
            ]
        if plan.missed or plan.uncounted_missed:
            log.warning(
                "schedule %s: %d slot(s) missed beyond misfire_grace_time=%ss (latest %s)",
                schedule.name,
                len(plan.missed) + plan.uncounted_missed,
                schedule.misfire_grace_time,
                slot_key(plan.missed[-1]) if plan.missed else "-",
            )
            why = f"missed beyond misfire_grace_time={schedule.misfire_grace_time}s"
            self._skipped(schedule, plan.missed, why)
            if self.skipped_runs is not None:
                await self.skipped_runs.record(schedule, plan.missed, MISFIRE, why)
        ticks.sort(key=lambda t: t.fire_time)
        self.store.record(schedule.name, plan.last, ticks, fired, len(plan.missed) + plan.uncounted_missed)
        return plan.next_due

    def _sync_timing(self, schedule: Schedule, now: datetime) -> None:
        """Check the schedule's timing against Redis once per timing (a change restarts the count)."""
        timing = schedule.timing()
        if self._synced_timing.get(schedule.name) == timing:
            return
        previous = self.store.sync_timing(schedule.name, timing, now)
        if previous:
            log.warning(
                "schedule %s: timing changed (%s -> %s); counting slots from now, earlier ones "
                "are neither run nor reported missed",
                schedule.name,
                previous,
                timing,
            )
        self._synced_timing[schedule.name] = timing

    async def _fire(
        self, schedule: Schedule, slots: list[datetime], recent: list[str]
    ) -> tuple[list[ScheduleTick], list[str]]:
        """Emit each slot, or skip it while max_instances invocations have no result; the ticks and
        the invocation ids emitted."""
        ticks: list[ScheduleTick] = []
        fired: list[str] = []
        outstanding = self.store.outstanding(recent) if slots else []
        for slot in slots:
            invocation = schedule_invocation(schedule, slot)
            invocation_id = invocation["invocation_id"]
            if len(outstanding) >= schedule.max_instances:
                ticks.append(
                    ScheduleTick(
                        schedule=schedule.name,
                        plugin=schedule.plugin,
                        fire_time=slot,
                        status="skipped_max_instances",
                        invocation_id=invocation_id,
                    )
                )
                log.warning(
                    "schedule %s: slot %s skipped, %d instance(s) still running (max_instances=%d)",
                    schedule.name,
                    slot_key(slot),
                    len(outstanding),
                    schedule.max_instances,
                )
                why = f"max_instances={schedule.max_instances} still running"
                self._skipped(schedule, [slot], why)
                if self.skipped_runs is not None:
                    await self.skipped_runs.record(schedule, [slot], MAX_INSTANCES, why)
                continue
            ticks.append(await self._emit(schedule, slot, invocation))
            fired.append(invocation_id)
            outstanding.append(invocation_id)
        return ticks, fired

    def _skipped(self, schedule: Schedule, slots: list[datetime], why: str) -> None:
        if self.on_skipped is not None:
            try:
                self.on_skipped(schedule, slots, why)
            except Exception:  # an alert hook must not stop the timer
                log.exception("schedule %s: skipped-slot hook failed", schedule.name)

    async def _emit(self, schedule: Schedule, slot: datetime, invocation: dict[str, Any]) -> ScheduleTick:
        began = time.monotonic()
        await self.emit(invocation)
        self._emit_seconds.append(time.monotonic() - began)
        emitted = utcnow()
        self.lateness_ms.append((emitted - slot).total_seconds() * 1000)
        log.info(
            "schedule %s fired slot %s -> %s (invocation %s, %.1f ms late)",
            schedule.name,
            slot_key(slot),
            schedule.plugin,
            invocation["invocation_id"],
            self.lateness_ms[-1],
        )
        return ScheduleTick(
            schedule=schedule.name,
            plugin=schedule.plugin,
            fire_time=slot,
            emitted_at=emitted,
            status="fired",
            invocation_id=invocation["invocation_id"],
        )

    async def run(self) -> None:
        """Forever: fire what is due while leader. Never raises (but lets cancellation through)."""
        while True:
            try:
                if not self.is_leader():
                    await asyncio.sleep(0.2)
                    continue
                wait = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("schedule timer: unexpected error; continuing")
                wait = self.max_sleep
            await _sleep_precisely(wait)


async def _sleep_precisely(seconds: float) -> None:
    # asyncio.sleep may wake a little early (loop clock resolution); finish the wait so a slot is
    # never planned before it is due (an early tick would just find nothing due and sleep ~0 again).
    end = time.monotonic() + seconds
    await asyncio.sleep(seconds)
    while (left := end - time.monotonic()) > 0:
        await asyncio.sleep(left)
