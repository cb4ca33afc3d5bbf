"""Creating the topics a component needs before it produces or subscribes.

Components create their own topics rather than rely on broker auto-creation: a consumer that
subscribes to a missing topic waits silently, and auto-created topics get the broker's defaults.
"""

from __future__ import annotations

import logging
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
    futures = admin.create_topics(
        [
            NewTopic(
                t,
                num_partitions=partitions or (1 if compacted else settings.kafka.partitions),
                replication_factor=settings.kafka.replication_factor,
                config=row_change if settings.topics.parse_row_changes(t) else config,
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
