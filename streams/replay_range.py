"""Which topic, and which offsets of each partition, a replay or tail covers.

Topic names: an existing topic as is; `results`, `dlq`, `triggers`; `invoke:PLUGIN`; or a table
(`db.table` or a bare table of mysql.database) for its row-change topic.

Ranges are half-open per partition, [start, end). Start: `--from-offset`, else the first offset at or
after `--since` (Kafka's offsets-for-times), else the log start. End: `--to-offset`, else the first
offset at or after `--until`, else, like every end, at most the high watermark read when the range is
resolved: the end is fixed then, so a replay of a busy topic finishes.

Partitions: an offset given as `P:OFFSET` names partition P, and a range that names partitions covers
only those (`--from-offset 0:100 --to-offset 0:200` reads partition 0 and nothing else); a bare OFFSET
is every partition's (or, beside named ones, each named partition's where it has no offset of its own).
A range whose start is after its end (offsets of one partition, or --since after --until) is refused,
never read as empty.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from confluent_kafka import Consumer, KafkaException, TopicPartition

from schemas.settings import Settings

RELATIVE = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
METADATA_TIMEOUT = 10.0


class RangeError(ValueError):
    """A topic or range that cannot be used; the message names the option."""


class UnknownTopic(RangeError):
    """The source names no topic that exists."""


class KafkaUnreachable(RuntimeError):
    """The topics could not be listed; the message names the bootstrap servers."""


def metadata_consumer(settings: Settings) -> Consumer:
    """For topic lists, partitions and offsets only (joins no group, commits nothing)."""
    return Consumer(
        settings.kafka_config(**{"group.id": f"cdcflow-meta-{uuid.uuid4().hex}", "enable.auto.commit": False})
    )


def existing_topics(consumer: Consumer, settings: Settings) -> set[str]:
    try:
        return set(consumer.list_topics(timeout=METADATA_TIMEOUT).topics)
    except KafkaException as e:
        raise KafkaUnreachable(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {e.args[0]}") from None


def resolve_topic(settings: Settings, name: str, existing: set[str]) -> str:
    topics = settings.topics
    if name in existing:
        return name
    aliases = {"results": topics.results, "dlq": topics.dlq, "triggers": topics.triggers}
    candidates: list[str] = []
    if name in aliases:
        candidates.append(aliases[name])
    if name.startswith(("invoke:", "plugin:")):
        candidates.append(topics.invoke(name.partition(":")[2]))
    db, _, table = name.rpartition(".")
    if table and "/" not in name:
        candidates.append(topics.row_changes(db or settings.mysql.database, table))
    for candidate in candidates:
        if candidate in existing:
            return candidate
    tried = ", ".join(dict.fromkeys([name, *candidates]))
    raise UnknownTopic(
        f"no topic {name!r} in Kafka at {settings.kafka.bootstrap_servers} (tried: {tried}); "
        "name a topic, results, dlq, triggers, invoke:PLUGIN or a table"
    )


def parse_offsets(specs: tuple[str, ...], option: str) -> dict[int | None, int]:
    """`0:100 1:50` or `0:100,1:50` -> {0: 100, 1: 50}; a bare `100` -> {None: 100} (every partition)."""
    out: dict[int | None, int] = {}
    for spec in specs:
        for item in spec.split(","):
            item = item.strip()
            if not item:
                continue
            part, sep, offset = item.rpartition(":")
            try:
                partition, value = (int(part) if sep else None), int(offset)
            except ValueError:
                raise RangeError(f"{option} {item!r}: expected OFFSET or PARTITION:OFFSET (e.g. 0:100)") from None
            if value < 0 or (partition is not None and partition < 0):
                raise RangeError(f"{option} {item!r}: partitions and offsets start at 0")
            if value >= 2**63 or (partition is not None and partition >= 2**31):
                raise RangeError(f"{option} {item!r}: past the largest offset (or partition) Kafka has")
            if partition in out:
                which = "every partition" if partition is None else f"partition {partition}"
                raise RangeError(f"{option} {item!r}: {which} is given twice")
            out[partition] = value
    return out


def check_order(
    from_offsets: dict[int | None, int],
    to_offsets: dict[int | None, int],
    since: datetime | None = None,
    until: datetime | None = None,
) -> None:
    """Refuse a reversed range (start after end), which would otherwise read as empty without a word."""
    if since is not None and until is not None and since > until:
        raise RangeError(f"--since {since.isoformat()} is after --until {until.isoformat()}")
    for partition in sorted({*from_offsets, *to_offsets}, key=lambda p: -1 if p is None else p):
        start = from_offsets.get(partition, from_offsets.get(None))
        end = to_offsets.get(partition, to_offsets.get(None))
        if start is not None and end is not None and start > end:
            where = "every partition" if partition is None else f"partition {partition}"
            raise RangeError(f"--from-offset {start} is after --to-offset {end} (end exclusive) for {where}")


def parse_time(text: str, option: str, now: datetime | None = None) -> datetime:
    """ISO-8601 (naive = this machine's local time) or relative to now: `2h`, `30m`, `1d12h`, `90s`."""
    now = now or datetime.now(UTC)
    m = RELATIVE.match(text.strip())
    if m and any(m.groups()):
        d, h, mi, s = (int(g or 0) for g in m.groups())
        try:
            return now - timedelta(days=d, hours=h, minutes=mi, seconds=s)
        except OverflowError:  # before year 1 (99999999d)
            raise RangeError(f"{option} {text!r}: reaches back before the year 1") from None
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise RangeError(
            f"{option} {text!r}: expected ISO-8601 (2026-11-24T08:00:00Z) or a relative time (2h, 30m, 1d, 90s)"
        ) from None
    return parsed if parsed.tzinfo else parsed.astimezone()


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    start: int
    end: int  # exclusive

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def partitions_of(consumer: Consumer, topic: str) -> list[int]:
    meta = consumer.list_topics(topic, timeout=METADATA_TIMEOUT).topics.get(topic)
    if meta is None or meta.error is not None:
        raise UnknownTopic(f"topic {topic!r} not found: {meta.error if meta else 'no metadata'}")
    return sorted(meta.partitions)


def _offsets_at(consumer: Consumer, topic: str, partitions: list[int], when: datetime) -> dict[int, int]:
    """First offset with a timestamp at or after `when` per partition (-1: none yet)."""
    ms = int(when.timestamp() * 1000)
    found = consumer.offsets_for_times([TopicPartition(topic, p, ms) for p in partitions], timeout=METADATA_TIMEOUT)
    return {tp.partition: tp.offset for tp in found}


def resolve_range(
    consumer: Consumer,
    topic: str,
    from_offsets: dict[int | None, int] | None = None,
    to_offsets: dict[int | None, int] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[PartitionRange]:
    from_offsets, to_offsets = from_offsets or {}, to_offsets or {}
    if from_offsets and since is not None:
        raise RangeError("give --from-offset or --since, not both")
    if to_offsets and until is not None:
        raise RangeError("give --to-offset or --until, not both")
    check_order(from_offsets, to_offsets, since, until)
    partitions = partitions_of(consumer, topic)
    for option, given in (("--from-offset", from_offsets), ("--to-offset", to_offsets)):
        unknown = sorted(p for p in given if p is not None and p not in partitions)
        if unknown:
            raise RangeError(
                f"{option}: topic {topic} has no partition {unknown[0]} (partitions: {', '.join(map(str, partitions))})"
            )
    named = {p for p in (*from_offsets, *to_offsets) if p is not None}
    if named:  # P:OFFSET names the partitions the range covers; the others are not touched
        partitions = [p for p in partitions if p in named]
    starts = _offsets_at(consumer, topic, partitions, since) if since is not None else {}
    ends = _offsets_at(consumer, topic, partitions, until) if until is not None else {}
    out = []
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=METADATA_TIMEOUT)
        start = from_offsets.get(p, from_offsets.get(None, low))
        if since is not None:
            start = starts[p] if starts[p] >= 0 else high
        end = to_offsets.get(p, to_offsets.get(None, high))
        if until is not None:
            end = ends[p] if ends[p] >= 0 else high
        out.append(PartitionRange(p, max(start, low), min(end, high)))
    return out
