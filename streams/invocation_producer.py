"""The row-change path's producer: a batch of invocations handed over at once, one future for all their acks.

Faust's `topic.send` costs an await, a FutureMessage and aiokafka's pure-Python accumulator per
message; at thousands of invocations per second that is most of the worker's time. librdkafka
batches and compresses in its own threads; a thread of ours serves its delivery reports and
resolves, on the event loop, one future per batch once Kafka acknowledged every message of it
(acks=all, idempotent: librdkafka's retries neither reorder nor double a message).
"""
from __future__ import annotations

import asyncio
import threading

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from schemas.settings import Settings


class InvocationsNotDelivered(RuntimeError):
    """Kafka refused or timed out an invocation (after librdkafka's own retries)."""


class Delivery:
    """One batch's delivery reports, counted in the poll thread; the future resolves on the loop."""

    __slots__ = ("remaining", "error", "future", "loop")

    def __init__(self, count: int, loop: asyncio.AbstractEventLoop):
        self.remaining = count
        self.error: str | None = None
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        if count == 0:
            self.future.set_result(None)

    def report(self, error: KafkaError | None, message: Message) -> None:
        if error is not None and self.error is None:
            self.error = f"{message.topic()}: {error}"
        self.remaining -= 1
        if self.remaining == 0:
            self.loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        if self.future.done():
            return
        if self.error is None:
            self.future.set_result(None)
        else:
            self.future.set_exception(InvocationsNotDelivered(f"invocation(s) not delivered, e.g. {self.error}"))


class InvocationProducer:
    def __init__(self, settings: Settings):
        self._producer = Producer(settings.kafka_config(**{
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": "lz4",
            "linger.ms": 2,
            # The Java client's (and aiokafka's) partitioner, so an invocation id lands in the same
            # partition whichever client produced it.
            "partitioner": "murmur2_random",
        }))
        self._closed = threading.Event()
        self._poller: threading.Thread | None = None

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)  # delivery reports: Delivery.report runs here

    async def produce_all(self, messages: list[tuple[str, bytes, bytes]]) -> asyncio.Future[None]:
        """Hand (topic, key, value) messages to librdkafka; the future resolves once Kafka has them all."""
        if self._poller is None:
            self._poller = threading.Thread(target=self._poll, name="invocation-deliveries", daemon=True)
            self._poller.start()
        delivery = Delivery(len(messages), asyncio.get_running_loop())
        produce = self._producer.produce
        report = delivery.report
        for topic, key, value in messages:
            while True:
                try:
                    produce(topic, value, key, on_delivery=report)
                    break
                except BufferError:  # librdkafka's queue is full: let it drain
                    await asyncio.sleep(0.01)
                except KafkaException as e:
                    # Refused before sending (e.g. over message.max.bytes): raised as a failed delivery,
                    # so the batch is never acked and the worker stops naming it, instead of the agent
                    # restarting past the batch.
                    raise InvocationsNotDelivered(f"{topic}: an invocation of {len(value)} bytes was refused: "
                                                  f"{e.args[0].str() if e.args else e}") from e
        return delivery.future

    def close(self, timeout: float = 10.0) -> int:
        """Wait for what is still queued (at most `timeout`), stop the poll thread; what is left undelivered."""
        self._closed.set()
        if self._poller is not None:
            self._poller.join(1.0)  # one thread serves the reports (Delivery counts without a lock)
        return self._producer.flush(timeout)
