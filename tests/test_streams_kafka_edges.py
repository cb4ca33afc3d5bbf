"""Two Kafka edge cases of the streams worker's row-change path, against the real broker:
an invocation Kafka refuses before sending, and a committed offset that retention has deleted."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from faust.types import TP

from schemas.kafka_topics import ensure_topics
from schemas.settings import Settings
from streams.invocation_producer import InvocationProducer, InvocationsNotDelivered
from streams.offset_guard import OffsetGuard
from tests.support import isolated_settings, remove_test_resources

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(stack: None) -> Iterator[Settings]:
    s = isolated_settings("kedge")
    yield s
    remove_test_resources(s, [f"{s.topics.cdc_prefix}.edge"])


def test_an_invocation_kafka_refuses_is_a_failed_delivery_not_a_silent_skip(settings: Settings) -> None:
    topic = f"{settings.topics.cdc_prefix}.edge"
    ensure_topics(settings, [topic], partitions=1)
    producer = InvocationProducer(settings)

    async def produce() -> None:
        delivered = await producer.produce_all([(topic, b"k", b"x" * 2_000_000)])  # over message.max.bytes
        await delivered

    try:
        with pytest.raises(InvocationsNotDelivered, match=rf"{topic}: an invocation of 2000000 bytes was refused"):
            asyncio.run(produce())
    finally:
        producer.close()


def test_a_committed_offset_deleted_by_retention_resumes_at_the_log_start(settings: Settings) -> None:
    topic = f"{settings.topics.cdc_prefix}.edge"
    ensure_topics(settings, [topic], partitions=1)
    producer = Producer(settings.kafka_config())
    for i in range(10):
        producer.produce(topic, str(i).encode(), b"k")
    assert producer.flush(10) == 0
    group = f"{settings.streams.app_id}-{uuid.uuid4().hex[:6]}"
    committer = Consumer(settings.kafka_config(**{"group.id": group, "enable.auto.commit": False}))
    committer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    committer.close()
    guard = OffsetGuard(settings, group, {topic}, lambda: 1)
    assert guard._start_offset(TP(topic, 0)) == 3

    # retention (here: delete-records) removes offsets 0..5: the committed 3 no longer exists
    admin = AdminClient(settings.kafka_config())
    for future in admin.delete_records([TopicPartition(topic, 0, 6)]).values():
        future.result(timeout=30)
    assert OffsetGuard(settings, group, {topic}, lambda: 1)._start_offset(TP(topic, 0)) == 6
