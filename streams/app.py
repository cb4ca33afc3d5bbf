"""The Faust app: row changes and manual triggers in, invocations out (one topic per plugin).

Row changes are the hot path and do not go through a Faust agent: a librdkafka consumer in a
thread of the worker reads them in batches and commits each batch's invocations with its offsets
in one Kafka transaction (streams/row_changes.py: exactly once per change, de-duplication of
re-sent changes by binlog position; debounce in the same transactions, streams/debounce_pending.py).
Manual triggers and the schedule timer are Faust.

Built here from modules of their own: the schedule timer (schedule_timer.py, leader only), the
release of delayed triggers (delayed_release.py, leader only, onto the triggers topic), hot
reload of the rules file (reload.py: swap the matcher in place, or re-exec the worker when topics
change), the emitter of manual and scheduled invocations (emitter.py), and Faust itself, reached
only through the typed functions of faust_app.py.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass

import faust

from schemas.config import Config
from schemas.runtime.kafka_topics import ensure_topics
from schemas.settings import Settings
from streams.debounce_pending import PendingDebounces, pending_topic
from streams.delayed_release import delayed_release
from streams.emitter import Emitter, manual_invocation
from streams.faust_app import Agent, add_agent, add_task, add_thread_service, crash_from_thread, new_app, raw_topic
from streams.reload import Live, RulesReload
from streams.row_changes import RowChangeLoop
from streams.schedule_state import ScheduleStore
from streams.schedule_timer import ScheduleTimer
from streams.skipped_slots import SendResult, SkippedSlots
from streams.table_columns import TableColumns
from streams.trigger_checks import Refusal, Rejections, check_request, too_large
from streams.validation import validated_matcher
from streams.worker_ops import StreamsOps

log = logging.getLogger("cdcflow.streams")


@dataclass
class StreamsApp:
    """The Faust app and the parts of it that run_worker and hot reload reach."""

    app: faust.App
    ops: StreamsOps  # /metrics, probes, heartbeat (streams/worker_ops.py)
    live: Live
    timer: ScheduleTimer | None = None  # when the rules have schedules
    reload: RulesReload | None = None  # when the config comes from a file

    @property
    def restart_reason(self) -> str | None:
        """Set when a rules edit needs a new process."""
        return self.reload.restart_reason if self.reload is not None else None


def build_app(config: Config, consume_only: bool = False) -> StreamsApp:
    """The app; `consume_only` (benchmarks only) makes a Faust agent consume the row changes and ack
    them without matching, which measures Faust's own consume ceiling on the same settings."""
    settings = config.settings
    row_topics = [settings.topics.row_changes(db, table) for db, table in config.rules.tables()]
    debouncing = any(r.enabled and r.debounce_ms for r in config.rules.rules)
    columns = TableColumns(settings)  # a rule's placeholders and bound parameters against its table
    try:
        live = Live(validated_matcher(config, columns))
    finally:
        columns.close()
    _ensure_topics(config, row_topics, debouncing)
    app = new_app(settings)
    built = StreamsApp(app, StreamsOps.attach(app, config), live)
    emitter = Emitter(app, settings.topics, built.ops)
    if config.rules.schedules:
        built.timer = ScheduleTimer(
            config.rules.schedules,
            ScheduleStore(settings),
            emitter.emit_and_wait,
            is_leader=app.is_leader,
            on_skipped=built.ops.on_schedule_skipped,
            skipped_runs=SkippedSlots(settings, _result_sender(app, settings)),
        )
        add_task(app, built.timer.run)
    # Always, not only with schedules: a delayed trigger may name any plugin (streams/delayed_release.py).
    add_task(app, delayed_release(app, settings).run)
    if config.path is not None:
        built.reload = RulesReload(config, live, built.timer)
        add_task(app, built.reload.run)
    if row_topics and consume_only:
        add_agent(app, raw_topic(app, *row_topics), "match_row_changes", _consume_only)
    elif row_topics:
        # Not a Faust agent: batches on librdkafka, one Kafka transaction each (streams/row_changes.py).
        row_changes = RowChangeLoop(
            settings,
            row_topics,
            live,
            built.ops,
            on_fatal=lambda reason: crash_from_thread(app, reason),
            pending=PendingDebounces(settings) if debouncing else None,
        )
        built.ops.row_changes = row_changes  # status details and readiness
        add_thread_service(app, row_changes.start, row_changes.stop)
    router = _trigger_router(emitter, Rejections(app, settings), settings)
    add_agent(app, raw_topic(app, settings.topics.triggers), "route_manual_triggers", router)
    return built


def _result_sender(app: faust.App, settings: Settings) -> SendResult:
    """Publishes onto the results topic through Faust's producer, until Kafka acknowledged it."""
    results = raw_topic(app, settings.topics.results)

    async def send(key: bytes, value: bytes) -> None:
        await (await results.send(key=key, value=value))

    return send


def _ensure_topics(config: Config, row_topics: list[str], debouncing: bool) -> None:
    settings = config.settings
    topics = settings.topics
    plugins = sorted(config.rules.plugins())
    ensure_topics(
        settings, [*row_topics, topics.triggers, *(topics.invoke(p, pr) for p in plugins for pr in ("normal", "high"))]
    )
    if debouncing:  # partition p holds the pending entries of the row topics' partition p
        ensure_topics(settings, [pending_topic(settings)], compacted=True, partitions=settings.kafka.partitions)


async def _consume_only(stream: faust.StreamT[bytes]) -> None:
    async for _event in stream.events():
        pass


def _trigger_router(emitter: Emitter, rejections: Rejections, settings: Settings) -> Agent:
    async def route_manual_triggers(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            message = event.message
            where = f"{message.topic}[{message.partition}]@{message.offset}"
            checked = check_request(settings, event.value, where)
            if isinstance(checked, Refusal):
                await _refuse(rejections, checked, "InvalidTrigger")
                continue
            invocation = manual_invocation(checked)
            if (why := too_large(settings, invocation)) is not None:
                await _refuse(
                    rejections, Refusal(f"{where}: {why}", checked.request_id, checked.plugin), "InvocationTooLarge"
                )
                continue
            emitter.ops.on_manual_trigger()
            await emitter.emit(invocation)
            log.info(
                "manual trigger %s by %s -> %s (invocation %s)",
                checked.request_id,
                checked.requested_by,
                checked.plugin,
                invocation["invocation_id"],
                extra={"plugin": checked.plugin, "invocation_id": invocation["invocation_id"]},
            )

    return route_manual_triggers


async def _refuse(rejections: Rejections, refusal: Refusal, error_type: str) -> None:
    """A rejected result for a request that names whom to tell; else a logged skip (`why` says where)."""
    iid = refusal.invocation_id()
    if iid is None:
        log.error("skipping malformed trigger: %s", refusal.why)
        return
    await rejections.reject(refusal, error_type)
    log.warning(
        "trigger for %s rejected (invocation %s): %s",
        refusal.plugin,
        iid,
        refusal.why if len(refusal.why) <= 500 else refusal.why[:500] + "...",
        extra={"plugin": refusal.plugin, "invocation_id": iid},
    )


def run_worker(config: Config, loglevel: str = "INFO", consume_only: bool = False) -> None:
    """Run the app under faust.Worker (signals, table recovery, clean shutdown)."""
    built = build_app(config, consume_only=consume_only)
    worker = faust.Worker(built.app, loglevel=loglevel, quiet=True, override_logging=False)
    if logging.getLevelName(loglevel.upper()) != logging.DEBUG:
        # Faust, mode and aiokafka narrate every service start/stop at INFO; keep our lines readable.
        for name in ("faust", "mode", "aiokafka"):
            logging.getLogger(name).setLevel(logging.WARNING)
    built.ops.start()
    try:
        worker.execute_from_commandline()
    except SystemExit:
        built.ops.stop()
        if built.restart_reason:
            # Same command line, new process: the new topics are subscribed from the start.
            os.execv(sys.executable, list(sys.orig_argv))
        raise
