"""Harnesses for the cdc reader tests: the reader in a thread, and every MySQL type family as
(column type, SQL literal, expected JSON value) with the rows that exercise them."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import pymysql

from cdc.checkpoint import CheckpointStore
from cdc.reader import BinlogReader
from cdc.snapshot import progress_key
from schemas.config import Config
from tests.support import REPO_ROOT, wait_for


class ReaderThread:
    def __init__(self, config: Config):
        self.stop = threading.Event()
        self.reader = BinlogReader(config.settings, config.rules, self.stop)
        self.thread = threading.Thread(target=self.reader.run, daemon=True)

    def __enter__(self) -> ReaderThread:
        self.thread.start()
        wait_for(lambda: self.reader.stats.checkpoint is not None, 60, what="the reader to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "reader did not stop"


def run_until_it_stops(config: Config) -> BaseException | None:
    """A reader in a thread, given 60 s to stop by itself; what it raised (None if it returned)."""
    reader = BinlogReader(config.settings, config.rules, threading.Event())
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            reader.run()
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the reader kept retrying a position the server cannot serve"
    return outcome[0] if outcome else None


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# family -> [(column type, SQL literal, expected JSON value)]
FAMILIES: dict[str, list[tuple[str, str, Any]]] = {
    "integers": [
        ("TINYINT", "-128", -128),
        ("TINYINT UNSIGNED", "255", 255),
        ("SMALLINT", "-32768", -32768),
        ("SMALLINT UNSIGNED", "65535", 65535),
        ("MEDIUMINT", "-8388608", -8388608),
        ("MEDIUMINT UNSIGNED", "16777215", 16777215),
        ("INT", "-2147483648", -2147483648),
        ("INT UNSIGNED", "4294967295", 4294967295),
        ("BIGINT", "-9223372036854775808", -9223372036854775808),
        ("BIGINT UNSIGNED", "18446744073709551615", 18446744073709551615),
        ("BOOLEAN", "TRUE", 1),
    ],
    "decimal": [
        ("DECIMAL(10,2)", "-1.5", "-1.50"),
        ("DECIMAL(10,2)", "12345678.99", "12345678.99"),
        ("DECIMAL(5,0)", "0", "0"),
        ("NUMERIC(30,10)", "-12345678901234567890.1234567890", "-12345678901234567890.1234567890"),
        ("DECIMAL(65,30)", "0.000000000000000000000000000001", "0.000000000000000000000000000001"),
    ],
    "float_double": [
        ("FLOAT", "1.1", 1.1),
        ("FLOAT", "-3.40282e38", -3.40282e38),
        ("FLOAT", "0", 0.0),
        ("DOUBLE", "1.1", 1.1),
        ("DOUBLE", "-1.7976931348623157e308", -1.7976931348623157e308),
        ("DOUBLE", "5e-324", 5e-324),
    ],
    "bit": [
        ("BIT(1)", "b'1'", 1),
        ("BIT(10)", "b'1000000001'", 513),
        ("BIT(8)", "b'0'", 0),
        ("BIT(64)", "b'" + "1" * 64 + "'", 2**64 - 1),
        ("BIT(17)", "b'10000000000000001'", 65537),
    ],
    "date": [
        ("DATE", "'2024-02-29'", "2024-02-29"),
        ("DATE", "'1000-01-01'", "1000-01-01"),
        ("DATE", "'9999-12-31'", "9999-12-31"),
        ("DATE", "'0000-00-00'", None),
    ],
    "time": [
        ("TIME", "'-838:59:59'", "-838:59:59"),
        ("TIME", "'838:59:59'", "838:59:59"),
        ("TIME", "'00:00:00'", "00:00:00"),
        ("TIME(6)", "'-838:59:58.999999'", "-838:59:58.999999"),
        ("TIME(6)", "'-00:00:00.5'", "-00:00:00.500000"),
        ("TIME(3)", "'25:00:00.123'", "25:00:00.123"),
        ("TIME(1)", "'-01:00:00.1'", "-01:00:00.1"),
        ("TIME(2)", "'-12:34:56.78'", "-12:34:56.78"),
        ("TIME(4)", "'-100:00:01.0001'", "-100:00:01.0001"),
        ("TIME(5)", "'-00:00:01.00001'", "-00:00:01.00001"),
    ],
    # MariaDB truncates extra fractional digits (unless sql_mode TIME_ROUND_FRACTIONAL); MySQL rounds
    "datetime": [
        *(
            (f"DATETIME({fsp})", "'2024-01-02 03:04:05.123456'", f"2024-01-02T03:04:05{frac}")
            for fsp, frac in [(0, ""), (1, ".1"), (2, ".12"), (3, ".123"), (4, ".1234"), (5, ".12345"), (6, ".123456")]
        ),
        ("DATETIME(6)", "'2024-01-02 03:04:05.000001'", "2024-01-02T03:04:05.000001"),
        ("DATETIME", "'0000-00-00 00:00:00'", None),
        ("DATETIME", "'1000-01-01 00:00:00'", "1000-01-01T00:00:00"),
    ],
    # written with the session in +08:00: the binlog holds UTC and so must the event
    "timestamp": [
        ("TIMESTAMP NULL", "'2024-01-02 11:04:05'", "2024-01-02T03:04:05Z"),
        ("TIMESTAMP(1) NULL", "'2024-01-02 11:04:05.5'", "2024-01-02T03:04:05.5Z"),
        ("TIMESTAMP(6) NULL", "'2038-01-19 11:14:07.999999'", "2038-01-19T03:14:07.999999Z"),
        ("TIMESTAMP NULL", "'0000-00-00 00:00:00'", None),
        ("TIMESTAMP NULL", "'1970-01-01 08:00:01'", "1970-01-01T00:00:01Z"),
    ],
    "year": [("YEAR", "2024", 2024), ("YEAR", "1901", 1901), ("YEAR", "2155", 2155), ("YEAR", "0", None)],
    "text": [
        ("VARCHAR(50) CHARACTER SET utf8mb4", "'李雷 😀 한국어'", "李雷 😀 한국어"),
        ("CHAR(10) CHARACTER SET utf8mb4", "'ab'", "ab"),
        ("TEXT CHARACTER SET utf8mb4", "'𠜎 emoji 🎉'", "𠜎 emoji 🎉"),
        ("LONGTEXT", "REPEAT('x', 70000)", "x" * 70000),
        ("VARCHAR(20) CHARACTER SET latin1", "'café'", "café"),
        ("VARCHAR(300) CHARACTER SET utf8mb4", "''", ""),
    ],
    "binary": [
        ("BINARY(4)", "'ab'", b64(b"ab\0\0")),
        ("VARBINARY(10)", "x'00ff'", b64(b"\x00\xff")),
        ("BLOB", "x'deadbeef'", b64(b"\xde\xad\xbe\xef")),
        ("TINYBLOB", "''", ""),
        ("LONGBLOB", "x'00'", b64(b"\0")),
        ("CHAR(3) CHARACTER SET binary", "'a'", b64(b"a\0\0")),
        ("MEDIUMBLOB", "'李'", b64("李".encode())),
    ],
    "json": [
        ("JSON", """'{"a": [1, "x", null, true], "k": {"z": 1.5}}'""", {"a": [1, "x", None, True], "k": {"z": 1.5}}),
        ("JSON", "'[]'", []),
        ("JSON", """'"s😀"'""", "s😀"),
        ("JSON", "'12.5'", 12.5),
    ],
    "enum": [("ENUM('x','y')", "'y'", "y"), ("ENUM('x','y')", "'nope'", ""), ("ENUM('李','😀')", "'😀'", "😀")],
    "set": [
        ("SET('z','a','m')", "'m,z'", "z,m"),
        ("SET('z','a','m')", "''", ""),
        ("SET('z','a','m')", "'a,m,z'", "z,a,m"),
        ("SET('b','a')", "'a'", "a"),
    ],
}


def insert_family_rows(cur: pymysql.cursors.Cursor) -> None:
    """Per family table f_<family>: row 1 with every column set, row 2 all NULL
    (session zone +08:00, loose sql_mode)."""
    cur.execute("SET SESSION sql_mode = '', time_zone = '+08:00'")
    for family, cols in FAMILIES.items():
        names = ", ".join(f"c{i}" for i in range(len(cols)))
        cur.execute(f"INSERT INTO f_{family} (id, {names}) VALUES (1, {', '.join(v for _, v, _ in cols)})")
        cur.execute(f"INSERT INTO f_{family} (id) VALUES (2)")


def snapshot_process(config: Config, *args: str) -> subprocess.Popen[str]:
    """`cdcflow cdc snapshot ARGS` in its own process (so a test can kill -9 it), output piped."""
    return cdc_process(config, "snapshot", *args)


def cdc_process(config: Config, command: str, *args: str) -> subprocess.Popen[str]:
    """`cdcflow cdc COMMAND ARGS` in its own process, output piped."""
    return subprocess.Popen(
        [sys.executable, "-m", "console.cli", "--config", str(config.path), "cdc", command, *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def kill_once_acknowledged(
    snapshot: subprocess.Popen[str], config: Config, rows: int, total: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """SIGKILL a running snapshot once Kafka has acknowledged `rows` of its `total`: (its progress
    when seen past `rows`, its progress after the kill, which must be unfinished)."""
    store = CheckpointStore(config.settings)
    progress = wait_for(
        lambda: (
            (p := store.load_value(progress_key(config.settings), timeout=2)) and sum(p["rows"].values()) >= rows and p
        ),
        120,
        interval=0.1,
        what=f"{rows} acknowledged rows",
    )
    snapshot.send_signal(signal.SIGKILL)
    snapshot.communicate(timeout=30)
    killed_at = store.load_value(progress_key(config.settings))
    assert not killed_at["finished"] and sum(killed_at["rows"].values()) < total, "it finished before the kill"
    return progress, killed_at
