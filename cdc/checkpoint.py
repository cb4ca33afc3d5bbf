"""Reader positions, stored in a compacted Kafka topic so a reader on another host can take over."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from schemas.runtime.kafka_topics import ensure_topics
from schemas.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Position:
    """Where to resume: the end of the last transaction whose rows Kafka acknowledged.

    MariaDB resumes by GTID (mysql-replication ignores file/pos when is_mariadb=True); MySQL resumes
    by GTID set when gtid_mode is on, else by file/pos.
    """

    file: str | None = None
    pos: int | None = None
    gtid_set: str | None = None
    server_id: int | None = None
    updated_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def describe(self) -> str:
        parts = []
        if self.file:
            parts.append(f"{self.file}:{self.pos}")
        if self.gtid_set:
            parts.append(f"gtid {self.gtid_set}")
        return " ".join(parts) or "(none)"


class CheckpointStore:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.topic = settings.topics.cdc_checkpoints
        self.key = settings.cdc.name.encode()

    def ensure(self) -> None:
        ensure_topics(self.settings, [self.topic], compacted=True)

    def load(self, timeout: float = 10.0) -> Position | None:
        """Read the newest checkpoint of this reader (the topic is compacted and small)."""
        value = self.load_value(self.key, timeout)
        return Position(**value) if value is not None else None

    def load_value(self, key: bytes, timeout: float = 10.0) -> dict[str, Any] | None:
        """The newest JSON value stored under `key` (the reader's position, or a snapshot's progress)."""
        consumer = Consumer(
            self.settings.kafka_config(
                **{
                    "group.id": f"{self.settings.cdc.name}-checkpoint-reader",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                }
            )
        )
        try:
            latest: dict[str, Any] | None = None
            metadata = consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
            if metadata is None or not metadata.partitions:
                return None
            for partition in metadata.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, partition), timeout=timeout)
                if high <= low:
                    continue
                consumer.assign([TopicPartition(self.topic, partition, low)])
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    msg = consumer.poll(0.5)
                    if msg is None or msg.error():
                        continue
                    if msg.key() == key:
                        value = msg.value()
                        latest = orjson.loads(value) if value else None  # None: a tombstone
                    offset = msg.offset()
                    if offset is not None and offset >= high - 1:
                        break
            return latest
        finally:
            consumer.close()

    def save(self, producer: Producer, position: Position) -> None:
        position.updated_ms = int(time.time() * 1000)
        producer.produce(self.topic, key=self.key, value=orjson.dumps(asdict(position)))
