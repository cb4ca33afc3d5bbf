"""`cdcflow replay`: re-feed a range of a pipeline topic, filtered, to the pipeline or another topic.

Into the pipeline, without the Faust app: a row change is matched here against the *current* rules
(streams/matcher.py, the worker's own code), and each invocation it yields is published straight
to its plugin's topic; an invocation (or a dead letter's, or a manual trigger request) is published
again as it was. Going through the app would not work: its de-duplication table holds each row's
last binlog position, so it drops every replayed change as already seen.

Replayed invocations have trigger kind `replay`, the original invocation and event ids, and a new
id derived from (replay id, original id): new, so the runners' done markers do not swallow them;
deterministic, so a replay sent twice is one run.

Exactly once per replay id, even across a kill -9: each batch's messages and the source offsets
reached are committed in one Kafka transaction (transactional id and consumer group
`cdcflow-replay-<replay id>`); a re-run resumes from the committed offsets, and the open
transaction of a killed run is aborted, so read-committed consumers (the runners; librdkafka's
default) never see its messages. The plan (topic, filters, target and the resolved range, whose end
is fixed when first resolved) is kept in Redis under the replay id, so a re-run covers exactly the
same messages. The replay id is `--replay-id` or derived from the topic, target, filters and the
resolved start offsets: re-running the same command resumes the same replay.

`cdcflow replay` (streams/ops_cli.py) only parses its options into a ReplayRequest, calls
plan_replay (topic and range resolution, the plan in Redis) and execute_replay, and prints what
they return.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from plugins.store import RunStore
from schemas.config import Config
from schemas.errors import ConfigError
from schemas.invocation import Invocation, ReplayTrigger, invocation_id_for
from schemas.runtime.kafka_topics import INVOKE_MAX_MESSAGE_BYTES, ensure_topics
from schemas.settings import Settings
from streams.event_filter import EventFilter
from streams.events import EventFacts, facts
from streams.matcher import Matcher
from streams.replay_range import (
    PartitionRange,
    check_order,
    existing_topics,
    metadata_consumer,
    parse_offsets,
    parse_time,
    resolve_range,
    resolve_topic,
)
from streams.row_checks import inexact_number, parse_change
from streams.trigger_checks import plugin_name_usable
from streams.validation import validated_matcher

log = logging.getLogger("cdcflow.replay")

Target = Literal["pipeline", "topic", "print"]
REPLAY_ID_HEADER = "cdcflow-replay-id"
REPLAY_SOURCE_HEADER = "cdcflow-replay-source"
TRANSACTION_TIMEOUT = 60.0


class Unreplayable(ValueError):
    """A message the replay skips (counted and logged); the message says why."""


# What a message's content can raise on its way through the transformer (ValidationError and
# orjson's errors included): the message is skipped. Anything else (Redis, Kafka) stops the replay.
DATA_ERRORS = (KeyError, TypeError, ValueError, AttributeError, RecursionError)


class ReplayError(RuntimeError):
    """The replay cannot start or stopped; the message says why and how to go on."""


@dataclass
class ReplaySpec:
    topic: str
    target: Target
    filter: EventFilter
    to_topic: str | None = None
    rate: float | None = None  # source messages per second; None = as fast as possible
    batch_size: int = 5000
    dry_run: bool = False  # count what the target would get, send nothing

    @property
    def sending(self) -> bool:
        return self.target in ("pipeline", "topic") and not self.dry_run

    def identity(self) -> dict[str, Any]:
        """What must be the same for a re-run to continue a replay (the range comes on top)."""
        return {"topic": self.topic, "target": self.target, "to_topic": self.to_topic, "filter": self.filter.describe()}


def args_fingerprint(spec: ReplaySpec, range_args: dict[str, Any]) -> str:
    """The command as typed (relative times unresolved): what `replay-args` remembers."""
    payload = orjson.dumps({**spec.identity(), "range": range_args}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(payload).hexdigest()[:24]


def derive_replay_id(spec: ReplaySpec, ranges: list[PartitionRange]) -> str:
    payload = orjson.dumps(
        {**spec.identity(), "start": {str(r.partition): r.start for r in ranges}}, option=orjson.OPT_SORT_KEYS
    )
    return "replay-" + hashlib.sha256(payload).hexdigest()[:16]


@dataclass
class Output:
    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone, copied as one
    headers: list[tuple[str, str | bytes | None]] = field(default_factory=list)


@dataclass
class ReplayCounts:
    scanned: int = 0  # source messages read in the range
    selected: int = 0  # passed the filters
    sent: int = 0  # messages produced (invocations or copies)
    skipped: dict[str, int] = field(default_factory=Counter)  # reason -> count
    by_topic: dict[str, int] = field(default_factory=Counter)
    already_done: int = 0  # source messages a previous run of this replay id covered
    total: int = 0  # source messages in the range


class PlanStore:
    """The replay's fixed plan in Redis: `<prefix>:replay:<id>` -> JSON (identity, ranges, times).

    Also `<prefix>:replay-args:<fingerprint of the command's arguments>` -> the id of the unfinished
    replay they started: `--since 2h` resolves to a later start a minute later (so to another derived
    id), yet re-running the interrupted command must continue the same replay. Both expire with the
    runners' done markers (runners.result_ttl_seconds), the horizon of their de-duplication anyway.
    """

    def __init__(self, settings: Settings):
        self.prefix = settings.redis.key_prefix
        self.ttl = settings.runners.result_ttl_seconds
        self.client = redis.Redis.from_url(
            settings.redis.url.get_secret_value(), socket_timeout=10, socket_connect_timeout=5
        )

    def key(self, replay_id: str) -> str:
        return f"{self.prefix}:replay:{replay_id}"

    def args_key(self, fingerprint: str) -> str:
        return f"{self.prefix}:replay-args:{fingerprint}"

    def unfinished(self, fingerprint: str) -> str | None:
        raw = self.client.get(self.args_key(fingerprint))  # bytes: the client does not decode responses
        return (raw.decode() if isinstance(raw, bytes) else raw) or None

    def load_or_create(
        self, replay_id: str, spec: ReplaySpec, ranges: list[PartitionRange], fingerprint: str | None = None
    ) -> list[PartitionRange]:
        """The plan's ranges: the stored ones when this replay id ran before (its end stays fixed)."""
        plan = {
            "identity": spec.identity(),
            "ranges": [[r.partition, r.start, r.end] for r in ranges],
            "created_at": datetime.now(UTC).isoformat(),
        }
        self.client.set(self.key(replay_id), orjson.dumps(plan), nx=True, ex=self.ttl)
        if fingerprint is not None:
            self.client.set(self.args_key(fingerprint), replay_id, ex=self.ttl)
        stored = orjson.loads(self.client.get(self.key(replay_id)) or b"{}")
        if stored.get("identity") != orjson.loads(orjson.dumps(spec.identity())):
            raise ReplayError(
                f"replay id {replay_id} was used for a different replay "
                f"({orjson.dumps(stored.get('identity')).decode()}); choose another --replay-id"
            )
        return [PartitionRange(p, s, e) for p, s, e in stored["ranges"]]

    def finish(self, replay_id: str, fingerprint: str | None = None) -> None:
        if fingerprint is not None and self.unfinished(fingerprint) == replay_id:
            self.client.delete(self.args_key(fingerprint))
        raw = self.client.get(self.key(replay_id))
        if raw is None:
            return
        plan = orjson.loads(raw)
        plan.setdefault("finished_at", datetime.now(UTC).isoformat())
        self.client.set(self.key(replay_id), orjson.dumps(plan), keepttl=True)

    def close(self) -> None:
        self.client.close()


class Transformer:
    """A selected source message -> what the target gets (or why nothing)."""

    def __init__(self, settings: Settings, spec: ReplaySpec, replay_id: str, matcher: Matcher | None):
        self.settings = settings
        self.spec = spec
        self.replay_id = replay_id
        self.matcher = matcher

    def select(self, msg: Message) -> tuple[EventFacts, list[dict[str, Any]] | None] | None:
        """None when filtered out; else the facts and, for the pipeline, the invocations to publish."""
        f = facts(msg.value())
        flt = self.spec.filter
        rematch = f.kind == "row_change" and (self.spec.target == "pipeline" or flt.plugins or flt.rules)
        if not flt.accepts(f, check_plugin_rule=not rematch):
            return None
        if not rematch:
            return f, self._invocations(f) if self.spec.target == "pipeline" else None
        assert self.matcher is not None
        parse_change(msg.value() or b"")  # the loop's own checks: BadRowChange names what is wrong
        planned = [
            p.invocation
            for p in self.matcher.match(f.value)
            if (not flt.plugins or p.plugin in flt.plugins)
            and (not flt.rules or p.invocation["trigger"]["rule"] in flt.rules)
        ]
        if (flt.plugins or flt.rules) and not planned:
            return None
        if self.spec.target != "pipeline":
            return f, None
        return f, [self._replayed(inv, inv["invocation_id"], f.event_id, inv["trigger"]) for inv in planned]

    def _invocations(self, f: EventFacts) -> list[dict[str, Any]] | None:
        v = f.value
        if f.kind == "invocation":
            return [self._replayed(v, v["invocation_id"], f.event_id, v.get("trigger") or {})]
        if f.kind == "dead_letter":
            inv = v["invocation"]
            return [self._replayed(inv, v["dlq_id"], f.event_id, inv.get("trigger") or {})]
        if f.kind == "trigger":
            original = invocation_id_for("manual", str(v.get("request_id")), str(v.get("plugin")))
            return [self._replayed(v, original, None, {})]
        return None  # results carry no parameters; unknown messages are not invocations

    def _replayed(
        self, inv: dict[str, Any], original_id: str, event_id: str | None, trigger: dict[str, Any]
    ) -> dict[str, Any]:
        if not plugin_name_usable(self.settings, inv.get("plugin")):
            raise Unreplayable(f"no plugin can be named {str(inv.get('plugin'))[:100]!r}")
        new = Invocation(
            invocation_id=invocation_id_for("replay", self.replay_id, original_id),
            plugin=inv["plugin"],
            params=inv.get("params") or {},
            priority=inv.get("priority", "normal"),
            attempt=1,
            created_at=datetime.now(UTC),
            trigger=ReplayTrigger(
                source_topic=self.spec.topic,
                original_invocation_id=original_id,
                original_event_id=event_id,
                replay_id=self.replay_id,
                rule=trigger.get("rule"),
                table=trigger.get("table"),
                op=trigger.get("op"),
            ),
        )
        return new.model_dump(mode="json")

    def outputs(self, msg: Message, invocations: list[dict[str, Any]] | None) -> list[Output]:
        """What the target gets; Unreplayable when a message is larger than the target takes (the
        producer's message.max.bytes; the plugins' topics' limit)."""
        headers: list[tuple[str, str | bytes | None]] = [
            (REPLAY_ID_HEADER, self.replay_id.encode()),
            (REPLAY_SOURCE_HEADER, f"{msg.topic()}/{msg.partition()}/{msg.offset()}".encode()),
        ]
        if self.spec.target == "topic":
            assert self.spec.to_topic is not None
            out = [Output(self.spec.to_topic, msg.key(), msg.value(), [*(msg.headers() or []), *headers])]
        else:
            topics = self.settings.topics
            out = [
                Output(
                    topics.invoke(inv["plugin"], inv["priority"]),
                    inv["invocation_id"].encode(),
                    orjson.dumps(inv),
                    headers,
                )
                for inv in invocations or []
            ]
        for o in out:
            size = len(o.value or b"") + len(o.key or b"")
            if size > INVOKE_MAX_MESSAGE_BYTES:
                raise Unreplayable(f"too large for {o.topic} ({size} bytes, {INVOKE_MAX_MESSAGE_BYTES} at most)")
        return out


Progress = Callable[[ReplayCounts], None]
OnPrint = Callable[[Message, EventFacts], None]


def run_replay(
    settings: Settings,
    spec: ReplaySpec,
    ranges: list[PartitionRange],
    replay_id: str,
    matcher: Matcher | None,
    progress: Progress | None = None,
    on_print: OnPrint | None = None,
) -> ReplayCounts:
    """Replay `ranges` of `spec.topic`. For pipeline/topic targets, resumes from and commits to the
    replay's consumer group inside transactions; print and dry-run leave no trace anywhere."""
    counts = ReplayCounts(total=sum(r.size for r in ranges))
    group = f"cdcflow-replay-{replay_id}" if spec.sending else f"cdcflow-replay-look-{time.time_ns()}"
    consumer = _replay_consumer(settings, group)
    producer: Producer | None = None
    try:
        positions = _Positions(spec.topic, ranges)
        if spec.sending:
            positions.resume(consumer, counts)
        if not positions.remaining:
            return counts
        if spec.sending:
            producer = _transactional_producer(settings, spec, group)
        transformer = Transformer(settings, spec, replay_id, matcher)
        known_topics: set[str] = set()

        def handle(msg: Message) -> None:
            _handle(msg, transformer, spec, counts, producer, known_topics, settings, on_print)

        _ReplayLoop(consumer, producer, spec, positions, counts, handle).run(progress)
        return counts
    except KeyboardInterrupt:
        _abort(producer, 10)  # a re-run would abort it too; this just frees it sooner
        raise
    except KafkaException as e:
        _abort(producer, 30)
        raise ReplayError(
            f"Kafka refused the replay: {e.args[0]}; nothing of the unfinished batch is visible. "
            f"Run the same command again (--replay-id {replay_id}) to continue"
        ) from None
    finally:
        consumer.close()


def _replay_consumer(settings: Settings, group: str) -> Consumer:
    return Consumer(
        settings.kafka_config(
            **{
                "group.id": group,
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
                "auto.offset.reset": "earliest",
            }
        )
    )


def _transactional_producer(settings: Settings, spec: ReplaySpec, group: str) -> Producer:
    producer = Producer(
        settings.kafka_config(
            **{
                "transactional.id": group,
                "transaction.timeout.ms": int(TRANSACTION_TIMEOUT * 1000),
                "linger.ms": 5,
            }
        )
    )
    # Fences a killed earlier run of this replay id and aborts its open transaction.
    producer.init_transactions(30)
    if spec.target == "topic":
        assert spec.to_topic is not None
        ensure_topics(settings, [spec.to_topic])
    return producer


def _abort(producer: Producer | None, timeout: float) -> None:
    if producer is not None:
        try:
            producer.abort_transaction(timeout)
        except KafkaException:
            pass


class _Positions:
    """Where each partition of the range is: the next offset to read, the end, which are not done."""

    def __init__(self, topic: str, ranges: list[PartitionRange]):
        self.topic = topic
        self.next = {r.partition: r.start for r in ranges}
        self.end = {r.partition: r.end for r in ranges}
        self.remaining = {p for p in self.next if self.next[p] < self.end[p]}

    def resume(self, consumer: Consumer, counts: ReplayCounts) -> None:
        """From the offsets an earlier run of the replay committed."""
        committed = consumer.committed([TopicPartition(self.topic, p) for p in self.next], timeout=30)
        for tp in committed:
            if tp.offset >= 0 and tp.offset > self.next[tp.partition]:
                counts.already_done += min(tp.offset, self.end[tp.partition]) - self.next[tp.partition]
                self.next[tp.partition] = tp.offset
        self.remaining = {p for p in self.next if self.next[p] < self.end[p]}

    def offsets(self, partitions: set[int]) -> list[TopicPartition]:
        return [TopicPartition(self.topic, p, min(self.next[p], self.end[p])) for p in sorted(partitions)]


class _ReplayLoop:
    """Reads the range in batches of at most `batch_size` messages and 1 s, one transaction each when
    sending (its messages and the source offsets reached), paced to `rate` if given."""

    def __init__(
        self,
        consumer: Consumer,
        producer: Producer | None,
        spec: ReplaySpec,
        positions: _Positions,
        counts: ReplayCounts,
        handle: Callable[[Message], None],
    ):
        self.consumer = consumer
        self.producer = producer
        self.spec = spec
        self.positions = positions
        self.counts = counts
        self.handle = handle
        self.started = time.monotonic()
        self.scanned_at_start = counts.scanned

    def run(self, progress: Progress | None) -> None:
        positions = self.positions
        self.consumer.assign(
            [TopicPartition(self.spec.topic, p, positions.next[p]) for p in sorted(positions.remaining)]
        )
        self.started, self.scanned_at_start = time.monotonic(), self.counts.scanned
        while positions.remaining:
            if self.producer is not None:
                self.producer.begin_transaction()
            touched = self._read_batch()
            if self.producer is not None:
                offsets = positions.offsets(touched)
                if offsets:
                    self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
                self.producer.commit_transaction(TRANSACTION_TIMEOUT)
            if progress is not None:
                progress(self.counts)

    def _read_batch(self) -> set[int]:
        """The partitions it moved on."""
        spec, remaining = self.spec, self.positions.remaining
        batch, batch_deadline = 0, time.monotonic() + 1.0
        touched: set[int] = set()
        while remaining and batch < spec.batch_size and time.monotonic() < batch_deadline:
            want = min(500, spec.batch_size - batch, max(1, int(spec.rate)) if spec.rate else 500)
            for msg in self.consumer.consume(num_messages=want, timeout=0.2):
                if not self._advance(msg, touched):
                    continue
                self.counts.scanned += 1
                batch += 1
                self.handle(msg)
                if spec.rate:
                    ahead = (self.counts.scanned - self.scanned_at_start) / spec.rate - (
                        time.monotonic() - self.started
                    )
                    if ahead > 0:
                        time.sleep(ahead)
        return touched

    def _advance(self, msg: Message, touched: set[int]) -> bool:
        """Move the partition's position past `msg`; True when `msg` is in the range (to be handled)."""
        positions, p, offset, error = self.positions, msg.partition(), msg.offset(), msg.error()
        if error is not None:
            self._on_error(error, p, touched)
            return False
        if p is None or offset is None or p not in positions.remaining:
            return False
        end = positions.end[p]
        if offset >= end:
            positions.next[p] = end
            self._done(p, touched)
            return False
        positions.next[p] = offset + 1
        touched.add(p)
        if positions.next[p] >= end:
            self._done(p, touched)
        return True

    def _on_error(self, error: KafkaError, p: int | None, touched: set[int]) -> None:
        positions = self.positions
        if error.code() == KafkaError._PARTITION_EOF and p is not None and p in positions.remaining:
            # Read-committed EOF is at the last stable offset. At or past `end` (transaction markers
            # can fill the last offsets) the partition is done; below it, another producer's
            # transaction is still open there: wait for it to end.
            position = self.consumer.position([TopicPartition(self.spec.topic, p)])[0].offset
            if position >= positions.end[p]:
                self._done(p, touched)
                positions.next[p] = max(positions.next[p], positions.end[p])
        elif error.fatal():
            raise KafkaException(error)

    def _done(self, partition: int, touched: set[int]) -> None:
        self.positions.remaining.discard(partition)
        touched.add(partition)
        self.consumer.pause([TopicPartition(self.spec.topic, partition)])


def _handle(
    msg: Message,
    transformer: Transformer,
    spec: ReplaySpec,
    counts: ReplayCounts,
    producer: Producer | None,
    known_topics: set[str],
    settings: Settings,
    on_print: Callable[[Message, EventFacts], None] | None,
) -> None:
    try:
        handled = _transform(msg, transformer, spec, counts, on_print)
    except DATA_ERRORS as e:
        # A message that looks like an event but is not one the target can take (a field missing or of
        # the wrong type, a number or nesting JSON would not carry, too large): counted and named in the
        # summary, logged naming where it is, and the replay goes on.
        _skip(msg, counts, f"malformed ({type(e).__name__}: {' '.join(str(e).split())})"[:160])
        return
    if handled is None:
        return
    outputs = handled
    for out in outputs:
        counts.by_topic[out.topic] += 1
    if spec.dry_run or producer is None:
        return
    new_topics = {o.topic for o in outputs} - known_topics
    if new_topics:
        ensure_topics(settings, new_topics)
        known_topics.update(new_topics)
    for out in outputs:
        while True:
            try:
                producer.produce(out.topic, key=out.key, value=out.value, headers=out.headers)
                break
            except BufferError:
                producer.poll(0.1)
        counts.sent += 1
    producer.poll(0)


def _transform(
    msg: Message,
    transformer: Transformer,
    spec: ReplaySpec,
    counts: ReplayCounts,
    on_print: Callable[[Message, EventFacts], None] | None,
) -> list[Output] | None:
    """The outputs of a selected message (None: filtered out, printed, or skipped and counted)."""
    selected = transformer.select(msg)
    if selected is None:
        return None
    f, invocations = selected
    if spec.target == "pipeline" and invocations is None:
        counts.selected += 1
        _skip(msg, counts, "cannot be re-run (results carry no parameters; unknown messages)")
        return None
    if spec.target == "print":
        counts.selected += 1
        if on_print is not None:
            on_print(msg, f)
        return None
    if spec.target == "pipeline" and (inexact := inexact_number(msg.value() or b"")) is not None:
        raise Unreplayable(inexact)
    outputs = transformer.outputs(msg, invocations)
    counts.selected += 1
    return outputs


def _skip(msg: Message, counts: ReplayCounts, reason: str) -> None:
    counts.skipped[reason] += 1
    log.warning("replay: skipping %s[%s]@%s: %s", msg.topic(), msg.partition(), msg.offset(), reason)


def event_filter(settings: Settings, **options: Any) -> EventFilter:
    """The filter of a replay or tail (EventFilter.build's options; FilterError names a bad one)."""
    built = EventFilter.build(**options)
    if built.statuses:
        # a status filter on invocations: the status of the run recorded for each (pending when none yet)
        store = RunStore(settings)
        built.status_lookup = lambda iid: r.status if (r := store.get(iid)) is not None else None
    return built


class ReplayUsageError(ReplayError):
    """The request combines what cannot go together (the command's usage error)."""


@dataclass
class ReplayRequest:
    """A replay as asked for: nothing resolved yet."""

    source: str  # a topic, results, dlq, triggers, invoke:PLUGIN or a [DB.]TABLE
    target: Target
    filter: EventFilter
    to_topic: str | None = None
    from_offsets: tuple[str, ...] = ()  # [P:]OFFSET each
    to_offsets: tuple[str, ...] = ()
    since: str | None = None  # ISO-8601 or relative (2h)
    until: str | None = None
    rate: float | None = None
    batch_size: int = 5000
    dry_run: bool = False
    replay_id: str | None = None  # None: the unfinished replay of the same request, else derived

    def range_args(self) -> dict[str, Any]:
        """The range options as typed (relative times unresolved), for the args fingerprint."""
        return {
            "from": sorted(self.from_offsets),
            "to": sorted(self.to_offsets),
            "since": self.since,
            "until": self.until,
        }


@dataclass
class ReplayPlan:
    replay_id: str
    spec: ReplaySpec
    ranges: list[PartitionRange]  # when the replay id ran before: the range fixed then
    matcher: Matcher | None  # the current rules, when row changes are re-matched
    fingerprint: str | None = None  # of the request's arguments, when no replay id was given
    store: PlanStore | None = None  # the plan in Redis, when the replay sends
    notes: list[str] = field(default_factory=list)  # for the operator: a continued replay, an older range

    @property
    def total(self) -> int:
        return sum(r.size for r in self.ranges)


def plan_replay(config: Config, request: ReplayRequest) -> ReplayPlan:
    """Resolve the source topic and range, load the rules when needed and, when the replay sends,
    fix its plan in Redis (continuing an unfinished replay of the same request).

    Raises RangeError (a bad topic or range option), ReplayUsageError, ReplayError and
    KafkaUnreachable; the messages name the option or the way on."""
    settings = config.settings
    topic, ranges = _resolve_range(settings, request)
    spec = ReplaySpec(
        topic=topic,
        target=request.target,
        filter=request.filter,
        to_topic=request.to_topic,
        rate=request.rate,
        batch_size=request.batch_size,
        dry_run=request.dry_run,
    )
    fingerprint = None if request.replay_id else args_fingerprint(spec, request.range_args())
    plan = ReplayPlan(request.replay_id or "", spec, ranges, _current_rules(config, request, topic), fingerprint)
    if not spec.sending:
        plan.replay_id = plan.replay_id or derive_replay_id(spec, ranges)
        return plan
    plan.store = PlanStore(settings)
    try:
        _fix_plan(plan, plan.store)
    except BaseException:
        plan.store.close()
        raise
    return plan


def execute_replay(
    settings: Settings, plan: ReplayPlan, progress: Progress | None = None, on_print: OnPrint | None = None
) -> ReplayCounts:
    """Run the plan; once the whole range is replayed, its plan in Redis is marked finished."""
    try:
        counts = run_replay(settings, plan.spec, plan.ranges, plan.replay_id, plan.matcher, progress, on_print)
        if plan.store is not None:
            plan.store.finish(plan.replay_id, plan.fingerprint)
        return counts
    finally:
        if plan.store is not None:
            plan.store.close()


def _resolve_range(settings: Settings, request: ReplayRequest) -> tuple[str, list[PartitionRange]]:
    now = datetime.now(UTC)  # one "now" for both: `--since 1h --until 2h` is reversed, whatever the clock did
    # The options first, so a bad one is named even when the topic does not exist or Kafka is away.
    from_offsets = parse_offsets(request.from_offsets, "--from-offset")
    to_offsets = parse_offsets(request.to_offsets, "--to-offset")
    since = parse_time(request.since, "--since", now) if request.since else None
    until = parse_time(request.until, "--until", now) if request.until else None
    check_order(from_offsets, to_offsets, since, until)
    consumer = metadata_consumer(settings)
    try:
        topic = resolve_topic(settings, request.source, existing_topics(consumer, settings))
        if request.target == "pipeline" and topic == settings.topics.results:
            raise ReplayUsageError(
                f"{topic}: results carry no parameters, so they cannot be re-run; replay "
                f"{settings.topics.dlq} (failed runs) or invoke:PLUGIN, or use --to-topic/--print"
            )
        if request.to_topic is not None and request.to_topic == topic:
            raise ReplayUsageError("--to-topic must differ from the source topic")
        ranges = resolve_range(consumer, topic, from_offsets, to_offsets, since, until)
    finally:
        consumer.close()
    return topic, ranges


def _current_rules(config: Config, request: ReplayRequest, topic: str) -> Matcher | None:
    """The matcher of the current rules, when row changes are re-matched (into the pipeline, or to
    filter them by plugin or rule)."""
    if request.target != "pipeline" and not request.filter.plugins and not request.filter.rules:
        return None
    try:
        return validated_matcher(config)
    except ConfigError as e:
        if config.settings.topics.parse_row_changes(topic) is not None:
            raise ReplayError(f"row changes are re-matched against the current rules, which are bad:\n{e}") from e
        return Matcher()  # no row changes expected here: an empty matcher replays none


def _fix_plan(plan: ReplayPlan, store: PlanStore) -> None:
    """The replay id (the unfinished replay of the same arguments, or derived) and its range in Redis."""
    if plan.fingerprint is not None:
        try:
            unfinished = store.unfinished(plan.fingerprint)
        except Exception as e:
            raise ReplayError(f"cannot read replay plans from Redis: {e}") from e
        if unfinished:
            plan.replay_id = unfinished
            plan.notes.append(f"continuing the unfinished replay {unfinished} of this same command")
    plan.replay_id = plan.replay_id or derive_replay_id(plan.spec, plan.ranges)
    try:
        ranges = store.load_or_create(plan.replay_id, plan.spec, plan.ranges, plan.fingerprint)
    except ReplayError:
        raise
    except Exception as e:  # redis errors: the plan is what makes a re-run safe, so do not start without it
        raise ReplayError(f"cannot store the replay plan in Redis: {e}") from e
    if ranges != plan.ranges:
        plan.notes.append(f"replay {plan.replay_id} ran before: its range, fixed then, is used")
        plan.ranges = ranges
