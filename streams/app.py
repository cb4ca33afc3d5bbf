"""The Faust app: row changes and manual triggers in, invocations out (one topic per plugin).

At-least-once from Kafka plus de-duplication: each row's last processed binlog position is kept
in a RocksDB table keyed by the row (the same key the source topic is partitioned by, so the
table partition an agent sees is the one that holds the row), and invocation ids are
deterministic, so a redelivered change never yields a second, different invocation.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import faust
import orjson

from schemas.config import Config
from schemas.invocation import invocation_id_for
from schemas.kafka_topics import ensure_topics
from schemas.trigger_request import ManualTriggerRequest
from streams.matcher import Matcher

log = logging.getLogger("cdcflow.streams")


def binlog_order(event_id: str) -> tuple[str, int, int] | None:
    """(file, pos, row) of a binlog event id `server:file:pos:row`; None for other ids."""
    parts = event_id.split(":")
    if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
        return None
    return parts[1], int(parts[2]), int(parts[3])


def is_duplicate(last_seen: str | None, event_id: str) -> bool:
    if last_seen is None:
        return False
    if last_seen == event_id:
        return True
    seen, new = binlog_order(last_seen), binlog_order(event_id)
    return seen is not None and new is not None and new <= seen


def kafka_brokers(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def build_app(config: Config) -> faust.App:
    settings = config.settings
    topics = settings.topics
    matcher = Matcher.compile(config.rules, str(config.path or "config"))
    row_topics = [topics.row_changes(db, table) for db, table in config.rules.tables()]
    plugins = sorted(config.rules.plugins())
    ensure_topics(settings, [*row_topics, topics.triggers, *(topics.invoke(p) for p in plugins)])

    settings.streams.state_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.streams.app_id,
        broker=kafka_brokers(settings.kafka.bootstrap_servers),
        store="rocksdb://",
        datadir=str(settings.streams.state_dir),
        topic_partitions=settings.kafka.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.0,
        web_enabled=False,
        autodiscover=False,
        # Our topics are created up front with the right partition counts.
        topic_allow_declare=True,
    )
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    invoke_topics: dict[str, faust.TopicT] = {}

    def invoke_topic(plugin: str) -> faust.TopicT:
        if plugin not in invoke_topics:
            invoke_topics[plugin] = app.topic(topics.invoke(plugin), **raw)
        return invoke_topics[plugin]

    async def emit(invocation: dict[str, Any]) -> None:
        invocation["created_at"] = datetime.now(timezone.utc).isoformat()
        await invoke_topic(invocation["plugin"]).send(key=invocation["invocation_id"].encode(), value=orjson.dumps(invocation))

    last_position = app.Table("row-last-event", partitions=settings.kafka.partitions)

    if row_topics:
        @app.agent(app.topic(*row_topics, **raw), name="match_row_changes")
        async def match_row_changes(stream: faust.StreamT) -> None:
            async for event in stream.events():
                message = event.message
                try:
                    change = orjson.loads(event.value)
                    event_id = change["event_id"]
                    source = change["source"]
                except (orjson.JSONDecodeError, KeyError, TypeError) as e:
                    log.error("skipping malformed row change at %s[%d]@%d: %s",
                              message.topic, message.partition, message.offset, e)
                    continue
                row_key = f"{source.get('db')}.{source.get('table')}|{(event.key or b'').decode()}"
                if is_duplicate(last_position.get(row_key), event_id):
                    log.debug("duplicate row change %s dropped", event_id)
                    continue
                for planned in matcher.match(change):
                    await emit(planned.invocation)
                    log.info("row change %s on %s.%s -> %s (rule %s, invocation %s)", event_id, source["db"],
                             source["table"], planned.plugin, planned.invocation["trigger"]["rule"],
                             planned.invocation["invocation_id"])
                last_position[row_key] = event_id

    @app.agent(app.topic(topics.triggers, **raw), name="route_manual_triggers")
    async def route_manual_triggers(stream: faust.StreamT) -> None:
        async for event in stream.events():
            message = event.message
            try:
                request = ManualTriggerRequest.model_validate_json(event.value)
            except ValueError as e:
                log.error("skipping malformed trigger at %s[%d]@%d: %s", message.topic, message.partition,
                          message.offset, e)
                continue
            invocation = {
                "invocation_id": invocation_id_for("manual", request.request_id, request.plugin),
                "plugin": request.plugin,
                "params": request.params,
                "trigger": {"kind": "manual", "requested_by": request.requested_by,
                            "requested_at": request.requested_at.isoformat(), "request_id": request.request_id},
                "attempt": 1,
                "priority": request.priority,
            }
            await emit(invocation)
            log.info("manual trigger %s by %s -> %s (invocation %s)", request.request_id, request.requested_by,
                     request.plugin, invocation["invocation_id"])

    return app


def run_worker(config: Config, loglevel: str = "INFO") -> None:
    """Run the app under faust.Worker (signals, table recovery, clean shutdown)."""
    app = build_app(config)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, override_logging=False)
    if logging.getLevelName(loglevel.upper()) != logging.DEBUG:
        # Faust, mode and aiokafka narrate every service start/stop at INFO; keep our lines readable.
        for name in ("faust", "mode", "aiokafka"):
            logging.getLogger(name).setLevel(logging.WARNING)
    worker.execute_from_commandline()
