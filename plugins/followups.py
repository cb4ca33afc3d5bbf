"""Publish a message that must be on Kafka before the invocation that caused it is recorded.

A retry or a dead letter replaces the failed attempt's message: only after Kafka acknowledged it
(acks=all) may the attempt be recorded and its offset committed. The lane thread that ran the
attempt blocks here for that one round trip; the result sink's delivery thread serves the
producer's callbacks, so no second poll loop is needed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

log = logging.getLogger(__name__)

WAIT_SLICE_SECONDS = 0.5
RETRY_SECONDS = 1.0


# Errors that publishing the same message again cannot cure: waiting for them would hold the
# invocation's partition forever. The caller decides what to publish instead.
PERMANENT = frozenset({KafkaError.MSG_SIZE_TOO_LARGE})


class Unpublishable(Exception):
    """Kafka refuses this message for good (e.g. too large for the topic); the message says why."""


class _Delivery:
    """The delivery report of one produce, waited for by the publishing thread."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: KafkaError | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        self.error = err
        self.done.set()


class FollowupPublisher:
    def __init__(self, producer: Producer, stop: threading.Event):
        self.producer = producer
        self.stop = stop

    def publish(self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()) -> bool:
        """Produce and wait for the acknowledgement; False if the runner stops first (nothing is recorded).

        Raises Unpublishable when Kafka refuses the message for good (PERMANENT)."""
        while True:
            delivery = _Delivery()
            try:
                self.producer.produce(topic, key=key, value=value, headers=list(headers), on_delivery=delivery)
            except BufferError:
                self.producer.poll(0.1)
                continue
            except KafkaException as e:
                _raise_if_permanent(topic, len(value), e.args[0] if e.args else None)
                log.error("cannot publish to %s: %s; retrying", topic, e)
                if self.stop.wait(RETRY_SECONDS):
                    return False
                continue
            while not delivery.done.wait(WAIT_SLICE_SECONDS):
                if self.stop.is_set() and not delivery.done.wait(5.0):  # give an in-flight ack a moment at shutdown
                    return False
            if delivery.error is None:
                return True
            _raise_if_permanent(topic, len(value), delivery.error)
            log.error("message to %s not delivered (%s); retrying", topic, delivery.error)
            if self.stop.wait(RETRY_SECONDS):
                return False


def _raise_if_permanent(topic: str, size: int, error: object) -> None:
    if isinstance(error, KafkaError) and error.code() in PERMANENT:
        raise Unpublishable(f"{topic} refuses a message of {size} bytes: {error.str()}")
