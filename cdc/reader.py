"""The binlog reader: row changes from MySQL/MariaDB -> Kafka `cdc.<db>.<table>`, keyed by primary key.

Never loses a change: a position is checkpointed only at a transaction boundary and only once
Kafka acknowledged every row produced before it (idempotent producer, acks=all). After a crash
the reader resumes from the checkpoint; rows it re-sends carry the same event id as before.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from typing import Any

import orjson
import pymysql
from confluent_kafka import KafkaError, KafkaException, Producer
from pymysqlreplication import BinLogStreamReader, binlogstream
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.gtid import Gtid, GtidSet
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc import (
    libfixes,  # noqa: F401  (fixes the library's TIME2 decoding on import)
    tablemaps,  # noqa: F401  (table maps parsed once per distinct body, on import)
)
from cdc.checkpoint import CheckpointStore, Position
from cdc.debezium.produce import DebeziumRows
from cdc.errors import position_lost, unknown_gtid_domain
from cdc.filters import selection_for
from cdc.partitioning import ROW_CHANGE_PARTITIONER
from cdc.reader_ops import ReaderOps
from cdc.rowdecode import NoPlan, RowDecoder, supports
from cdc.schema_info import SchemaInfo
from cdc.snapshot import refuse_if_snapshot_unfinished
from cdc.source import connection_settings, detect_server
from cdc.status import StatusPublisher
from cdc.types import RowConverter, to_json_value
from schemas.rules import RulesConfig
from schemas.runtime.kafka_topics import ROW_CHANGE_MAX_MESSAGE_BYTES, ensure_topics
from schemas.settings import Settings

log = logging.getLogger(__name__)

# mysql-replication silently reconnects on 2013/2006 and then re-reads from the *initial*
# position, which would duplicate or skip rows. Emptying the list makes those errors reach us,
# and the reader reconnects itself from the last transaction boundary.
binlogstream.MYSQL_EXPECTED_ERROR_CODES[:] = []

ROW_EVENTS = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)
OP_BY_EVENT = {WriteRowsEvent: "c", UpdateRowsEvent: "u", DeleteRowsEvent: "d"}


@dataclass
class ReaderStats:
    rows_produced: int = 0
    rows_acked: int = 0
    transactions: int = 0
    last_event_ts_ms: int = 0
    last_error: str | None = None
    position: Position | None = None
    checkpoint: Position | None = None
    # wall clock of the last heartbeat: the server sends one only when it has nothing else to send
    caught_up_at_ms: int = 0
    last_event_seen_ms: int = 0  # wall clock when the last non-heartbeat event arrived

    def lag_ms(self, now_ms: int) -> int | None:
        """Milliseconds behind the source (binlog timestamps have 1 s resolution); 0 when caught up."""
        if self.caught_up_at_ms and self.caught_up_at_ms >= self.last_event_seen_ms:
            return 0
        if not self.last_event_ts_ms:
            return None
        return max(0, now_ms - self.last_event_ts_ms)


class KafkaDeliveryFailed(RuntimeError):
    """Kafka refused or timed out a row change: the reader re-reads from its last checkpoint."""


class DeliveryTracker:
    """Knows which produced messages Kafka acknowledged, to say which boundaries are safe to checkpoint."""

    def __init__(self) -> None:
        self.next_seq = 0
        self._pending: list[int] = []
        self._acked: set[int] = set()
        self.failure: KafkaError | None = None
        self.acked_count = 0

    def register(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        heapq.heappush(self._pending, seq)
        return seq

    def delivered(self, seq: int, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.failure = err
            return
        self._acked.add(seq)
        self.acked_count += 1

    def lowest_unacked(self) -> int:
        while self._pending and self._pending[0] in self._acked:
            self._acked.discard(heapq.heappop(self._pending))
        return self._pending[0] if self._pending else self.next_seq


class BinlogReader:
    def __init__(
        self,
        settings: Settings,
        rules: RulesConfig,
        stop_event: threading.Event | None = None,
        from_now: bool = False,
        producer_options: dict[str, Any] | None = None,
    ):
        self.settings = settings
        self.producer_options = producer_options or {}
        # Start at the current end of the binlog even if a checkpoint exists (an explicit, logged choice).
        self.from_now = from_now
        # rules' tables + cdc.include - cdc.exclude; a table created later that include matches gets its topic then
        self.tables = selection_for(rules.tables(), settings.cdc, on_new_table=self._create_topic)
        self.stop_event = stop_event or threading.Event()
        self.checkpoints = CheckpointStore(settings)
        self.stats = ReaderStats()
        self.tracker = DeliveryTracker()
        # (last seq produced inside the transaction, position after it)
        self._boundaries: deque[tuple[int, Position]] = deque()
        self._last_checkpoint_at = 0.0
        self._last_wait_log = 0.0
        self._resume_from: Position | None = None
        self._gtid_domains: dict[str, str] = {}
        self._mysql_gtids: GtidSet | None = None
        self._current_gtid: str | None = None
        self.is_mariadb = True
        self.schema_info: SchemaInfo | None = None
        self.status: StatusPublisher | None = None
        self.state = "starting"
        # table_id -> (the table map's column list it was built for, its row decoder)
        self._converters: dict[int, tuple[Any, RowDecoder | RowConverter]] = {}
        # (db, table, op) -> row changes produced; read by /metrics (cdc/reader_ops.py)
        self.rows_by_table_op: dict[tuple[str, str, str], int] = {}
        # cdc.format = debezium: the rows of each table map re-shaped as Debezium writes them
        self.debezium = (
            DebeziumRows(settings, self._column_facts, self._primary_key, self._point_columns)
            if settings.cdc.format == "debezium"
            else None
        )

    def _create_topic(self, db: str, table: str) -> None:
        """A table created later that cdc.include selects: its topic, on its first row event."""
        ensure_topics(self.settings, [self.settings.topics.row_changes(db, table)])

    # -- positions -----------------------------------------------------------------------
    def _boundary_position(self, file: str, pos: int) -> Position:
        gtid_set: str | None
        if self.is_mariadb:
            gtid_set = ",".join(self._gtid_domains[d] for d in sorted(self._gtid_domains))
        else:
            gtid_set = str(self._mysql_gtids) if self._mysql_gtids is not None else None
        return Position(file=file, pos=pos, gtid_set=gtid_set, server_id=None)

    def _note_gtid(self, event: Any) -> None:
        if isinstance(event, MariadbGtidEvent):
            self._current_gtid = event.gtid
            self._gtid_domains[str(event.domain_id)] = event.gtid
        elif isinstance(event, GtidEvent):
            self._current_gtid = event.gtid
            if self._mysql_gtids is not None:
                self._mysql_gtids.merge_gtid(Gtid(event.gtid))

    def _load_gtid_state(self, position: Position) -> None:
        self._gtid_domains = {}
        self._mysql_gtids = None
        if position.gtid_set:
            if self.is_mariadb:
                for gtid in position.gtid_set.split(","):
                    gtid = gtid.strip()
                    if gtid:
                        self._gtid_domains[gtid.split("-", 1)[0]] = gtid
            else:
                self._mysql_gtids = GtidSet(position.gtid_set)

    # -- stream ----------------------------------------------------------------------------
    def _open_stream(self, position: Position) -> BinLogStreamReader:
        kwargs: dict[str, Any] = {}
        if self.is_mariadb:
            kwargs["auto_position"] = position.gtid_set or ""
        elif position.gtid_set:
            kwargs["auto_position"] = position.gtid_set
        else:
            kwargs.update(log_file=position.file, log_pos=position.pos, resume_stream=True)
        return BinLogStreamReader(
            connection_settings=connection_settings(self.settings),
            server_id=self.settings.mysql.server_id,
            blocking=True,
            only_events=[
                *ROW_EVENTS,
                XidEvent,
                QueryEvent,
                MariadbGtidEvent,
                GtidEvent,
                RotateEvent,
                HeartbeatLogEvent,
            ],
            **self.tables.library_filters(),  # row events of other tables are skipped before decoding
            is_mariadb=self.is_mariadb,
            slave_heartbeat=1.0,
            enable_logging=False,
            **kwargs,
        )

    def _new_producer(self) -> Producer:
        return Producer(
            self.settings.kafka_config(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": self.settings.cdc.linger_ms,
                    "compression.type": "lz4",
                    # Bounded local queue: when Kafka is slower than the binlog, produce() raises
                    # BufferError and the reader waits (back-pressure) instead of buffering a whole
                    # transaction; a single row up to the row-change topics' limit still fits.
                    "queue.buffering.max.messages": 20_000,
                    "queue.buffering.max.kbytes": 2 * ROW_CHANGE_MAX_MESSAGE_BYTES // 1024,
                    "message.max.bytes": ROW_CHANGE_MAX_MESSAGE_BYTES,
                    **ROW_CHANGE_PARTITIONER,
                    **self.producer_options,
                }
            )
        )

    def run(self) -> None:
        current = self._prepare()
        position = self._start_position(current)
        self.stats.checkpoint = position
        self._resume_from = position
        log.info("watching %d table(s): %s", len(self.tables), ", ".join(f"{d}.{t}" for d, t in sorted(self.tables)))
        self.state = "running"
        ops = ReaderOps(self).start()  # /metrics, /healthz, /readyz, heartbeat, lag alerts
        try:
            self._stream_until_stopped()
        except Exception as e:
            if self.stats.last_error is None or not self.state.startswith("stopped"):
                self.stats.last_error = f"{type(e).__name__}: {e}"
                self.state = "crashed"
            raise
        finally:
            self._shut_down(ops)

    def _prepare(self) -> Position:
        """Topics, checkpoint store, source server, status and producer made ready; returns the binlog's end now."""
        self.tables.resolve(connection_settings(self.settings))
        topics = [self.settings.topics.row_changes(db, t) for db, t in sorted(self.tables)]
        ensure_topics(self.settings, topics)
        if self.debezium is not None and self.settings.cdc.debezium.heartbeat_interval_ms:
            heartbeat = self.settings.cdc.debezium.heartbeat_topic(self.settings.topics.cdc_prefix)
            ensure_topics(self.settings, [heartbeat], partitions=1)
        self.checkpoints.ensure()
        refuse_if_snapshot_unfinished(self.checkpoints)  # its rows must reach Kafka before our changes
        self.is_mariadb, current = detect_server(self.settings)
        self.schema_info = SchemaInfo(connection_settings(self.settings), self.is_mariadb)
        self.status = StatusPublisher(self.settings)
        self.producer = self._new_producer()
        return current

    def _start_position(self, current: Position) -> Position:
        """The checkpoint to resume from, or `current` (checkpointed at once) without one or with --from-now."""
        position = self.checkpoints.load()
        if position is not None and self.from_now:
            log.warning(
                "--from-now: DISCARDING checkpoint %s of reader %r and starting at the current end of "
                "the binlog, %s. Changes committed in between are NOT sent.",
                position.describe(),
                self.settings.cdc.name,
                current.describe(),
            )
            position = None
        if position is None:
            # Checkpoint the starting point at once: a reader that crashes before its first
            # transaction must resume here, not at a later "now" that would skip rows.
            self.checkpoints.save(self.producer, current)
            if self.producer.flush(30) > 0:
                raise RuntimeError("Kafka did not acknowledge the initial checkpoint within 30s")
            log.info(
                "no checkpoint for reader %r: starting at the current end of the binlog, %s",
                self.settings.cdc.name,
                current.describe(),
            )
            return current
        log.info("resuming reader %r from checkpoint %s", self.settings.cdc.name, position.describe())
        lost = unknown_gtid_domain(connection_settings(self.settings), position) if self.is_mariadb else None
        if lost is not None:  # MariaDB would accept it and silently re-send or skip: stop, say why
            self.stats.last_error, self.state = str(lost), "stopped: position lost"
            self.publish_status()
            raise lost
        return position

    def _stream_until_stopped(self) -> None:
        """Stream, and after a source outage or a Kafka failure reconnect from the last safe boundary."""
        backoff = 0.5
        while not self.stop_event.is_set():
            opened = time.monotonic()
            try:
                self._stream_from(self.resume_from)
                backoff = 0.5
                continue
            except (pymysql.err.OperationalError, pymysql.err.InterfaceError, ConnectionError, OSError) as e:
                what = self._source_failure(e)
            except KafkaDeliveryFailed as e:
                # Rows after the last acknowledged checkpoint may be lost in the old producer:
                # drop it and re-read the binlog from that checkpoint (same event ids).
                what = f"Kafka did not acknowledge a row change ({e})"
                self._reset_producer()
            if time.monotonic() - opened > 60:
                backoff = 0.5  # it worked for a while: this is a new outage, not the same one
            self.stats.last_error = what
            self.state = "waiting"
            self.publish_status()
            log.warning("%s; reconnecting from %s in %.1fs", what, self.resume_from.describe(), backoff)
            self.stop_event.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    @property
    def resume_from(self) -> Position:
        """Where streaming (re)starts: the last transaction boundary read, or after a Kafka failure the
        last checkpoint Kafka acknowledged."""
        if self._resume_from is None:
            raise RuntimeError("the reader has no position yet: run() sets it before streaming")
        return self._resume_from

    def _source_failure(self, error: BaseException) -> str:
        """What a lost connection to the source means: raises PositionLost if the server cannot serve
        the position to resume from (retrying would spin forever), else says what to log before retrying."""
        fatal = position_lost(error, self.resume_from)
        if fatal is not None:
            self.stats.last_error = str(fatal)
            self.state = "stopped: position lost"
            log.error("%s", fatal)
            raise fatal from error
        mysql = self.settings.mysql
        return f"source {mysql.host}:{mysql.port} unavailable ({type(error).__name__}: {error})"

    def _shut_down(self, ops: ReaderOps) -> None:
        """Flush, checkpoint what Kafka acknowledged, publish the final state and close everything."""
        self.producer.flush(30)
        self._advance_checkpoint(force=True)
        self.producer.flush(10)
        if self.schema_info is not None:
            self.schema_info.close()
        if self.state == "running" or self.state == "waiting":
            self.state = "stopped"
        self.publish_status()
        if self.status is not None:
            self.status.close()
        ops.stop()

    def publish_status(self) -> None:
        if self.status is None:
            return
        stats = self.stats
        now_ms = int(time.time() * 1000)
        self.status.publish(
            {
                "name": self.settings.cdc.name,
                "state": self.state,
                "position": f"{stats.position.file}:{stats.position.pos}" if stats.position else None,
                "gtid_set": stats.position.gtid_set if stats.position else None,
                "checkpoint": stats.checkpoint.describe() if stats.checkpoint else None,
                "lag_ms": stats.lag_ms(now_ms),
                "rows_per_s": round(self.status.meter.update(stats.rows_acked), 1),
                "rows_acked": stats.rows_acked,
                "rows_produced": stats.rows_produced,
                "transactions": stats.transactions,
                "last_error": stats.last_error,
            }
        )

    def _reset_producer(self) -> None:
        old = self.producer
        old.purge()  # whatever it still holds will be re-produced from the checkpoint
        old.flush(1)
        self.tracker = DeliveryTracker()
        self._boundaries.clear()
        self.producer = self._new_producer()
        self._resume_from = self.stats.checkpoint  # the newest position whose rows Kafka acknowledged

    def _stream_from(self, position: Position) -> None:
        """Stream until stopped or the connection fails; self._resume_from follows each transaction boundary."""
        self._load_gtid_state(position)
        stream = self._open_stream(position)
        tables = self.tables
        topics = self.settings.topics
        tracker = self.tracker
        producer = self.producer
        try:
            for event in stream:
                if isinstance(event, ROW_EVENTS):
                    if (event.schema, event.table) in tables:
                        self._produce_rows(event, stream.log_file, topics.row_changes(event.schema, event.table))
                elif isinstance(event, XidEvent) or (
                    isinstance(event, QueryEvent) and event.query.strip().upper() != "BEGIN"
                ):
                    if isinstance(event, QueryEvent):
                        self._forget_tables()
                    boundary = self._boundary_position(stream.log_file, event.packet.log_pos)
                    self._boundaries.append((tracker.next_seq - 1, boundary))
                    # A reconnect resumes here: rows of a half-read transaction are re-read whole.
                    self._resume_from = boundary
                    self.stats.transactions += 1
                    self.stats.position = boundary
                elif isinstance(event, (MariadbGtidEvent, GtidEvent)):
                    self._note_gtid(event)
                if isinstance(event, HeartbeatLogEvent):
                    self.stats.caught_up_at_ms = int(time.time() * 1000)
                elif event.timestamp:
                    self.stats.last_event_ts_ms = event.timestamp * 1000
                    self.stats.last_event_seen_ms = int(time.time() * 1000)
                if self.debezium is not None:
                    self.debezium.heartbeat(producer)
                producer.poll(0)
                if tracker.failure is not None:
                    raise KafkaDeliveryFailed(str(tracker.failure))
                if time.monotonic() - self._last_checkpoint_at >= self.settings.cdc.checkpoint_interval_ms / 1000:
                    self._advance_checkpoint()
                    if self.status is not None and self.status.due():
                        self.publish_status()
                if self.stop_event.is_set():
                    break
        finally:
            stream.close()

    def _column_facts(self, db: str, table: str) -> dict[str, tuple[bool, str | None]]:
        return self.schema_info.column_facts(db, table) if self.schema_info is not None else {}

    def _primary_key(self, db: str, table: str) -> tuple[str, ...]:
        return self.schema_info.primary_key(db, table) if self.schema_info is not None else ()

    def _point_columns(self, db: str, table: str) -> frozenset[str]:
        return self.schema_info.point_columns(db, table) if self.schema_info is not None else frozenset()

    def _forget_tables(self) -> None:
        """After DDL: column definitions may have changed; the next table map rebuilds converters,
        and what information_schema told us must be re-read."""
        self._converters.clear()
        if self.debezium is not None:
            self.debezium.forget_tables()
        if self.schema_info is not None:
            self.schema_info.invalidate()

    def _produce_rows(self, event: Any, file: str, topic: str) -> None:
        op = OP_BY_EVENT[type(event)]
        if self.debezium is not None:
            produced = self.debezium.produce(event, op, file, topic, self._decoder(event), self._produce_one)
            self._count_rows(event, op, produced)
            return
        pk = event.primary_key
        pk_cols = (pk,) if isinstance(pk, str) and pk else tuple(pk or ())
        server_id = event.packet.server_id
        pos = event.packet.log_pos
        event_ts = event.timestamp * 1000
        source_base = {
            "connector": "mariadb" if self.is_mariadb else "mysql",
            "name": self.settings.cdc.name,
            "server_id": server_id,
            "db": event.schema,
            "table": event.table,
            "file": file,
            "pos": pos,
            "gtid": self._current_gtid,
            "ts_ms": event_ts,
            "snapshot": False,
        }
        now_ms = int(time.time() * 1000)
        # Hot path (one pass per row): locals instead of attribute look-ups, rows decoded lazily
        # straight into JSON values (cdc/rowdecode.py), so no transaction is ever held whole.
        tracker = self.tracker
        register, delivered = tracker.register, tracker.delivered
        produce = self.producer.produce
        dumps = orjson.dumps
        id_prefix = f"{server_id}:{file}:{pos}:"
        index = -1
        for index, (before, after) in enumerate(self._decoder(event).rows(event)):
            image = after if after is not None else before
            key = dumps({c: image.get(c) for c in pk_cols}) if pk_cols and image else None
            value = dumps(
                {
                    "before": before,
                    "after": after,
                    "op": op,
                    "ts_ms": now_ms,
                    "source": {**source_base, "row": index},
                    "event_id": id_prefix + str(index),
                }
            )
            on_delivery = partial(delivered, register())
            try:
                produce(topic, value=value, key=key, on_delivery=on_delivery)
            except BufferError:
                self._produce_when_room(topic, value, key, on_delivery)
            except KafkaException as e:  # e.g. larger than message.max.bytes: stop here, checkpoint before it
                raise RuntimeError(
                    f"row {index} of {event.schema}.{event.table} at {file}:{pos} ({len(value)} bytes) could not be "
                    f"produced to {topic}: {e.args[0].str()}; row-change messages may be up to "
                    f"{ROW_CHANGE_MAX_MESSAGE_BYTES} bytes (schemas/runtime/kafka_topics.py)"
                ) from e
        self._count_rows(event, op, index + 1)

    def _count_rows(self, event: Any, op: str, rows: int) -> None:
        counted = (event.schema, event.table, op)
        self.rows_by_table_op[counted] = self.rows_by_table_op.get(counted, 0) + rows
        self.stats.rows_produced += rows

    def _produce_one(self, topic: str, value: bytes | None, key: bytes | None, headers: Any) -> None:
        """One message of the debezium format (cdc/debezium/produce.py), with the same delivery
        tracking and back-pressure as the cdcflow format's."""
        on_delivery = partial(self.tracker.delivered, self.tracker.register())
        try:
            self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
        except BufferError:
            self._produce_when_room(topic, value, key, on_delivery, headers)
        except KafkaException as e:  # e.g. larger than message.max.bytes: stop here, checkpoint before it
            raise RuntimeError(
                f"a row change of {len(value or b'')} bytes could not be produced to {topic}: {e.args[0].str()}; "
                f"row-change messages may be up to {ROW_CHANGE_MAX_MESSAGE_BYTES} bytes "
                "(schemas/runtime/kafka_topics.py)"
            ) from e

    def _produce_when_room(
        self, topic: str, value: bytes | None, key: bytes | None, on_delivery: Any, headers: Any = None
    ) -> None:
        """The local queue is full (it is bounded; Kafka slow or down): wait for librdkafka to drain
        it instead of dropping the row or buffering more, saying so now and then."""
        while True:
            self.producer.poll(0.1)
            if self.tracker.failure is not None:
                raise KafkaDeliveryFailed(str(self.tracker.failure)) from None
            try:
                self.producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
                return
            except BufferError:
                self._note_waiting_for_kafka()

    def _decoder(self, event: Any) -> RowDecoder | RowConverter:
        """The row decoder of this event's table map, built once per table map, not per row.

        cdc/rowdecode.py where it has a plan for every column; else the library's decoding plus
        the RowConverter of cdc/types.py (same JSON values, slower)."""
        cached = self._converters.get(event.table_id)
        if (
            cached is not None
            and cached[0] is event.columns
            and (supports(event) or isinstance(cached[1], RowConverter))
        ):
            return cached[1]
        json_columns = self.schema_info.json_columns(event.schema, event.table) if self.schema_info else frozenset()
        if self.debezium is not None:
            json_columns = frozenset()  # Debezium writes the JSON text as stored, not parsed
        decoder: RowDecoder | RowConverter
        try:
            if not supports(event):
                raise NoPlan(f"event type {event.event_type}")
            decoder = RowDecoder(event.columns, json_columns)
        except NoPlan as e:
            log.info("%s.%s: rows decoded by mysql-replication (%s)", event.schema, event.table, e)
            decoder = RowConverter(event.columns, json_columns)
        self._converters[event.table_id] = (event.columns, decoder)
        return decoder

    def _note_waiting_for_kafka(self) -> None:
        now = time.monotonic()
        if now - self._last_wait_log >= 10:
            self._last_wait_log = now
            log.warning(
                "waiting for Kafka %s to acknowledge %d row change(s); checkpoint held at %s",
                self.settings.kafka.bootstrap_servers,
                self.tracker.next_seq - self.tracker.lowest_unacked(),
                self.stats.checkpoint.describe() if self.stats.checkpoint else "(none)",
            )

    def _advance_checkpoint(self, force: bool = False) -> None:
        self._last_checkpoint_at = time.monotonic()
        self.producer.poll(0)
        safe_below = self.tracker.lowest_unacked()
        if self._boundaries and self._boundaries[0][0] >= safe_below:
            # the oldest finished transaction still waits for Kafka: say so if it lasts
            if self._boundaries[0][1].updated_ms < int(time.time() * 1000) - 5000:
                self._note_waiting_for_kafka()
        candidate: Position | None = None
        while self._boundaries and self._boundaries[0][0] < safe_below:
            candidate = self._boundaries.popleft()[1]
        if candidate is not None:
            self.checkpoints.save(self.producer, candidate)
            self.stats.checkpoint = candidate
        self.stats.rows_acked = self.tracker.acked_count


__all__ = ["BinlogReader", "DeliveryTracker", "Position", "to_json_value"]
