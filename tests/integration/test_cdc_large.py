"""Large work in bounded memory: a 200k-row transaction and a 16 MB row through a real reader process.

The reader runs as `cdcflow cdc run` in its own process so its memory (VmRSS/VmHWM in
/proc/<pid>/status) is its own. What is delivered is checked by reading the topic back.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pymysql
import pytest

from cdc.reader import BinlogReader
from schemas.config import Config
from schemas.runtime.kafka_topics import ROW_CHANGE_MAX_MESSAGE_BYTES
from tests.support import (
    ADMIN,
    REPO_ROOT,
    consume_all,
    execute,
    isolated_config_data,
    remove_test_resources,
    wait_for,
    write_config,
)

ROWS = 200_000
PAYLOAD = 200  # bytes of text per row: buffering the transaction would hold >= ROWS * PAYLOAD bytes
# Growth of the reader's peak RSS over its RSS before the transaction. Holding the transaction's
# row changes (>= 40 MB of payload alone, ~130 MB as encoded messages) cannot stay under this.
MAX_GROWTH_MB = 40


def vm_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


@pytest.fixture
def config(stack: None, tmp_path: Path) -> Iterator[Config]:
    data = isolated_config_data(
        "large", {"monitored_tables": {"big": {"triggers": ["echo"]}, "blobs": {"triggers": ["echo"]}}}
    )
    db = data["mysql"]["database"]
    execute(
        [
            f"CREATE DATABASE {db}",
            f"CREATE TABLE {db}.big (id INT PRIMARY KEY, n BIGINT, payload VARCHAR({PAYLOAD + 20}))",
            f"CREATE TABLE {db}.blobs (id INT PRIMARY KEY, data LONGBLOB, doc LONGTEXT CHARACTER SET utf8mb4)",
        ]
    )
    config = write_config(tmp_path, data)
    yield config
    execute(f"DROP DATABASE IF EXISTS {db}")
    s = config.settings
    remove_test_resources(s, [s.topics.row_changes(db, t) for t in ("big", "blobs")] + [s.topics.cdc_checkpoints])


@contextmanager
def reader_process(config: Config, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    log_path = tmp_path / "reader.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "console.cli", "--config", str(config.path), "cdc", "run"],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CDCFLOW_LOG_LEVEL": "WARNING"},
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.returncode in (0, -15), f"reader exited {proc.returncode}:\n{log_path.read_text()[-3000:]}"


def events(config: Config, table: str, idle: float = 3.0) -> list[dict]:
    topic = config.settings.topics.row_changes(config.settings.mysql.database, table)
    return [orjson.loads(m.value()) for m in consume_all(config, [topic], idle_seconds=idle, max_seconds=180)]


def wait_streaming(config: Config, table: str) -> None:
    """The reader is past start-up (it starts at the end of the binlog) once a marker row reaches Kafka.

    Markers have ids <= 0; a new one is written each round, as the first may predate the start."""
    db = config.settings.mysql.database
    marker = [0]

    def arrived() -> bool:
        execute(f"INSERT INTO {table} (id) VALUES ({marker[0]})", db)
        marker[0] -= 1
        return any(e["after"]["id"] <= 0 for e in events(config, table, idle=1.0))

    wait_for(arrived, 60, interval=0.5, what="the reader to stream a marker row")


def test_200k_row_transaction_is_delivered_whole_in_flat_memory(config: Config, tmp_path: Path) -> None:
    db = config.settings.mysql.database
    with reader_process(config, tmp_path) as proc:
        wait_streaming(config, "big")
        before_kb = vm_kb(proc.pid, "VmRSS")
        # one transaction: INSERT ... SELECT from MariaDB's sequence engine
        execute(
            f"INSERT INTO big (id, n, payload) SELECT seq, seq * 1000003, "
            f"CONCAT(seq, ':', REPEAT(CHAR(97 + seq % 26), {PAYLOAD})) FROM seq_1_to_{ROWS}",
            db,
        )

        def delivered() -> list[dict] | None:
            got = [e for e in events(config, "big") if e["after"]["id"] > 0]
            return got if len(got) >= ROWS else None

        got = wait_for(delivered, 240, interval=2.0, what=f"{ROWS} row changes")
        peak_kb = vm_kb(proc.pid, "VmHWM")
    inserted = {e["after"]["id"]: e for e in got if e["op"] == "c"}
    assert sorted(inserted) == list(range(1, ROWS + 1))
    sample = inserted[ROWS // 2]
    assert sample["after"]["n"] == ROWS // 2 * 1000003
    assert sample["after"]["payload"] == f"{ROWS // 2}:" + chr(97 + ROWS // 2 % 26) * PAYLOAD
    assert len({e["event_id"] for e in inserted.values()}) == ROWS  # one transaction, distinct ids
    assert len({(e["source"]["file"], e["source"]["gtid"]) for e in inserted.values()}) == 1
    growth_mb = (peak_kb - before_kb) / 1024
    assert growth_mb < MAX_GROWTH_MB, f"reader RSS grew {growth_mb:.0f} MB during the {ROWS}-row transaction"


def test_16mb_rows_are_delivered_intact(config: Config, tmp_path: Path) -> None:
    db = config.settings.mysql.database
    # a 16 MB LONGBLOB and ~8 MB of utf8mb4 LONGTEXT per row; three rows, one after the other
    rows = {i: (os.urandom(16 * 1024 * 1024), (f"{i} 李雷 😀 " * 1_200_000)[: 4 * 1024 * 1024]) for i in (1, 2, 3)}
    with reader_process(config, tmp_path):
        wait_streaming(config, "blobs")
        conn = pymysql.connect(**ADMIN, database=db, autocommit=True, max_allowed_packet=64 * 1024 * 1024)
        try:
            for i, (blob, text) in rows.items():
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO blobs (id, data, doc) VALUES (%s, %s, %s)", (i, blob, text))
                wait_for(
                    lambda i=i: any(e["after"]["id"] == i for e in events(config, "blobs", idle=0.5)),
                    120,
                    interval=0.5,
                    what=f"big row {i}",
                )
        finally:
            conn.close()
    got = {e["after"]["id"]: e for e in events(config, "blobs") if e["after"]["id"] > 0}
    assert sorted(got) == [1, 2, 3]
    for i, (blob, text) in rows.items():
        assert base64.b64decode(got[i]["after"]["data"]) == blob
        assert got[i]["after"]["doc"] == text
        assert len(orjson.dumps(got[i])) < ROW_CHANGE_MAX_MESSAGE_BYTES


def test_full_producer_queue_makes_the_reader_wait_not_drop(config: Config) -> None:
    """With a local queue of 20 messages, produce() keeps raising BufferError: every row still arrives."""
    db = config.settings.mysql.database

    class CountingReader(BinlogReader):
        waits = 0

        def _produce_when_room(self, *args: Any) -> None:
            CountingReader.waits += 1
            super()._produce_when_room(*args)

    stop = threading.Event()
    reader = CountingReader(config.settings, config.rules, stop, producer_options={"queue.buffering.max.messages": 20})
    thread = threading.Thread(target=reader.run, daemon=True)
    thread.start()
    try:
        wait_streaming(config, "big")
        execute("INSERT INTO big (id, n, payload) SELECT seq, seq, 'p' FROM seq_1_to_3000", db)
        got = wait_for(
            lambda: (
                (e := [x for x in events(config, "big", idle=1.0) if x["after"]["id"] > 0]) and len(e) >= 3000 and e
            ),
            120,
            interval=1.0,
            what="3000 row changes",
        )
    finally:
        stop.set()
        thread.join(30)
    assert sorted(e["after"]["id"] for e in got) == list(range(1, 3001))
    assert not thread.is_alive() and reader.state == "stopped"
    assert CountingReader.waits > 0  # the queue really was full
