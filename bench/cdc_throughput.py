"""Binlog reader throughput against the bare mysql-replication parse of the same binlog, and its memory.

Writes >= 200k row changes (int/varchar/datetime/decimal columns, transactions of 1,000 rows) into a
table of its own in MariaDB, noting the binlog position (GTID) before. Then, alternating, each in
its own process:
  raw     plain mysql-replication over that binlog (same only_schemas/only_tables/blocking as the reader):
          iterate the events and their rows, nothing else;
  reader  the full cdcflow reader from a checkpoint at that position into fresh topics, rows
          counted when Kafka acknowledged them (idempotent producer, acks=all);
  debezium the same reader with cdc.format: debezium (Debezium's envelope and encodings, defaults).
Both rates run from the first row seen to the last row parsed (raw) / acknowledged (reader: the
broker's append time of the first and last row change, LogAppendTime on the bench's topics).
Finally one 200k-row transaction (INSERT ... SELECT into a second table) goes through a reader
process whose peak RSS (VmHWM) is compared with its RSS when the first row arrived.
Medians of the runs are printed, for both formats; the last line is `cdc reader/raw-parse ratio: X.XX`
(the cdcflow format's), the line before it the debezium format's.

    python -m bench.cdc_throughput [--rows 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.common import ROOT, stack_up
from cdc.checkpoint import CheckpointStore, Position
from schemas.config import Config, load_config
from schemas.runtime.kafka_topics import ROW_CHANGE_MAX_MESSAGE_BYTES
from schemas.settings import Settings
from tests.support import execute, isolated_config_data, mysql, remove_test_resources, write_config

TABLE, BIG_TABLE = "bench_rows", "bench_big"
COLUMNS = (
    "id BIGINT PRIMARY KEY, n INT NOT NULL, qty SMALLINT, name VARCHAR(64) CHARACTER SET utf8mb4, "
    "code CHAR(8), created DATETIME(3), amount DECIMAL(12,2), note VARCHAR(255))"
)


def vm_kb(field: str, pid: str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


# -- the two measured sides (each runs in a child process) ---------------------------------
def run_raw(config: Config, table: str, start: dict, rows: int) -> dict:
    from pymysqlreplication import BinLogStreamReader
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    settings = config.settings
    # plain library: none of cdcflow's patches (cdc/tablemaps.py, cdc/libfixes.py) in this process
    patched = {"cdc.reader", "cdc.tablemaps", "cdc.libfixes", "cdc.rowdecode"} & set(sys.modules)
    assert not patched, f"the raw side must run the library as shipped, but {patched} are imported"
    connection = {
        "host": settings.mysql.host,
        "port": settings.mysql.port,
        "user": settings.mysql.user,
        "password": settings.mysql.password.get_secret_value(),
        "charset": "utf8mb4",
    }
    stream = BinLogStreamReader(
        connection_settings=connection,
        server_id=settings.mysql.server_id,
        # blocking=True as the reader: MariaDB 10.11 resets a non-blocking dump connection part-way
        # (seen after ~1.3k rows), and the run stops at the bench's last row anyway.
        blocking=True,
        only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        only_schemas=[settings.mysql.database],
        only_tables=[table],
        is_mariadb=True,
        auto_position=start["gtid_set"],
        enable_logging=False,
    )
    count, first = 0, 0.0
    try:
        for event in stream:
            for _row in event.rows:
                count += 1
            if not first:
                first = time.perf_counter()
            if count >= rows:
                break
    finally:
        stream.close()
    last = time.perf_counter()
    return {"rows": count, "seconds": last - first, "hwm_kb": vm_kb("VmHWM")}


def run_reader(config: Config, table: str, start: dict, rows: int) -> dict:
    from cdc.reader import BinlogReader

    settings = config.settings
    store = CheckpointStore(settings)
    store.ensure()
    seed = Producer(settings.kafka_config())
    store.save(seed, Position(**start))  # the reader resumes right before the bench's writes
    if seed.flush(30):
        raise RuntimeError("the seed checkpoint was not acknowledged")
    # The fresh topic is created here, with a leader before the reader starts (a topic created a
    # moment before the first produce costs ~1 s of metadata waits), and with LogAppendTime: the
    # broker stamps each row change when it appends it, i.e. when it can acknowledge it. The
    # reader itself learns of acks only when it next polls, up to a heartbeat (1 s) later.
    topics = [settings.topics.row_changes(db, t) for db, t in config.rules.tables()]
    admin = AdminClient(settings.kafka_config())
    for future in admin.create_topics(
        [
            NewTopic(
                t,
                num_partitions=settings.kafka.partitions,
                replication_factor=settings.kafka.replication_factor,
                config={
                    "message.timestamp.type": "LogAppendTime",
                    "max.message.bytes": str(ROW_CHANGE_MAX_MESSAGE_BYTES),
                },
            )
            for t in topics
        ]
    ).values():
        future.result()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = admin.list_topics(timeout=5).topics
        if all(
            t in found and found[t].partitions and all(p.leader >= 0 for p in found[t].partitions.values())
            for t in topics
        ):
            break
        time.sleep(0.1)
    stop = threading.Event()
    reader = BinlogReader(settings, config.rules, stop)
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    base_kb = 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and thread.is_alive():
        if reader.stats.rows_produced and not base_kb:
            base_kb = vm_kb("VmRSS")
        if reader.tracker.acked_count >= rows:
            break
        time.sleep(0.01)
    acked = reader.tracker.acked_count
    stop.set()
    thread.join(60)
    if acked < rows:
        raise RuntimeError(f"the reader delivered {acked} of {rows} rows")
    first_ms, last_ms = append_times(settings, topics)
    return {"rows": acked, "seconds": (last_ms - first_ms) / 1000, "hwm_kb": vm_kb("VmHWM"), "base_kb": base_kb}


def append_times(settings: Settings, topics: list[str]) -> tuple[int, int]:
    """Broker append time of the first and of the last message over the topics' partitions."""
    consumer = Consumer(
        settings.kafka_config(**{"group.id": f"bench-times-{time.time_ns()}", "enable.auto.commit": False})
    )
    first, last = [], []
    try:
        for topic in topics:
            for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                for offset, into in ((low, first), (high - 1, last)):
                    if high <= low:
                        continue
                    consumer.assign([TopicPartition(topic, partition, offset)])
                    msg = consumer.poll(10)
                    if msg is None or msg.error():
                        raise RuntimeError(f"could not read {topic}[{partition}]@{offset}")
                    into.append(msg.timestamp()[1])
    finally:
        consumer.close()
    return min(first), max(last)


def child(args: argparse.Namespace) -> None:
    config = load_config(Path(args.config))
    result = (run_raw if args.child == "raw" else run_reader)(config, args.table, json.loads(args.start), args.rows)
    print(json.dumps(result))


def in_child(kind: str, config: Config, table: str, start: Position, rows: int) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cdc_throughput",
            "--child",
            kind,
            "--config",
            str(config.path),
            "--table",
            table,
            "--start",
            json.dumps({"file": start.file, "pos": start.pos, "gtid_set": start.gtid_set}),
            "--rows",
            str(rows),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{kind} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the workload ---------------------------------------------------------------------------
def write_rows(db: str, rows: int, per_transaction: int) -> float:
    conn = mysql(db)
    started = time.perf_counter()
    base = datetime(2024, 1, 1)
    try:
        with conn.cursor() as cur:
            for start in range(0, rows, per_transaction):
                batch = [
                    (
                        i,
                        i * 7 % 100_000,
                        i % 30_000,
                        f"name-{i}-李雷",
                        f"C{i % 9999:07d}",
                        base + timedelta(seconds=i, milliseconds=i % 1000),
                        Decimal(i % 100_000) / 100,
                        f"note {i} " + "x" * (i % 40),
                    )
                    for i in range(start, min(rows, start + per_transaction))
                ]
                cur.execute("BEGIN")
                cur.executemany(f"INSERT INTO {TABLE} VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", batch)
                cur.execute("COMMIT")
    finally:
        conn.close()
    return time.perf_counter() - started


def reader_config(workdir: Path, data: dict, run: str, table: str, row_format: str = "cdcflow") -> Config:
    """The bench's config with its own reader name, checkpoint topic and row-change topics for one run."""
    prefix = data["topics"]["cdc_prefix"]
    data = {
        **data,
        "topics": {**data["topics"], "cdc_prefix": f"{prefix}.{run}", "cdc_checkpoints": f"{prefix}.{run}.checkpoints"},
        "cdc": {**data["cdc"], "name": f"{data['cdc']['name']}-{run}", "format": row_format},
        "monitored_tables": {table: {"triggers": ["echo"]}},
    }
    directory = workdir / run
    directory.mkdir()
    return write_config(directory, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--per-transaction", type=int, default=1000)
    parser.add_argument("--child", choices=["raw", "reader"], help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--table", help=argparse.SUPPRESS)
    parser.add_argument("--start", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    from cdc.source import detect_server

    stack_up()
    workdir = Path(tempfile.mkdtemp(prefix="cdcflow-bench-"))
    data = isolated_config_data("bcdc", {"monitored_tables": {TABLE: {"triggers": ["echo"]}}})
    db = data["mysql"]["database"]
    base = write_config(workdir, data)
    execute(
        [f"CREATE DATABASE {db}", f"CREATE TABLE {db}.{TABLE} ({COLUMNS}", f"CREATE TABLE {db}.{BIG_TABLE} ({COLUMNS}"]
    )
    configs: list[Config] = []
    try:
        _, start = detect_server(base.settings)
        took = write_rows(db, args.rows, args.per_transaction)
        print(
            f"wrote {args.rows} rows in transactions of {args.per_transaction} in {took:.1f}s "
            f"(binlog from gtid {start.gtid_set})",
            file=sys.stderr,
        )
        raw_rates, reader_rates, reader_hwm, dbz_rates = [], [], [], []
        for run in range(args.runs):
            raw = in_child("raw", base, TABLE, start, args.rows)
            config = reader_config(workdir, data, f"r{run}", TABLE)
            dbz_config = reader_config(workdir, data, f"d{run}", TABLE, "debezium")
            configs += [config, dbz_config]
            rdr = in_child("reader", config, TABLE, start, args.rows)
            dbz = in_child("reader", dbz_config, TABLE, start, args.rows)
            raw_rates.append(raw["rows"] / raw["seconds"])
            reader_rates.append(rdr["rows"] / rdr["seconds"])
            dbz_rates.append(dbz["rows"] / dbz["seconds"])
            reader_hwm.append(rdr["hwm_kb"])
            print(
                f"run {run + 1}: raw parse {raw_rates[-1]:,.0f} rows/s, reader {reader_rates[-1]:,.0f} rows/s "
                f"(acked), ratio {reader_rates[-1] / raw_rates[-1]:.2f}; debezium format "
                f"{dbz_rates[-1]:,.0f} rows/s, ratio {dbz_rates[-1] / raw_rates[-1]:.2f}",
                file=sys.stderr,
            )

        _, big_start = detect_server(base.settings)
        execute(f"INSERT INTO {BIG_TABLE} SELECT * FROM {TABLE}", db)  # one transaction of all rows
        big_config = reader_config(workdir, data, "big", BIG_TABLE)
        configs.append(big_config)
        big = in_child("reader", big_config, BIG_TABLE, big_start, args.rows)

        raw_rate, reader_rate = statistics.median(raw_rates), statistics.median(reader_rates)
        ratios = [r / w for r, w in zip(reader_rates, raw_rates, strict=True)]
        print(f"row changes: {args.rows} (transactions of {args.per_transaction}), runs: {args.runs}")
        print(
            f"raw mysql-replication parse: {raw_rate:,.0f} rows/s (median; runs "
            f"{', '.join(f'{r:,.0f}' for r in raw_rates)})"
        )
        print(
            f"cdc reader, Kafka-acknowledged: {reader_rate:,.0f} rows/s (median; runs "
            f"{', '.join(f'{r:,.0f}' for r in reader_rates)})"
        )
        print(
            f"reader peak RSS, {args.rows} rows in transactions of {args.per_transaction}: "
            f"{statistics.median(reader_hwm) / 1024:.0f} MB"
        )
        print(
            f"reader during one {args.rows}-row transaction: {big['rows'] / big['seconds']:,.0f} rows/s, "
            f"peak RSS {big['hwm_kb'] / 1024:.0f} MB, RSS at its first row {big['base_kb'] / 1024:.0f} MB "
            f"(growth {(big['hwm_kb'] - big['base_kb']) / 1024:.0f} MB)"
        )
        dbz_ratios = [r / w for r, w in zip(dbz_rates, raw_rates, strict=True)]
        print(
            f"cdc reader, cdc.format=debezium: {statistics.median(dbz_rates):,.0f} rows/s (median; runs "
            f"{', '.join(f'{r:,.0f}' for r in dbz_rates)})"
        )
        print(
            f"per-run ratios: {', '.join(f'{r:.2f}' for r in ratios)} (debezium format: "
            f"{', '.join(f'{r:.2f}' for r in dbz_ratios)})"
        )
        print(f"cdc reader (debezium format)/raw-parse ratio: {statistics.median(dbz_ratios):.2f}")
        print(f"cdc reader/raw-parse ratio: {statistics.median(ratios):.2f}")
    finally:
        execute(f"DROP DATABASE IF EXISTS {db}")
        for config in configs:
            s = config.settings
            remove_test_resources(
                s, [s.topics.row_changes(db, t) for _, t in config.rules.tables()] + [s.topics.cdc_checkpoints]
            )
        remove_test_resources(base.settings, [])
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
