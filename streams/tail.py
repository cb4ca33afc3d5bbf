"""`cdcflow tail`: a live, one-line-per-event view of any pipeline topic.

Reads with partitions assigned by hand and a throw-away group id that never commits, so watching
a topic disturbs no consumer group.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable

import orjson
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, Message, TopicPartition

from schemas.settings import Settings
from streams.event_filter import EventFilter
from streams.events import EventFacts, facts, message_time, summary
from streams.replay_range import partitions_of

log = logging.getLogger("cdcflow.tail")


def format_line(msg: Message, f: EventFacts, width: int = 80) -> str:
    key = (msg.key() or b"").decode("utf-8", "replace")
    if len(key) > 20:  # invocation ids are keys too, and the summary shows them whole
        key = key[:19] + "…"
    where = f"{msg.partition()}@{msg.offset():<6}"
    return f"{message_time(msg.timestamp())}  {where} {key:<20} {summary(f, msg.value(), width)}"


def format_json(msg: Message, f: EventFacts) -> str:
    line = {
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "timestamp_ms": msg.timestamp()[1],
        "key": (msg.key() or b"").decode("utf-8", "replace"),
        "kind": f.kind,
        "value": f.value if f.value is not None else (msg.value() or b"").decode("utf-8", "replace"),
    }
    try:
        return orjson.dumps(line).decode()
    except orjson.JSONEncodeError:  # nesting orjson reads but cannot write: the value as it came
        line["value"] = (msg.value() or b"").decode("utf-8", "replace")
        return orjson.dumps(line).decode()


def shown(msg: Message, event_filter: EventFilter, as_json: bool, width: int) -> str | None:
    """The line for `msg`, None when the filter leaves it out. A message that cannot be summarised
    (a bug meeting data nobody foresaw) is shown as its raw text when nothing is filtered, else
    left out; either way with a warning naming where it is, and the tail goes on."""
    try:
        f = facts(msg.value())
        if not event_filter.accepts(f):
            return None
        return format_json(msg, f) if as_json else format_line(msg, f, width)
    except Exception as e:  # noqa: BLE001 - one message must not end the tail
        where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
        log.warning("tail: cannot show %s (%s: %s)", where, type(e).__name__, e)
        if not event_filter.selects_all:
            return None
        f = EventFacts("unknown", None)
        return format_json(msg, f) if as_json else format_line(msg, f, width)


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
            line = shown(msg, event_filter, as_json, width)
            if line is None:
                continue
            emit(line)
            printed += 1
    finally:
        consumer.close()
    return printed
