"""Dead letters: read them back from the DLQ topic and replay them.

The topic is the record (Redis run history expires; the DLQ does not). Listing reads it from the
start to the current end with a group-less consumer, so it never disturbs anyone's offsets. An
entry's id is the dead invocation's id; a runner that crashed between publishing an entry and
committing can publish it twice, so entries are de-duplicated by id (the last copy wins).

Replay publishes the entry's invocation again under a new id derived from the entry id, trigger
kind `replay`, attempt 1. It is safe to run twice: replayed entries are remembered in Redis
(<prefix>:dlq:replayed, id -> replay) and skipped, and because the new id is deterministic, even a
replay repeated after a crash (published, not yet remembered) is the same invocation, which the
runners' done marker runs only once.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from pydantic import ValidationError

from plugins.registry import NotFoundError
from plugins.store import RunStore
from schemas.invocation import Invocation, ReplayTrigger, invocation_id_for
from schemas.runtime.kafka_topics import ensure_topics
from schemas.settings import Settings

READ_TIMEOUT_SECONDS = 30.0

log = logging.getLogger(__name__)


def read_entries(settings: Settings, plugin: str | None = None) -> list[dict[str, Any]]:
    """Every dead letter on the topic (oldest first), de-duplicated by id."""
    topic = settings.topics.dlq
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"cdcflow-dlq-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
    )
    entries: dict[str, dict[str, Any]] = {}
    try:
        meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or meta.error is not None:
            return []
        ends: dict[int, int] = {}
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        if not ends:
            return []
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        remaining = set(ends)
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        while remaining and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            err, partition, offset = msg.error(), msg.partition(), msg.offset()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF and partition is not None:
                    remaining.discard(partition)
                continue
            if partition is None or offset is None:  # a fetched message has both (the stubs make them optional)
                continue
            if offset + 1 >= ends[partition]:
                remaining.discard(partition)
            entry = _entry(msg.value(), f"{topic}[{partition}]@{offset}")
            if entry is not None:
                entries.pop(entry["dlq_id"], None)  # re-insert: order by the last copy
                entries[entry["dlq_id"]] = entry
    finally:
        consumer.close()
    return [e for e in entries.values() if plugin is None or e.get("plugin") == plugin]


def _entry(value: bytes | None, where: str) -> dict[str, Any] | None:
    """The dead letter in a message, or None (logged naming where it is) for anything else on the topic:
    only what a runner or the streams worker writes can be listed and replayed (one garbage message
    would otherwise fail every listing and replay)."""
    try:
        parsed = orjson.loads(value or b"")
    except orjson.JSONDecodeError as e:
        log.warning("%s: not a dead letter, skipped (not JSON: %s)", where, e)
        return None
    entry: dict[str, Any] = parsed if isinstance(parsed, dict) else {}
    dlq_id = entry.get("dlq_id")
    if not isinstance(dlq_id, str) or not dlq_id.strip() or not isinstance(entry.get("plugin"), str):
        log.warning("%s: not a dead letter, skipped (no dlq_id or plugin)", where)
        return None
    try:
        Invocation.model_validate(entry.get("invocation"))
    except ValidationError as e:
        log.warning("%s: dead letter %s skipped: its invocation is not valid (%s)", where, dlq_id, e)
        return None
    return entry


def replayed(store: RunStore, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    ids = list(ids)
    if not ids:
        return {}
    raws = store.client.hmget(store.replayed_key(), ids)
    return {i: orjson.loads(r) for i, r in zip(ids, raws, strict=True) if r is not None}


def replay_invocation(settings: Settings, entry: dict[str, Any]) -> Invocation:
    original = Invocation.model_validate(entry["invocation"])
    if entry.get("params_omitted"):  # too large for the DLQ topic when it died: the params are at the source
        original.params = source_invocation(settings, entry).params
    now = datetime.now(UTC)
    new_id = invocation_id_for("dlq-replay", entry["dlq_id"])
    return Invocation(
        invocation_id=new_id,
        plugin=original.plugin,
        params=original.params,
        priority=original.priority,
        attempt=1,
        created_at=now,
        trigger=ReplayTrigger(
            source_topic=settings.topics.dlq, original_invocation_id=entry["dlq_id"], replay_id=new_id
        ),
    )


def source_invocation(settings: Settings, entry: dict[str, Any]) -> Invocation:
    """The invocation as it was on its topic, read at the entry's source partition and offset."""
    topic, partition, offset = entry.get("source_topic"), entry.get("source_partition"), entry.get("source_offset")
    where = f"{topic}[{partition}]@{offset}"
    if not isinstance(topic, str) or not isinstance(partition, int) or not isinstance(offset, int):
        raise NotFoundError(f"dead letter {entry.get('dlq_id')} has no params and names no source message")
    consumer = Consumer(
        settings.kafka_config(**{"group.id": f"cdcflow-dlq-reader-{uuid.uuid4().hex}", "enable.auto.commit": False})
    )
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + READ_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None and msg.offset() == offset:
                invocation = Invocation.model_validate_json(msg.value() or b"")
                if invocation.invocation_id != entry.get("dlq_id"):
                    break
                return invocation
    finally:
        consumer.close()
    raise NotFoundError(f"dead letter {entry.get('dlq_id')}: its invocation is no longer at {where}")


def replay(settings: Settings, entries: list[dict[str, Any]]) -> list[tuple[dict[str, Any], Invocation | None]]:
    """Replay the entries not replayed yet; (entry, new invocation) per entry, None for one skipped."""
    store = RunStore(settings)
    try:
        already = replayed(store, [e["dlq_id"] for e in entries])
        todo = [(e, replay_invocation(settings, e)) for e in entries if e["dlq_id"] not in already]
        if todo:
            ensure_topics(settings, {settings.topics.invoke(inv.plugin, inv.priority) for _, inv in todo})
            producer = Producer(settings.kafka_config(**{"acks": "all", "enable.idempotence": True}))
            errors: list[str] = []
            for _, inv in todo:
                producer.produce(
                    settings.topics.invoke(inv.plugin, inv.priority),
                    key=inv.invocation_id.encode(),
                    value=inv.model_dump_json().encode(),
                    on_delivery=lambda err, msg: errors.append(str(err)) if err else None,
                )
            if producer.flush(30) or errors:
                raise RuntimeError(f"replay not acknowledged by Kafka: {errors or 'flush timed out'}")
            # Only after Kafka has them: remembering first would lose a replay on a crash in between.
            store.client.hset(
                store.replayed_key(),
                mapping={
                    e["dlq_id"]: orjson.dumps({"replay_id": inv.invocation_id, "replayed_at": time.time()})
                    for e, inv in todo
                },
            )
        done = {e["dlq_id"]: inv for e, inv in todo}
        return [(e, done.get(e["dlq_id"])) for e in entries]
    finally:
        store.close()


def dead_letters(
    settings: Settings, plugin: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The dead letters on the DLQ topic (oldest first; only `plugin`'s if given), and the replays of
    those already replayed (by dead letter id). Raises redis.RedisError if the replays cannot be read."""
    entries = read_entries(settings, plugin)
    store = RunStore(settings)
    try:
        return entries, replayed(store, [entry["dlq_id"] for entry in entries])
    finally:
        store.close()


def dead_letters_to_replay(settings: Settings, ids: tuple[str, ...], plugin: str | None) -> list[dict[str, Any]]:
    """The dead letters named by `ids` (in that order, once each; of `plugin` if given), or without
    ids all of `plugin`'s. NotFoundError names the ids that are not on the DLQ topic."""
    entries = read_entries(settings, plugin)
    if not ids:
        return entries
    by_id = {entry["dlq_id"]: entry for entry in entries}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise NotFoundError(f"no dead letter {', '.join(missing)}" + (f" of plugin {plugin}" if plugin else ""))
    return [by_id[i] for i in dict.fromkeys(ids)]
