"""The Faust worker's /metrics, probes and heartbeat (hooked into streams/app.py).

Ready only once Faust has recovered its tables (`app.tables.recovery.completed`, and not
recovering again after a rebalance): before that the worker holds partitions it cannot serve
correctly yet. Alive while its event loop turns: a timer on the loop ticks every half second, and
a loop stuck for 15 s (a blocking call in an agent) fails /healthz.

Faust's state is read only by that tick, on the event loop: the HTTP and heartbeat threads read
what it recorded. Touching the app from another thread is not harmless: Faust creates some parts
on first access (the tables' Recovery service, the consumer), and one created early, from the
wrong thread, left the worker hanging before it ever became ready.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import faust
from prometheus_client import CollectorRegistry, Counter

from schemas.config import Config
from schemas.rules import Schedule
from schemas.runtime.alerts import Alerter
from schemas.runtime.observability import ComponentObservability
from streams.faust_app import add_timer, tables_recovered

if TYPE_CHECKING:
    from streams.row_changes import RowChangeLoop

LOOP_STUCK_SECONDS = 15.0


class StreamsOps:
    def __init__(self, config: Config):
        self.settings = config.settings
        self.registry = CollectorRegistry()
        self.events = Counter(
            "cdcflow_streams_events",
            "events consumed: row changes by db and table; manual triggers as db=manual",
            ["db", "table"],
            registry=self.registry,
        )
        self.matches = Counter("cdcflow_streams_matches", "rule matches, by rule", ["rule"], registry=self.registry)
        self.invocations = Counter(
            "cdcflow_streams_invocations",
            "invocations emitted, by plugin and trigger kind",
            ["plugin", "trigger"],
            registry=self.registry,
        )
        self.schedule_fires = Counter(
            "cdcflow_streams_schedule_fires",
            "schedule fires emitted, by schedule",
            ["schedule"],
            registry=self.registry,
        )
        # label children cached: .labels() validates and locks on every call, a dict lookup does not
        self._children: dict[tuple[str, ...], Any] = {}
        self.app: faust.App | None = None
        self.last_tick = time.monotonic()
        self.ticked = False
        # written by the tick on the event loop, read by the HTTP and heartbeat threads
        # Faust starts app timers only once the worker is up, so before the first tick it is still
        # connecting, joining the group or recovering its tables
        self.readiness: tuple[bool, str | None] = (False, "starting: joining the group, recovering tables")
        self.leader = False
        self.assigned = 0
        self.observability: ComponentObservability | None = None
        self.row_changes: RowChangeLoop | None = None  # when rules watch tables
        self.alerter = Alerter(config.settings.alerts, "streams")

    @classmethod
    def attach(cls, app: faust.App, config: Config) -> StreamsOps:
        """Create the metrics for this app and the liveness tick on its loop (call in build_app)."""
        ops = cls(config)
        ops.app = app

        async def liveness_tick() -> None:
            ops.observe_app()

        add_timer(app, 0.5, "cdcflow_liveness_tick", liveness_tick)
        return ops

    # -- hooks (event loop) ----------------------------------------------------------------------
    def _child(self, metric: Counter, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def on_row_batch(
        self,
        tables: Mapping[tuple[str, str], int],
        rules: Mapping[str, int],
        invocations: Mapping[tuple[str, str], int],
    ) -> None:
        """Once per committed row-change batch (from the row-change thread: counters are thread-safe)."""
        for (db, table), n in tables.items():
            self._child(self.events, db, table).inc(n)
        for rule, n in rules.items():
            self._child(self.matches, rule).inc(n)
        for (plugin, kind), n in invocations.items():
            self._child(self.invocations, plugin, kind).inc(n)

    def on_manual_trigger(self) -> None:
        self._child(self.events, "manual", "").inc()

    def on_emitted(self, invocation: dict[str, Any]) -> None:
        trigger = invocation.get("trigger") or {}
        kind = trigger.get("kind", "?")
        self._child(self.invocations, invocation.get("plugin", "?"), kind).inc()
        if kind == "schedule":
            self._child(self.schedule_fires, trigger.get("schedule", "?")).inc()

    # -- lifecycle (run_worker) ----------------------------------------------------------------
    def start(self) -> StreamsOps:
        self.last_tick = time.monotonic()
        self.observability = ComponentObservability(
            "streams",
            self.settings,
            self.settings.observability.streams_port,
            self.registry,
            ready=self._ready,
            live=self._live,
            details=self._details,
        ).start()
        self.alerter.start()
        return self

    def stop(self) -> None:
        if self.observability is not None:
            self.observability.stop()
        self.alerter.close()

    def on_schedule_skipped(self, schedule: Schedule, slots: list[datetime], why: str) -> None:
        if not self.settings.alerts.on_schedule_skip or not slots:
            return
        latest = slots[-1].isoformat()
        self.alerter.alert(
            "schedule_skipped",
            schedule.name,
            f"schedule {schedule.name} ({schedule.plugin}): {len(slots)} slot(s) not run, {why}; latest {latest}",
            schedule=schedule.name,
            plugin=schedule.plugin,
            slots=[s.isoformat() for s in slots[-20:]],
            reason=why,
        )

    def observe_app(self) -> None:
        """On the event loop only (the tick)."""
        app = self.app
        assert app is not None
        self.last_tick = time.monotonic()
        self.ticked = True
        if not tables_recovered(app):
            self.readiness = (False, "recovering tables (waiting for the first assignment and changelog replay)")
        elif app.in_recovery:
            self.readiness = (False, "recovering tables after a rebalance")
        elif self.row_changes is not None and not self.row_changes.running:
            self.readiness = (False, "the row-change consumer is not running")
        else:
            self.readiness = (True, None)
        try:
            self.leader = app.is_leader()
            self.assigned = len(app.consumer.assignment())
        except Exception:  # the consumer may be (re)starting
            pass

    def _live(self) -> tuple[bool, str | None]:
        stuck = time.monotonic() - self.last_tick
        if self.ticked and stuck > LOOP_STUCK_SECONDS:
            return False, f"event loop has not turned for {stuck:.0f} s"
        return True, None

    def _ready(self) -> tuple[bool, str | None]:
        live, why = self._live()
        return self.readiness if live else (False, why)

    def _details(self) -> dict[str, Any]:
        details = {"app_id": self.settings.streams.app_id, "leader": self.leader, "assigned": self.assigned}
        if self.row_changes is not None:
            p = self.row_changes.progress
            details["row_changes"] = {
                "assigned": p.assigned,
                "events": p.events,
                "invocations": p.emitted,
                "duplicates": p.duplicates,
                "batches": p.batches,
                "aborts": p.aborts,
                "last_commit": p.last_commit,
                "commit_seconds": round(p.commit_seconds, 4),
                "recent_batch_events": round(p.recent_batch_events, 1),
                "recent_commit_ms": round(p.recent_commit_ms, 2),
            }
        return details
