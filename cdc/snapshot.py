"""`cdcflow cdc snapshot`: existing rows as `op=r` events, consistent with the binlog the reader streams.

How consistency is kept (the mysqldump --single-transaction --master-data method, also Debezium's
blocking snapshot):
- All chunks are read inside ONE `START TRANSACTION WITH CONSISTENT SNAPSHOT` (REPEATABLE READ),
  so every row is as of one instant. On MariaDB the binlog position of that instant is given by
  the status variables `binlog_snapshot_file/position`, which the server fixes atomically with the
  InnoDB read view (no FLUSH TABLES WITH READ LOCK needed); `BINLOG_GTID_POS()` turns it into the
  GTID position the reader resumes by. On MySQL a brief FLUSH TABLES WITH READ LOCK around
  START TRANSACTION + SHOW MASTER STATUS gives the same guarantee.
- That position H is handed over as the reader's checkpoint, and the reader streams from H only
  after the snapshot finished (it refuses to start while one is unfinished; the snapshot refuses to
  start while the reader is live). So per key, Kafka holds the snapshot row (state at H) and then
  every change after H in binlog order, in the same partition (same key bytes as streaming).
  Replaying a topic per key therefore ends at the table's current row.
- Chunks use keyset pagination on the primary key (`WHERE pk > last ORDER BY pk LIMIT n`), never
  OFFSET. After each chunk Kafka's acks are awaited (idempotent producer, acks=all), then the
  progress (last primary key per table) is stored under `<cdc.name>:snapshot` in the same compacted
  checkpoint topic as the reader's position: one durable place another host can take over from,
  written with the same guarantees, and read by the reader's start-up check.
- Resumed after a crash, the snapshot reads the rest in a new consistent read (later than H) but
  keeps the first H as hand-over point: rows read later already contain some changes after H, which
  streaming from H re-sends afterwards in order, so every key still ends at its current row.
- Event ids are `snapshot:<snapshot id>:<db>.<table>:<key json>`: a resumed snapshot re-sending rows
  gives them the same ids; a new snapshot (a new id) is not mistaken for a duplicate of an old one.
- With cdc.format debezium the rows are Debezium's initial snapshot's (cdc/debezium/snapshot_rows.py):
  no event_id in the value; schemas/row_change.py's debezium_event_id derives one from the hand-over
  position, the snapshot's start (source.ts_ms) and the row, so the same properties hold.

Hand-over rule: with no checkpoint, or when the snapshot covers every table the reader selects and
has no --where, the checkpoint becomes H (a full re-snapshot also repairs a lost position). A partial
snapshot never moves the checkpoint forward (other tables' changes before H are still needed): it
becomes the earlier of the existing checkpoint and H, so changes after H are re-sent after the rows.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
import pymysql
import redis
from confluent_kafka import Producer
from pymysqlreplication.gtid import GtidSet

from cdc.checkpoint import CheckpointStore, Position
from cdc.debezium.snapshot_rows import ColumnDefinition, SnapshotRows, load_definitions, snapshot_marker
from cdc.filters import selection_for
from cdc.partitioning import ROW_CHANGE_PARTITIONER
from cdc.schema_info import SchemaInfo
from cdc.snapshot_values import (
    TEXT_RESULTS,
    SnapshotColumn,
    SnapshotRowConverter,
    key_json,
    load_columns,
    quote_identifier,
)
from cdc.source import connection_settings, detect_server
from cdc.status import read_status
from schemas.row_change import snapshot_event_id
from schemas.rules import RulesConfig
from schemas.runtime.kafka_topics import ROW_CHANGE_MAX_MESSAGE_BYTES, ensure_topics
from schemas.settings import Settings

log = logging.getLogger(__name__)

LIVE_STATES = ("starting", "running", "waiting")
Encoder = Callable[[dict[str, Any], str], tuple[bytes | None, bytes | None]]
LIVE_WITHIN_MS = 10_000


class SnapshotError(RuntimeError):
    """The snapshot cannot run as asked; the message names the table, clause or state at fault."""


class SnapshotUnfinished(RuntimeError):
    """The reader must not stream while a snapshot it would hand over to is unfinished."""


def progress_key(settings: Settings) -> bytes:
    return f"{settings.cdc.name}:snapshot".encode()


def refuse_if_snapshot_unfinished(store: CheckpointStore) -> None:
    """Called by the reader at start: streaming now would put changes ahead of snapshot rows."""
    progress = store.load_value(progress_key(store.settings))
    if progress and not progress.get("finished"):
        done = sum(progress.get("rows", {}).values())
        raise SnapshotUnfinished(
            f"snapshot {progress.get('snapshot_id')} of {', '.join(progress.get('tables', []))} is unfinished "
            f"({done} rows sent). Streaming now could put changes ahead of snapshot rows. Finish it first: "
            "re-run `cdcflow cdc snapshot` with the same arguments (it resumes), or discard it with "
            "`cdcflow cdc snapshot --restart ...`."
        )


def _encode_key(values: list[Any]) -> list[Any]:
    return [{"b64": base64.b64encode(v).decode()} if isinstance(v, (bytes, bytearray)) else v for v in values]


def _decode_key(values: list[Any]) -> list[Any]:
    return [base64.b64decode(v["b64"]) if isinstance(v, dict) else v for v in values]


@dataclass
class Progress:
    """What survives a crash, stored after Kafka acknowledged every row it counts."""

    snapshot_id: str
    tables: list[str]
    where: str | None
    handover: dict[str, Any]
    full: bool
    started_ms: int
    last_key: dict[str, list[Any]] = field(default_factory=dict)  # table -> raw pk values of the last acked row
    rows: dict[str, int] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    finished: bool = False


@dataclass
class TablePlan:
    db: str
    table: str
    pk: list[str]
    columns: list[SnapshotColumn]
    estimate: int
    # cdc.format debezium: the binlog-like column definitions and the facts its converters need
    definitions: list[ColumnDefinition] = field(default_factory=list)
    facts: dict[str, tuple[bool, str | None]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.db}.{self.table}"


@dataclass
class SnapshotResult:
    snapshot_id: str
    rows: int
    handover: Position
    checkpoint: Position
    seconds: float


def earlier_position(a: Position, b: Position, is_mariadb: bool) -> Position:
    """The position from which streaming re-sends everything after either of them."""
    if is_mariadb:

        def domains(p: Position) -> dict[str, tuple[int, str]]:
            out = {}
            for gtid in (p.gtid_set or "").split(","):
                if gtid.strip():
                    domain, _server, seq = gtid.strip().split("-")
                    out[domain] = (int(seq), gtid.strip())
            return out

        da, db_ = domains(a), domains(b)
        merged = {d: min(x for x in (da.get(d), db_.get(d)) if x is not None)[1] for d in sorted({*da, *db_})}
        # file/pos are not used to resume on MariaDB; keep those of the earlier one when comparable
        base = a if (a.file or "", a.pos or 0) <= (b.file or "", b.pos or 0) else b
        return Position(file=base.file, pos=base.pos, gtid_set=",".join(merged.values()))
    if a.gtid_set and b.gtid_set:
        ga, gb = GtidSet(a.gtid_set), GtidSet(b.gtid_set)
        if ga in gb:
            return a
        if gb in ga:
            return b
        raise SnapshotError(
            f"cannot order the checkpoint {a.describe()} and the snapshot position {b.describe()} "
            "(GTID sets diverge): snapshot every selected table without --where instead"
        )
    return a if (a.file or "", a.pos or 0) <= (b.file or "", b.pos or 0) else b


class Snapshot:
    def __init__(
        self,
        settings: Settings,
        rules: RulesConfig,
        tables: list[str] | None = None,
        where: str | None = None,
        chunk_size: int = 2000,
        restart: bool = False,
        stop_event: threading.Event | None = None,
    ):
        if chunk_size < 1:
            raise SnapshotError(f"--chunk-size must be at least 1, not {chunk_size}")
        self.settings = settings
        self.rules = rules
        self.requested = list(tables or [])
        self.where = where.strip() if where and where.strip() else None
        self.chunk_size = chunk_size
        self.restart = restart
        self.stop_event = stop_event or threading.Event()
        self.store = CheckpointStore(settings)
        self.key = progress_key(settings)
        self.plans: list[TablePlan] = []
        self.progress: Progress | None = None
        self.resumed = False
        self.is_mariadb = True
        self._failure: str | None = None

    # -- preparation: everything that can be wrong is found before a row is sent ----------------
    def prepare(self) -> int:
        """Resolve and check tables, --where, reader state and earlier progress. Returns the row estimate."""
        self._refuse_if_reader_live()
        self.store.ensure()
        self.is_mariadb, _ = detect_server(self.settings)
        selection = selection_for(self.rules.tables(), self.settings.cdc)
        selection.resolve(connection_settings(self.settings))
        selected = {f"{d}.{t}" for d, t in selection}
        names = [self._qualify(t) for t in self.requested] if self.requested else sorted(selected)
        if not names:
            raise SnapshotError("no tables to snapshot: name TABLEs, or monitor tables in the rules / cdc.include")
        names = list(dict.fromkeys(names))
        conn = pymysql.connect(**connection_settings(self.settings), conv=TEXT_RESULTS)
        schema_info = SchemaInfo(connection_settings(self.settings), self.is_mariadb)
        try:
            with conn.cursor() as cur:
                self.plans = [self._plan(cur, schema_info, name) for name in names]
                for plan in self.plans:
                    if plan.name not in selected:
                        raise SnapshotError(
                            f"table {plan.name} is not read by the reader (not monitored by a rule, "
                            "not matched by cdc.include, or matched by cdc.exclude): its snapshot "
                            "would never be followed by its changes"
                        )
                    self._check_where(cur, plan)
        finally:
            conn.close()
            schema_info.close()
        full = self.where is None and set(names) >= selected
        stored = self.store.load_value(self.key)
        if stored and not stored.get("finished") and not self.restart:
            progress = Progress(**stored)
            if progress.tables != names or progress.where != self.where:
                raise SnapshotError(
                    f"an unfinished snapshot {progress.snapshot_id} of {', '.join(progress.tables)}"
                    f"{' --where ' + repr(progress.where) if progress.where else ''} exists: re-run with the same "
                    "arguments to resume it, or add --restart to discard it"
                )
            self.progress, self.resumed = progress, True
        else:
            if stored and not stored.get("finished"):
                log.warning("--restart: discarding unfinished snapshot %s", stored.get("snapshot_id"))
            self.progress = Progress(
                snapshot_id=uuid.uuid4().hex[:12],
                tables=names,
                where=self.where,
                handover={},
                full=full,
                started_ms=int(time.time() * 1000),
            )
        done = sum(self.progress.rows.values())
        return done + sum(p.estimate for p in self.plans if p.name not in self.progress.done)

    @property
    def rows_done(self) -> int:
        return sum(self.progress.rows.values()) if self.progress else 0

    def _refuse_if_reader_live(self) -> None:
        try:
            status = read_status(self.settings)
        except redis.RedisError as e:
            # the reader's own start-up check still keeps it from streaming during the snapshot
            log.warning("cannot read the reader's status from Redis (%s): not checking whether it runs", e)
            return
        if (
            status
            and status.get("state") in LIVE_STATES
            and int(time.time() * 1000) - int(status.get("updated_ms", 0)) < LIVE_WITHIN_MS
        ):
            raise SnapshotError(
                f"reader {self.settings.cdc.name!r} is {status.get('state')} ({status.get('host')} pid "
                f"{status.get('pid')}): stop it first. Its changes must follow the snapshot rows, so it resumes "
                "from the position the snapshot hands over when the snapshot is done."
            )

    def _qualify(self, name: str) -> str:
        return name if "." in name else f"{self.settings.mysql.database}.{name}"

    def _plan(self, cur: Any, schema_info: SchemaInfo, name: str) -> TablePlan:
        db, _, table = name.partition(".")
        cur.execute(
            "SELECT TABLE_ROWS, ENGINE, TABLE_TYPE FROM information_schema.TABLES "
            "WHERE TABLE_SCHEMA = %s AND TABLE_NAME = %s",
            (db, table),
        )
        found = cur.fetchone()
        if found is None:
            raise SnapshotError(f"table {name} does not exist")
        rows, engine, kind = found
        if kind != "BASE TABLE":
            raise SnapshotError(f"{name} is a {kind.lower()}, not a table: views have no binlog rows to follow")
        if engine and engine.lower() != "innodb":
            log.warning(
                "table %s uses engine %s: not transactional, so its rows may not be exactly as of the "
                "snapshot's binlog position",
                name,
                engine,
            )
        cur.execute(
            "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE WHERE TABLE_SCHEMA = %s "
            "AND TABLE_NAME = %s AND CONSTRAINT_NAME = 'PRIMARY' ORDER BY ORDINAL_POSITION",
            (db, table),
        )
        pk = [r[0] for r in cur.fetchall()]
        if not pk:
            raise SnapshotError(
                f"table {name} has no primary key: the snapshot pages by primary key, "
                "and its row changes would have no Kafka key to order them by"
            )
        debezium = self.settings.cdc.format == "debezium"
        # Debezium writes MariaDB's JSON (LONGTEXT) as the text stored, as the reader does in that format
        columns = load_columns(cur, db, table, frozenset() if debezium else schema_info.json_columns(db, table))
        plan = TablePlan(db, table, pk, columns, int(rows or 0))
        if debezium:
            plan.definitions = load_definitions(cur, db, table)
            plan.facts = schema_info.column_facts(db, table)
        return plan

    def _check_where(self, cur: Any, plan: TablePlan) -> None:
        if self.where is None:
            return
        try:
            cur.execute(
                f"SELECT 1 FROM {quote_identifier(plan.db)}.{quote_identifier(plan.table)} WHERE ({self.where}) LIMIT 0"
            )
        except pymysql.err.MySQLError as e:
            message = e.args[1] if len(e.args) > 1 else str(e)
            raise SnapshotError(f"--where {self.where!r} is not valid for table {plan.name}: {message}") from None

    # -- the snapshot ------------------------------------------------------------------------
    def run(self, on_rows: Callable[[int, str], None] | None = None) -> SnapshotResult:
        if self.progress is None:
            self.prepare()
        progress = self.progress
        assert progress is not None
        started = time.monotonic()
        ensure_topics(self.settings, [self.settings.topics.row_changes(p.db, p.table) for p in self.plans])
        producer = self._new_producer()
        rows_before = self.rows_done
        conn: pymysql.connections.Connection | None = None
        try:
            conn = pymysql.connect(**connection_settings(self.settings), conv=TEXT_RESULTS)
            with conn.cursor() as cur:
                handover, server_id = self._fix_handover(cur, producer)
                self._snapshot_tables(cur, producer, handover, server_id, on_rows)
                cur.execute("COMMIT")
            checkpoint = self._hand_over(producer, handover)
            progress.finished = True
            self._save_progress(producer)
        except pymysql.err.MySQLError as e:
            # e.g. the server restarted, or DDL on a table being read ("Table definition has changed")
            message = e.args[1] if len(e.args) > 1 else str(e)
            raise SnapshotError(
                f"the source server {self.settings.mysql.host}:{self.settings.mysql.port} failed "
                f"during snapshot {progress.snapshot_id}: {message}. Progress is kept at the last "
                "acknowledged chunk: re-run the same command to resume"
            ) from e
        finally:
            producer.flush(30)
            if conn is not None:
                conn.close()
        seconds = time.monotonic() - started
        return SnapshotResult(progress.snapshot_id, self.rows_done - rows_before, handover, checkpoint, seconds)

    def _new_producer(self) -> Producer:
        return Producer(
            self.settings.kafka_config(
                **{
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": self.settings.cdc.linger_ms,
                    "compression.type": "lz4",
                    "message.max.bytes": ROW_CHANGE_MAX_MESSAGE_BYTES,
                    **ROW_CHANGE_PARTITIONER,
                }
            )
        )

    def _fix_handover(self, cur: Any, producer: Producer) -> tuple[Position, int]:
        """Starts the consistent read; returns the hand-over position (that of the first run's read,
        stored before the first row) and the server id."""
        progress = self.progress
        assert progress is not None
        position, server_id = self._begin_consistent_read(cur)
        if not progress.handover:
            progress.handover = asdict(position)
            log.info("snapshot %s: consistent read at %s", progress.snapshot_id, position.describe())
            self._save_progress(producer)  # the hand-over point is fixed before the first row
        else:
            log.info(
                "resuming snapshot %s (%d rows already sent); hand-over stays at %s",
                progress.snapshot_id,
                self.rows_done,
                Position(**progress.handover).describe(),
            )
        return Position(**progress.handover), server_id

    def _snapshot_tables(
        self,
        cur: Any,
        producer: Producer,
        handover: Position,
        server_id: int,
        on_rows: Callable[[int, str], None] | None,
    ) -> None:
        """Every table not done yet, each from where its acknowledged rows end."""
        progress = self.progress
        assert progress is not None
        todo = [p for p in self.plans if p.name not in progress.done]
        last_key = {
            p.name: _decode_key(progress.last_key[p.name]) if p.name in progress.last_key else None for p in todo
        }
        # The final row of the last table that has rows carries source.snapshot "last", the first row of
        # the first "first" (as Debezium). The read is consistent: which tables those are does not change.
        final_table = next((p.name for p in reversed(todo) if self._chunk(cur, p, last_key[p.name], 1)), None)
        first_table = next((p.name for p in todo if self._chunk(cur, p, last_key[p.name], 1)), None)
        ends = (first_table if self.rows_done == 0 else None, final_table)
        for plan in todo:
            self._snapshot_table(cur, producer, plan, last_key[plan.name], handover, server_id, ends, on_rows)

    def _snapshot_table(
        self,
        cur: Any,
        producer: Producer,
        plan: TablePlan,
        last: list[Any] | None,
        handover: Position,
        server_id: int,
        ends: tuple[str | None, str | None],
        on_rows: Callable[[int, str], None] | None,
    ) -> None:
        """`ends`: the tables whose first / last row is the snapshot's first / last."""
        progress = self.progress
        assert progress is not None
        topic = self.settings.topics.row_changes(plan.db, plan.table)
        convert = SnapshotRowConverter(plan.columns)
        names = [c.name for c in plan.columns]
        pk_index = [names.index(k) for k in plan.pk]  # key order: how the chunks page
        # mysql-replication lists primary key columns in table order: the Kafka key must be byte-equal
        # to streaming's (same partition, so per-key order holds), whatever the key's own order
        key_columns = [name for name in names if name in plan.pk]
        encode = self._encoder(plan, handover, server_id, key_columns)
        first_table, last_table = ends[0] == plan.name, ends[1] == plan.name
        starting = last is None  # the table's first row is in the first chunk (not resumed past it)
        while True:
            if self.stop_event.is_set():
                raise SnapshotError("stopped: progress is saved, re-run the same command to resume")
            rows = self._chunk(cur, plan, last, self.chunk_size + 1)  # one more tells whether this chunk ends the table
            more = len(rows) > self.chunk_size
            rows = rows[: self.chunk_size]
            for i, raw in enumerate(rows):
                ending = not more and i == len(rows) - 1
                marker = snapshot_marker(first_table, last_table, starting and i == 0, ending)
                self._send(producer, topic, *encode(convert(raw), marker))
            starting = False
            self._await_acks(producer)
            # only now, with every row of the chunk acknowledged, may progress move past them
            if rows:
                last = [rows[-1][i] for i in pk_index]
                progress.last_key[plan.name] = _encode_key(last)
                progress.rows[plan.name] = progress.rows.get(plan.name, 0) + len(rows)
            if not more:
                progress.done.append(plan.name)
            self._save_progress(producer)
            if on_rows is not None and rows:
                on_rows(len(rows), plan.name)
            if not more:
                return

    def _chunk(self, cur: Any, plan: TablePlan, last: list[Any] | None, limit: int) -> list[tuple[Any, ...]]:
        columns = ", ".join(c.select_expression() for c in plan.columns)
        order = ", ".join(quote_identifier(k) for k in plan.pk)
        # the query always goes through parameter formatting, so a literal % of --where is doubled
        conditions = [f"({self.where.replace('%', '%%')})"] if self.where else []
        params: list[Any] = []
        if last is not None:
            # (a > x) OR (a = x AND b > y) ...: a keyset condition every optimizer turns into an index range
            ors = []
            for i, k in enumerate(plan.pk):
                eqs = [f"{quote_identifier(p)} = %s" for p in plan.pk[:i]]
                ors.append("(" + " AND ".join([*eqs, f"{quote_identifier(k)} > %s"]) + ")")
                params.extend([*last[:i], last[i]])
            conditions.append("(" + " OR ".join(ors) + ")")
        sql = (
            f"SELECT {columns} FROM {quote_identifier(plan.db)}.{quote_identifier(plan.table)}"
            f"{' WHERE ' + ' AND '.join(conditions) if conditions else ''} ORDER BY {order} LIMIT {int(limit)}"
        )
        cur.execute(sql, tuple(params))
        return list(cur.fetchall())

    def _begin_consistent_read(self, cur: Any) -> tuple[Position, int]:
        cur.execute("SET SESSION time_zone = '+00:00'")
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cur.execute("SELECT @@server_id")
        server_id = int(cur.fetchone()[0])
        if self.is_mariadb:
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            cur.execute("SHOW STATUS LIKE 'binlog_snapshot_%'")
            status = {k.lower(): v for k, v in cur.fetchall()}
            file, pos = status["binlog_snapshot_file"], int(status["binlog_snapshot_position"])
            cur.execute("SELECT BINLOG_GTID_POS(%s, %s)", (file, pos))
            gtid = cur.fetchone()[0] or ""
            return Position(file=file, pos=pos, gtid_set=gtid), server_id
        cur.execute("FLUSH TABLES WITH READ LOCK")  # writes wait only while the position is read
        try:
            cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            try:
                cur.execute("SHOW MASTER STATUS")
            except pymysql.err.ProgrammingError:
                cur.execute("SHOW BINARY LOG STATUS")
            names = [d[0] for d in cur.description]
            status = dict(zip(names, cur.fetchone(), strict=True))
        finally:
            cur.execute("UNLOCK TABLES")
        gtid_set = (status.get("Executed_Gtid_Set") or "").replace("\n", "") or None
        return Position(file=status["File"], pos=int(status["Position"]), gtid_set=gtid_set), server_id

    def _encoder(self, plan: TablePlan, handover: Position, server_id: int, key_columns: list[str]) -> Encoder:
        """One table's rows (JSON values, Debezium's source.snapshot marker) -> Kafka key and value."""
        progress = self.progress
        assert progress is not None
        if self.settings.cdc.format == "debezium":
            return SnapshotRows(
                self.settings.cdc.debezium,
                self.settings.topics.cdc_prefix,
                plan.db,
                plan.table,
                plan.definitions,
                tuple(plan.pk),  # Debezium's key follows the primary key's order, as its streaming does
                plan.facts,
                (handover.file, handover.pos),
                progress.started_ms,
            )
        source = self._source_base(plan, handover, server_id)

        def encode(row: dict[str, Any], marker: str) -> tuple[bytes | None, bytes | None]:
            key = key_json(row, key_columns)
            value = {
                "before": None,
                "after": row,
                "op": "r",
                "ts_ms": int(time.time() * 1000),
                "source": {**source, "snapshot": "last" if marker == "last" else "true"},
                "event_id": snapshot_event_id(progress.snapshot_id, plan.db, plan.table, key.decode()),
            }
            return key, orjson.dumps(value)

        return encode

    def _source_base(self, plan: TablePlan, handover: Position, server_id: int) -> dict[str, Any]:
        assert self.progress is not None
        return {
            "connector": "mariadb" if self.is_mariadb else "mysql",
            "name": self.settings.cdc.name,
            "server_id": server_id,
            "db": plan.db,
            "table": plan.table,
            "file": handover.file,
            "pos": handover.pos,
            "row": 0,
            "gtid": handover.gtid_set,
            "ts_ms": self.progress.started_ms,
        }

    def _send(self, producer: Producer, topic: str, key: bytes | None, value: bytes | None) -> None:
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=self._delivered)
                return
            except BufferError:
                producer.poll(0.1)  # local queue full: wait for Kafka to drain it

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._failure = str(err)

    def _await_acks(self, producer: Producer) -> None:
        left = producer.flush(60)
        if self._failure is not None or left:
            raise SnapshotError(
                f"Kafka {self.settings.kafka.bootstrap_servers} did not acknowledge the snapshot's "
                f"rows ({self._failure or f'{left} still waiting after 60s'}); progress is kept at "
                "the last acknowledged chunk, re-run the same command to resume"
            )

    def _save_progress(self, producer: Producer) -> None:
        assert self.progress is not None
        producer.produce(
            self.store.topic, key=self.key, value=orjson.dumps(asdict(self.progress)), on_delivery=self._delivered
        )
        self._await_acks(producer)

    def _hand_over(self, producer: Producer, handover: Position) -> Position:
        assert self.progress is not None
        existing = self.store.load()
        if existing is None or self.progress.full:
            checkpoint = Position(**asdict(handover))
        else:
            checkpoint = earlier_position(existing, handover, self.is_mariadb)
        log.info(
            "snapshot %s done: reader %r resumes from %s (was %s)",
            self.progress.snapshot_id,
            self.settings.cdc.name,
            checkpoint.describe(),
            existing.describe() if existing else "no checkpoint",
        )
        self.store.save(producer, checkpoint)
        self._await_acks(producer)  # the checkpoint is durable before the progress says finished
        return checkpoint
