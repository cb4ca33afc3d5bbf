"""Creating the topics a component needs before it produces or subscribes.

Components create their own topics rather than rely on broker auto-creation: a consumer that
subscribes to a missing topic waits silently, and auto-created topics get the broker's defaults.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from schemas.settings import Settings

log = logging.getLogger(__name__)

# A row change may carry a LONGBLOB/LONGTEXT of many MB (base64 makes a 16 MB blob ~22 MB of JSON),
# and the broker's default limit is ~1 MB: row-change topics are created with this limit and
# their producers set message.max.bytes to it (a row beyond it is refused with a clear error).
ROW_CHANGE_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# A dead letter holds its invocation (up to its topic's limit) plus the errors of every attempt, so
# it may not fit a topic of the invocation's size: the DLQ topic takes what a row-change topic takes,
# and the runner's producer sets message.max.bytes to it.
DLQ_MAX_MESSAGE_BYTES = ROW_CHANGE_MAX_MESSAGE_BYTES
# What an invocation may be (key and value): librdkafka's default message.max.bytes, under the broker's
# default topic limit (1,048,588), which the plugins' topics keep. A larger one is dead-lettered.
INVOKE_MAX_MESSAGE_BYTES = 1_000_000


# Kafka's own rule for topic names (org.apache.kafka.common.internals.Topic.validate): the broker
# refuses any other name when ensure_topics creates it, and the component that asked stops.
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def topic_name_problem(name: str) -> str | None:
    """Why Kafka would refuse `name` as a topic, or None."""
    if _TOPIC_NAME.fullmatch(name) and name not in (".", ".."):
        return None
    return f"{name!r} is not a Kafka topic name (1 to 249 ASCII letters, digits, '.', '_' or '-')"


def ensure_topics(
    settings: Settings,
    topics: Iterable[str],
    compacted: bool = False,
    partitions: int | None = None,
    timeout: float = 30.0,
) -> list[str]:
    """Create the missing topics; return the names created. Existing topics are left as they are."""
    wanted = sorted(set(topics))
    if not wanted:
        return []
    admin = AdminClient(settings.kafka_config())
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    config = {"cleanup.policy": "compact"} if compacted else {}
    row_change = {**config, "max.message.bytes": str(ROW_CHANGE_MAX_MESSAGE_BYTES)}
    dlq = {**config, "max.message.bytes": str(DLQ_MAX_MESSAGE_BYTES)}
    futures = admin.create_topics(
        [
            NewTopic(
                t,
                num_partitions=partitions or (1 if compacted else settings.kafka.partitions),
                replication_factor=settings.kafka.replication_factor,
                config=row_change
                if settings.topics.parse_row_changes(t)
                else dlq
                if t == settings.topics.dlq
                else config,
            )
            for t in missing
        ],
        operation_timeout=timeout,
    )
    created = []
    for topic, future in futures.items():
        try:
            future.result()
            created.append(topic)
            log.info("created topic %s", topic)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return created
