"""The Faust app: row changes and manual triggers in, invocations out (one topic per plugin).

Row changes are the hot path and do not go through a Faust agent: a librdkafka consumer in a
thread of the worker reads them in batches and commits each batch's invocations with its offsets
in one Kafka transaction (streams/row_changes.py: exactly once per change, de-duplication of
re-sent changes by binlog position; debounce in the same transactions, streams/debounce_pending.py).
Manual triggers and the schedule timer are Faust.

Also here, each in its own module: the schedule timer (schedule_timer.py, leader only) and hot
reload of the rules file (reload.py: swap the matcher in place, or re-exec the worker when topics
change).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from datetime import UTC, datetime
from typing import Any

import faust
import mode
import orjson

from schemas.config import Config
from schemas.invocation import invocation_id_for
from schemas.runtime.kafka_topics import ensure_topics
from schemas.trigger_request import ManualTriggerRequest
from streams.debounce_pending import PendingDebounces, pending_topic
from streams.kafka_auth import faust_credentials
from streams.matcher import Matcher
from streams.reload import RulesWatcher
from streams.row_changes import RowChangeLoop
from streams.schedule_state import ScheduleStore
from streams.schedule_timer import ScheduleTimer
from streams.validation import validated_matcher
from streams.worker_ops import StreamsOps

log = logging.getLogger("cdcflow.streams")


def kafka_brokers(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


class Live:
    """What hot reload swaps while agents run (read once per event, so a swap is atomic per event)."""

    def __init__(self, matcher: Matcher):
        self.matcher = matcher


def build_app(config: Config, consume_only: bool = False) -> faust.App:
    """The app; `consume_only` (benchmarks only) makes the row-change agent ack without matching,
    which measures Faust's own consume ceiling on the same settings."""
    settings = config.settings
    topics = settings.topics
    live = Live(validated_matcher(config))
    row_topics = [topics.row_changes(db, table) for db, table in config.rules.tables()]
    plugins = sorted(config.rules.plugins())
    debouncing = any(r.enabled and r.debounce_ms for r in config.rules.rules)
    ensure_topics(
        settings, [*row_topics, topics.triggers, *(topics.invoke(p, pr) for p in plugins for pr in ("normal", "high"))]
    )
    if debouncing:  # partition p holds the pending entries of the row topics' partition p
        ensure_topics(settings, [pending_topic(settings)], compacted=True, partitions=settings.kafka.partitions)

    settings.streams.state_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.streams.app_id,
        broker=kafka_brokers(settings.kafka.bootstrap_servers),
        # SASL/SSL from kafka.client_options, the same block every confluent-kafka client uses.
        broker_credentials=faust_credentials(settings.kafka.client_options),
        store="rocksdb://",
        datadir=str(settings.streams.state_dir),
        topic_partitions=settings.kafka.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # The de-dup table's changelog messages go out in batches (one produce request each, not
        # one per message); invocations of row changes have their own producer.
        producer_linger=0.005,
        web_enabled=False,
        # Faust's default (60 s) leaves a kill -9'd worker's partitions (and the leader role, so the
        # schedule timer) unserved for a minute before the group rebalances.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        autodiscover=False,
        # Our topics are created up front with the right partition counts.
        topic_allow_declare=True,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    ops = StreamsOps.attach(app, config)  # /metrics, probes, heartbeat (streams/worker_ops.py)
    invoke_topics: dict[str, faust.TopicT] = {}

    def invoke_topic(plugin: str, priority: str = "normal") -> faust.TopicT:
        # High priority goes to the plugin's `.high` topic, which runners consume ahead of the
        # normal one, so it never queues behind a backlog in the same partition.
        name = topics.invoke(plugin, priority)
        if name not in invoke_topics:
            invoke_topics[name] = app.topic(name, **raw)
        return invoke_topics[name]

    async def emit(invocation: dict[str, Any]) -> None:
        invocation["created_at"] = datetime.now(UTC).isoformat()
        ops.on_emitted(invocation)
        await invoke_topic(invocation["plugin"], invocation.get("priority", "normal")).send(
            key=invocation["invocation_id"].encode(), value=orjson.dumps(invocation)
        )

    async def emit_and_wait(invocation: dict[str, Any]) -> None:
        # Waits for Kafka's ack: for emissions followed by a state change that says "done" (the
        # timer's last slot), so the state never runs ahead of Kafka.
        invocation["created_at"] = datetime.now(UTC).isoformat()
        ops.on_emitted(invocation)
        pending = await invoke_topic(invocation["plugin"], invocation.get("priority", "normal")).send(
            key=invocation["invocation_id"].encode(), value=orjson.dumps(invocation)
        )
        await pending

    if config.rules.schedules:
        timer = ScheduleTimer(config.rules.schedules, ScheduleStore(settings), emit_and_wait, is_leader=app.is_leader)
        app.schedule_timer = timer  # type: ignore[attr-defined]  # for tests and the lateness bench

        # A plain task, not @app.task(on_leader=True): that checks leadership once, at start-up,
        # before any partition (the leader topic's included) is assigned, so it would never run.
        @app.task
        async def schedule_timer() -> None:
            await timer.run()

    running_timer: ScheduleTimer | None = getattr(app, "schedule_timer", None)
    app.restart_reason = None  # type: ignore[attr-defined]  # set when a rules edit needs a new process
    if config.path is not None:
        watcher = RulesWatcher(config)

        @app.task
        async def watch_rules_file() -> None:
            while True:
                await asyncio.sleep(1.0)
                try:
                    # Off the event loop: loading validates against every plugin.json on disk.
                    outcome = await asyncio.to_thread(watcher.check)
                    if outcome.action == "invalid":
                        log.error("rules file changed but is not valid; keeping the running rules:\n%s", outcome.reason)
                    elif outcome.action == "swap":
                        assert outcome.config is not None and outcome.matcher is not None
                        new_plugins = sorted(outcome.config.rules.plugins())
                        await asyncio.to_thread(
                            ensure_topics,
                            settings,
                            [topics.invoke(p, pr) for p in new_plugins for pr in ("normal", "high")],
                        )
                        live.matcher = outcome.matcher
                        if running_timer is not None:
                            running_timer.schedules = [s for s in outcome.config.rules.schedules if s.enabled]
                        log.info(
                            "rules reloaded from %s: %d rule(s), %d schedule(s)",
                            config.path,
                            len(outcome.config.rules.rules),
                            len(outcome.config.rules.schedules),
                        )
                    elif outcome.action == "restart":
                        log.warning(
                            "rules reloaded from %s: %s; restarting the worker to subscribe anew",
                            config.path,
                            outcome.reason,
                        )
                        app.restart_reason = outcome.reason  # type: ignore[attr-defined]
                        # A clean stop (partitions handed back, offsets committed); run_worker re-execs.
                        os.kill(os.getpid(), signal.SIGTERM)
                        return
                except Exception:
                    log.exception("rules file watch failed; retrying")

    if row_topics and consume_only:

        @app.agent(app.topic(*row_topics, **raw), name="match_row_changes")
        async def consume_row_changes(stream: faust.StreamT) -> None:
            async for _event in stream.events():
                pass

    elif row_topics:
        # Not a Faust agent: batches on librdkafka, one Kafka transaction each (streams/row_changes.py).
        def stop_worker(reason: BaseException) -> None:
            asyncio.run_coroutine_threadsafe(app.crash(reason), app.loop)

        row_changes = RowChangeLoop(
            settings,
            row_topics,
            live,
            ops,
            on_fatal=stop_worker,
            pending=PendingDebounces(settings) if debouncing else None,
        )
        ops.row_changes = row_changes  # status details and readiness

        @app.service
        class RowChanges(mode.Service):
            async def on_start(self) -> None:
                row_changes.start()

            async def on_stop(self) -> None:
                await asyncio.to_thread(row_changes.stop)

    @app.agent(app.topic(topics.triggers, **raw), name="route_manual_triggers")
    async def route_manual_triggers(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                request = ManualTriggerRequest.model_validate_json(event.value)
            except ValueError as e:
                log.error(
                    "skipping malformed trigger at %s[%d]@%d: %s", message.topic, message.partition, message.offset, e
                )
                continue
            ops.on_manual_trigger()
            invocation = {
                "invocation_id": invocation_id_for("manual", request.request_id, request.plugin),
                "plugin": request.plugin,
                "params": request.params,
                "trigger": {
                    "kind": "manual",
                    "requested_by": request.requested_by,
                    "requested_at": request.requested_at.isoformat(),
                    "request_id": request.request_id,
                },
                "attempt": 1,
                "priority": request.priority,
            }
            await emit(invocation)
            log.info(
                "manual trigger %s by %s -> %s (invocation %s)",
                request.request_id,
                request.requested_by,
                request.plugin,
                invocation["invocation_id"],
                extra={"plugin": request.plugin, "invocation_id": invocation["invocation_id"]},
            )

    return app


def run_worker(config: Config, loglevel: str = "INFO", consume_only: bool = False) -> None:
    """Run the app under faust.Worker (signals, table recovery, clean shutdown)."""
    app = build_app(config, consume_only=consume_only)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False)
    if logging.getLevelName(loglevel.upper()) != logging.DEBUG:
        # Faust, mode and aiokafka narrate every service start/stop at INFO; keep our lines readable.
        for name in ("faust", "mode", "aiokafka"):
            logging.getLogger(name).setLevel(logging.WARNING)
    app.cdcflow_ops.start()  # type: ignore[attr-defined]
    try:
        worker.execute_from_commandline()
    except SystemExit:
        app.cdcflow_ops.stop()  # type: ignore[attr-defined]
        if getattr(app, "restart_reason", None):
            # Same command line, new process: the new topics are subscribed from the start.
            os.execv(sys.executable, list(sys.orig_argv))
        raise
