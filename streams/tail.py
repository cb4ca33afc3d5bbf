"""`cdcflow tail`: a live, one-line-per-event view of any pipeline topic.

Reads with partitions assigned by hand and a throw-away group id that never commits, so watching
a topic disturbs no consumer group.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Message, TopicPartition

from schemas.settings import Settings
from streams.event_filter import EventFilter
from streams.events import EventFacts, facts, message_time, summary
from streams.replay_range import partitions_of


def format_line(msg: Message, f: EventFacts, width: int = 80) -> str:
    key = (msg.key() or b"").decode("utf-8", "replace")
    if len(key) > 20:  # invocation ids are keys too, and the summary shows them whole
        key = key[:19] + "…"
    where = f"{msg.partition()}@{msg.offset():<6}"
    return f"{message_time(msg.timestamp())}  {where} {key:<20} {summary(f, msg.value(), width)}"


def format_json(msg: Message, f: EventFacts) -> str:
    return orjson.dumps(
        {
            "topic": msg.topic(),
            "partition": msg.partition(),
            "offset": msg.offset(),
            "timestamp_ms": msg.timestamp()[1],
            "key": (msg.key() or b"").decode("utf-8", "replace"),
            "kind": f.kind,
            "value": f.value if f.value is not None else (msg.value() or b"").decode("utf-8", "replace"),
        }
    ).decode()


def tail(
    settings: Settings,
    topic: str,
    event_filter: EventFilter,
    emit: Callable[[str], None],
    *,
    from_beginning: bool = False,
    limit: int | None = None,
    as_json: bool = False,
    stop: threading.Event | None = None,
    width: int = 80,
) -> int:
    """Print matching events until `limit` were printed or `stop` is set; return how many were printed."""
    stop = stop or threading.Event()
    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": f"cdcflow-tail-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest" if from_beginning else "latest",
            }
        )
    )
    printed = 0
    try:
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        consumer.assign([TopicPartition(topic, p, start) for p in partitions_of(consumer, topic)])
        while not stop.is_set() and (limit is None or printed < limit):
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            f = facts(msg.value())
            if not event_filter.accepts(f):
                continue
            emit(format_json(msg, f) if as_json else format_line(msg, f, width))
            printed += 1
    finally:
        consumer.close()
    return printed
