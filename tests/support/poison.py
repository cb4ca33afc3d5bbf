"""Poison messages (issue 17): garbage of every kind a topic may carry, written as raw bytes straight
onto the real topics, and the committed offsets of the group that should have moved past them.

Raw bytes because Python's json cannot write some of it (an integer beyond 64 bits stays exact only
as digits we type; NaN/Infinity are not JSON but parsers may accept them), and because a poison
message is exactly what no producer of this project would write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.settings import Settings

HUGE_INT = b"99999999999999999999999999999999"  # 107 bits
# The producer's default message.max.bytes is 1,000,000 and the broker's default topic limit
# 1,048,588: a value of this size is as large as a default topic takes, with room for key and headers.
NEAR_LIMIT_BYTES = 990_000


@dataclass
class Poison:
    name: str  # what kind of garbage, for assertion messages
    value: bytes | None
    key: bytes | None = b"poison"
    headers: list[tuple[str, bytes]] | None = None


def raw_json(template: Any, **raw: bytes) -> bytes:
    """JSON of `template` in which each string "@NAME@" is replaced by raw[NAME] as is (not quoted)."""
    out = json.dumps(template, separators=(",", ":")).encode()
    for name, value in raw.items():
        out = out.replace(f'"@{name}@"'.encode(), value)
    return out


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def generic() -> list[Poison]:
    """Garbage that is wrong for any topic of the project, whatever shape it expects."""
    return [
        Poison("not JSON", b"\x00\xffthis is {not json"),
        Poison("empty value", b""),
        Poison("tombstone (no value), no key", None, key=None),
        Poison("JSON list", b"[1, 2, 3]"),
        Poison("JSON string", b'"just a string"'),
        Poison("JSON number", b"42"),
        Poison("JSON null", b"null"),
        Poison("bare NaN", b"NaN"),
        Poison("object with Infinity", b'{"x": Infinity, "y": -Infinity}'),
        Poison("object with an integer beyond 64 bits", b'{"n": ' + HUGE_INT + b"}"),
        Poison("100-level nesting", nested(100)),
        Poison("300-level nesting", b'{"a": ' + nested(300) + b"}"),
        Poison("empty object", b"{}"),
        Poison("invalid UTF-8 in a string", b'{"a": "\xff\xfe"}', key=b"\xff\xfe\x00 not a key"),
        Poison("lone surrogate escape", b'{"a": "\\ud800"}'),
    ]


def odd_events() -> list[Poison]:
    """Result-, invocation-, dead-letter- and row-change-looking objects whose fields have the wrong types."""
    return [
        Poison("status a list", orjson.dumps({"invocation_id": 5, "status": ["failed"], "plugin": ["echo"]})),
        Poison("error a string", orjson.dumps({"invocation_id": "i", "status": "failed", "error": "boom"})),
        Poison("deep output", raw_json({"invocation_id": "i", "status": "success", "output": "@X@"}, X=nested(300))),
        Poison("trigger a string", orjson.dumps({"invocation_id": "i", "trigger": "x", "plugin": "echo"})),
        Poison("op a list", orjson.dumps({"op": ["c"], "source": {"db": "s", "table": "t"}, "event_id": "e"})),
        Poison("source a string", orjson.dumps({"op": "c", "source": "shop", "event_id": "e"})),
        Poison("attempts a number", orjson.dumps({"dlq_id": "d", "invocation": {"trigger": "t"}, "attempts": 5})),
        Poison("plugin an object", orjson.dumps({"request_id": "r", "plugin": {"a": 1}, "params": "p"})),
    ]


def produce_raw(
    settings: Settings, topic: str, items: list[Poison], partition: int = 0, max_bytes: int = 1_000_000
) -> list[int]:
    """Produce each item, in order, to one partition; return their offsets."""
    producer = Producer(
        settings.kafka_config(**{"acks": "all", "enable.idempotence": True, "message.max.bytes": max_bytes})
    )
    offsets: dict[int, int] = {}
    for i, item in enumerate(items):
        producer.produce(
            topic,
            value=item.value,
            key=item.key,
            partition=partition,
            headers=item.headers or [],
            on_delivery=lambda err, msg, i=i: offsets.__setitem__(i, -1 if err else msg.offset()),
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    assert all(offsets.get(i, -1) >= 0 for i in range(len(items))), "some poison was not accepted by Kafka"
    return [offsets[i] for i in range(len(items))]


def committed(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offset per partition of `topic` (-1001 when it committed none)."""
    consumer = Consumer(settings.kafka_config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {tp.partition: tp.offset for tp in consumer.committed([TopicPartition(topic, p) for p in partitions])}
    finally:
        consumer.close()


def ends(settings: Settings, topic: str) -> dict[int, int]:
    """The high watermark (offset after the last message) of each partition of `topic`."""
    consumer = Consumer(settings.kafka_config(**{"group.id": "poison-watermarks", "enable.auto.commit": False}))
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    finally:
        consumer.close()
