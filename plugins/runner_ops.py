"""The plugin runner's /metrics, probes, heartbeat and alerts (hooked into plugins/runner.py).

Per result (lane threads): two metric updates, and an alert put on a queue if one is due. Queue
depth and workers alive are read from the lanes at scrape time. Ready only once every plugin's
venv and warm pool is up and the consumer is subscribed (Runner.run marks it).

The runner is seen through RunnerView, the few attributes read here, so this module does not
import plugins.runner (which imports it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from plugins.execution import RUNNER_ID
from plugins.lane import PluginLane
from schemas.invocation import Invocation
from schemas.result import Result
from schemas.runtime.alerts import Alerter
from schemas.runtime.observability import ComponentObservability
from schemas.settings import Settings

DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, 600.0)


class RunnerView(Protocol):
    """What the ops read from the runner (plugins.runner.Runner)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def lanes(self) -> Mapping[str, PluginLane]: ...

    @property
    def paused_topics(self) -> Collection[str]: ...

    @property
    def stop(self) -> threading.Event: ...


class LaneCollector(Collector):
    def __init__(self, runner: RunnerView):
        self.runner = runner

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "cdcflow_runner_queue_depth", "invocations queued or running in the plugin's lane", labels=["plugin"]
        )
        delayed = GaugeMetricFamily(
            "cdcflow_runner_retries_waiting", "retries waiting for their not-before time", labels=["plugin"]
        )
        workers = GaugeMetricFamily(
            "cdcflow_runner_workers_alive", "warm worker processes of the plugin", labels=["plugin"]
        )
        size = GaugeMetricFamily("cdcflow_runner_workers_configured", "the plugin's concurrency", labels=["plugin"])
        for lane in list(self.runner.lanes.values()):
            name = lane.plugin.name
            depth.add_metric([name], lane.backlog)
            delayed.add_metric([name], lane.delayed)
            workers.add_metric([name], len(lane.pool.pids()))
            size.add_metric([name], lane.pool.size)
        paused = GaugeMetricFamily(
            "cdcflow_runner_paused_topics",
            "topics paused because their lane is full",
            value=len(self.runner.paused_topics),
        )
        yield from (depth, delayed, workers, size, paused)


class RunnerOps:
    def __init__(self, runner: RunnerView):
        self.runner = runner
        settings = runner.settings
        self.registry = CollectorRegistry()
        self.invocations = Counter(
            "cdcflow_runner_invocations", "results by plugin and status", ["plugin", "status"], registry=self.registry
        )
        self.durations = Histogram(
            "cdcflow_runner_duration_seconds",
            "plugin call durations",
            ["plugin"],
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "cdcflow_runner_dead_letters", "invocations dead-lettered", ["plugin"], registry=self.registry
        )
        self.registry.register(LaneCollector(runner))
        self.alerts = settings.alerts
        self.alerter = Alerter(settings.alerts, "runner")
        self._ready = False
        # label children cached: .labels() validates and locks on every call, a dict lookup does not
        self._counted: dict[tuple[str, str], Any] = {}
        self._timed: dict[str, Any] = {}
        # calls running now (only with long_run_seconds): invocation id -> (plugin, monotonic start),
        # scanned each heartbeat so a hung call is reported while it hangs, not only when it ends
        self._running: dict[str, tuple[str, float]] = {}
        self._long_reported: set[str] = set()
        self.observability = ComponentObservability(
            "runner",
            settings,
            settings.observability.runners_port,
            self.registry,
            ready=self._ready_check,
            details=self._details,
            on_heartbeat=self._check_long_runs,
        )

    def start(self) -> RunnerOps:
        self.alerter.start()
        self.observability.start()
        return self

    def mark_ready(self) -> None:
        self._ready = True

    def stop(self) -> None:
        self._ready = False
        self.observability.stop()
        self.alerter.close()

    # -- hooks (lane threads) --------------------------------------------------------------------
    def on_start(self, invocation: Invocation) -> None:
        if self.alerts.long_run_seconds is not None:
            self._running[invocation.invocation_id] = (invocation.plugin, time.monotonic())

    def on_result(self, result: Result) -> None:
        key = (result.plugin, result.status)
        counter = self._counted.get(key)
        if counter is None:
            counter = self._counted[key] = self.invocations.labels(*key)
        counter.inc()
        if result.status == "rejected":
            return
        seconds = result.duration_ms / 1000
        histogram = self._timed.get(result.plugin)
        if histogram is None:
            histogram = self._timed[result.plugin] = self.durations.labels(result.plugin)
        histogram.observe(seconds)
        if result.status in ("failed", "timeout") and self.alerts.on_failure:
            error = (
                f"{result.error.type}: {result.error.message.splitlines()[0] if result.error.message else ''}"
                if result.error
                else result.status
            )
            self.alerter.alert(
                "failure",
                result.plugin,
                f"plugin {result.plugin} invocation {result.invocation_id} attempt {result.attempt} "
                f"{result.status}: {error}",
                invocation_id=result.invocation_id,
                attempt=result.attempt,
                status=result.status,
            )
        limit = self.alerts.long_run_seconds
        self._running.pop(result.invocation_id, None)
        if result.invocation_id in self._long_reported:  # already reported while it ran
            self._long_reported.discard(result.invocation_id)
        elif limit is not None and seconds > limit:
            self.alerter.alert(
                "long_run",
                result.plugin,
                f"plugin {result.plugin} invocation {result.invocation_id} ran {seconds:.1f} s (threshold {limit:g} s)",
                invocation_id=result.invocation_id,
                duration_seconds=seconds,
                status=result.status,
            )

    def _check_long_runs(self) -> None:
        limit = self.alerts.long_run_seconds
        if limit is None:
            return
        now = time.monotonic()
        for iid, (plugin, started) in list(self._running.items()):
            if now - started > limit and iid not in self._long_reported:
                self._long_reported.add(iid)
                self.alerter.alert(
                    "long_run",
                    plugin,
                    f"plugin {plugin} invocation {iid} still running after {now - started:.1f} s "
                    f"(threshold {limit:g} s)",
                    invocation_id=iid,
                    duration_seconds=now - started,
                    status="running",
                )

    def on_dead_letter(self, entry: dict[str, Any]) -> None:
        plugin = str(entry.get("plugin"))
        self.dead_letters.labels(plugin).inc()
        if self.alerts.on_dead_letter:
            error = entry.get("error") or {}
            self.alerter.alert(
                "dead_letter",
                plugin,
                f"plugin {plugin} invocation {entry.get('dlq_id')} dead-lettered after "
                f"{len(entry.get('attempts') or [])} attempt(s): {error.get('type')}: "
                f"{str(error.get('message') or '').splitlines()[0] if error.get('message') else ''}",
                invocation_id=entry.get("dlq_id"),
                source_topic=entry.get("source_topic"),
            )

    # -- probes ---------------------------------------------------------------------------------
    def _ready_check(self) -> tuple[bool, str | None]:
        if self.runner.stop.is_set():
            return False, "stopping"
        if not self._ready:
            return False, "starting: building plugin venvs and warm pools"
        if not self.runner.lanes:
            return False, "no plugin could be started (see `cdcflow plugins list`)"
        return True, None

    def _details(self) -> dict[str, Any]:
        return {
            "runner_id": RUNNER_ID,
            "group": self.runner.settings.runners.group_id,
            "plugins": {
                lane.plugin.name: {
                    "version": lane.plugin.version,
                    "queued": lane.backlog,
                    "workers": len(lane.pool.pids()),
                }
                for lane in list(self.runner.lanes.values())
            },
        }
