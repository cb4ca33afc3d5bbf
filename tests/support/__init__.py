"""Shared test helpers: per-test isolated config (own topics, db, groups, Redis keys) on the real stack."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pymysql
import redis
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from cdc.checkpoint import CheckpointStore
from plugins.pool import WorkerPool, WorkerSpec
from plugins.registry import LoadedPlugin, load_plugin, worker_target
from plugins.venvs import ensure_venv, venv_python
from schemas.config import Config, load_config, parse_settings
from schemas.invocation import invocation_id_for
from schemas.runtime.kafka_topics import ensure_topics
from schemas.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
STATE = REPO_ROOT / ".state"
EXAMPLES_DIR = REPO_ROOT / "plugins" / "examples"
# Venvs are keyed by dependencies + python version, so sharing them across tests and sessions is safe.
TEST_VENV_DIR = STATE / "test-venvs"
ADMIN = {"host": "127.0.0.1", "port": 3307, "user": "cdcflow", "password": "cdcflow", "charset": "utf8mb4"}


def isolated_config_data(
    tag: str = "t", rules: dict[str, Any] | None = None, plugin_dirs: list[Path] | None = None
) -> dict[str, Any]:
    """Config file contents whose topics, database, groups, state and Redis keys no other test shares."""
    uid = f"{tag}{uuid.uuid4().hex[:8]}"
    return {
        "kafka": {"bootstrap_servers": "127.0.0.1:9092", "partitions": 2},
        "mysql": {
            "host": "127.0.0.1",
            "port": 3307,
            "user": "cdcflow_reader",
            "password": "cdcflow_reader",
            "database": f"t_{uid}",
            "server_id": random.randint(10_000, 4_000_000),
        },
        "redis": {"url": "redis://127.0.0.1:6380/0", "key_prefix": f"test:{uid}"},
        "topics": {
            "cdc_prefix": f"test.{uid}.cdc",
            "invoke_prefix": f"test.{uid}.invoke",
            "triggers": f"test.{uid}.triggers",
            "results": f"test.{uid}.results",
            "dlq": f"test.{uid}.dlq",
            "cdc_checkpoints": f"test.{uid}.checkpoints",
        },
        "cdc": {"name": f"test-{uid}", "checkpoint_interval_ms": 100},
        "streams": {"app_id": f"test-{uid}-streams", "state_dir": str(STATE / "test-streams" / uid), "web_port": 0},
        "runners": {
            "group_id": f"test-{uid}-runners",
            "plugin_dirs": [str(p) for p in plugin_dirs or [EXAMPLES_DIR]],
            "venv_dir": str(TEST_VENV_DIR),
        },
        # no HTTP servers by default: parallel tests would fight over the ports (heartbeats still go to Redis)
        "observability": {"reader_port": 0, "streams_port": 0, "runners_port": 0},
        **(rules or {}),
    }


def isolated_settings(tag: str = "t") -> Settings:
    """Settings only (no rules) with the isolation of isolated_config_data."""
    return parse_settings(isolated_config_data(tag), "test settings", REPO_ROOT)


def write_config(directory: Path, data: dict[str, Any]) -> Config:
    path = directory / "cdcflow.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return load_config(path)


def mysql(database: str | None = None) -> pymysql.connections.Connection:
    return pymysql.connect(**ADMIN, database=database, autocommit=True)


def execute(sql: str | list[str], database: str | None = None) -> None:
    conn = mysql(database)
    try:
        with conn.cursor() as cur:
            for statement in [sql] if isinstance(sql, str) else sql:
                cur.execute(statement)
    finally:
        conn.close()


def wait_for(
    condition: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def consume_all(
    config: Config, topics: list[str], idle_seconds: float = 2.0, max_seconds: float = 60.0
) -> Iterator[Any]:
    """Every message on `topics` from the beginning: read to each partition's end, then until none
    arrives for `idle_seconds`.

    Partitions are assigned, not subscribed: a group join can take longer than a short idle window
    on a loaded machine, and a reader that gave up before its assignment answered "no messages"."""
    consumer = Consumer(
        config.settings.kafka_config(
            **{
                "group.id": f"test-reader-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
    )
    metadata = consumer.list_topics(timeout=30)
    partitions = [
        TopicPartition(t, p, OFFSET_BEGINNING)
        for t in topics
        if t in metadata.topics and metadata.topics[t].error is None
        for p in metadata.topics[t].partitions
    ]
    at_end = {(tp.topic, tp.partition): False for tp in partitions}
    consumer.assign(partitions)
    try:
        deadline = time.monotonic() + max_seconds
        last = time.monotonic()
        while time.monotonic() < deadline and not (all(at_end.values()) and time.monotonic() - last >= idle_seconds):
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            slot = (msg.topic(), msg.partition())
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    at_end[slot] = True
                continue
            at_end[slot] = False
            last = time.monotonic()
            yield msg
    finally:
        consumer.close()


def example_plugin(name: str) -> LoadedPlugin:
    return load_plugin(EXAMPLES_DIR / name)


@contextmanager
def plugin_pool(plugin: LoadedPlugin, size: int | None = None, venv_dir: Path = TEST_VENV_DIR) -> Iterator[WorkerPool]:
    """A warm pool of the plugin's workers in its own venv (built once, cached across sessions)."""
    venv = ensure_venv(venv_dir, plugin.manifest.dependencies)
    pool = WorkerPool(
        WorkerSpec(
            plugin.name,
            venv_python(venv),
            plugin.path,
            worker_target(plugin.manifest),
            memory_limit_mb=plugin.manifest.memory_limit_mb,
        ),
        size or plugin.manifest.concurrency,
    )
    pool.start()
    try:
        yield pool
    finally:
        pool.close()


def remove_test_resources(settings: Settings, topics: list[str]) -> None:
    """Delete a test's topics and Redis keys (best effort: a leftover is harmless, only untidy)."""
    if topics:
        admin = AdminClient(settings.kafka_config())
        for future in admin.delete_topics(topics, operation_timeout=10).values():
            try:
                future.result()
            except Exception:
                pass
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    keys = list(client.scan_iter(match=f"{settings.redis.key_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def produce_row_changes(
    producer: Producer,
    topic: str,
    rows: int,
    changes: int,
    pause: float,
    expected: list[str],
    rule: str = "r",
    plugin: str = "echo",
) -> None:
    """`changes` rounds of one update per row of shop.orders, with increasing binlog positions.

    Appends to `expected` the invocation id each change must yield (rule, plugin, event id), as it
    goes, so a test can compare while the stream still runs.
    """
    pos = 1000
    for n in range(changes):
        for row in range(rows):
            pos += 10
            event_id = f"1:mysql-bin.000001:{pos}:0"
            expected.append(invocation_id_for("cdc", rule, plugin, event_id))
            producer.produce(
                topic,
                key=orjson.dumps({"id": row}),
                value=orjson.dumps(
                    {
                        "before": None,
                        "after": {"id": row, "n": n},
                        "op": "u",
                        "ts_ms": 1,
                        "event_id": event_id,
                        "source": {"db": "shop", "table": "orders"},
                    }
                ),
            )
        producer.flush(10)
        time.sleep(pause)


@contextmanager
def topics_config(
    directory: Path,
    tag: str,
    rules: dict[str, Any],
    topics_of: Callable[[Settings], list[str]],
    partitions: int | None = None,
    leftovers: Callable[[Settings], list[str]] = lambda s: [],
) -> Iterator[Config]:
    """An isolated config whose topics `topics_of` names are created first (with `partitions`); they,
    the `leftovers` a test may create, and the test's Redis keys are removed afterwards."""
    config = write_config(directory, isolated_config_data(tag, rules))
    topics = topics_of(config.settings)
    ensure_topics(config.settings, topics, partitions=partitions)
    try:
        yield config
    finally:
        remove_test_resources(config.settings, [*topics, *leftovers(config.settings)])


@contextmanager
def items_config(tag: str, directory: Path) -> Iterator[Config]:
    """An isolated config whose one rule watches a fresh `items (id INT PRIMARY KEY)` table;
    the database and the test's Redis keys are removed afterwards."""
    data = isolated_config_data(tag, {"monitored_tables": {"items": {"triggers": ["echo"]}}})
    db = data["mysql"]["database"]
    execute([f"CREATE DATABASE {db}", f"CREATE TABLE {db}.items (id INT PRIMARY KEY)"])
    config = write_config(directory, data)
    try:
        yield config
    finally:
        execute(f"DROP DATABASE IF EXISTS {db}")
        remove_test_resources(config.settings, [])


@contextmanager
def cdcflow_running(config: Config, log_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`cdcflow run` (reader, streams worker, runners) with this config, the way a user starts it.

    Ready once the reader made its first checkpoint; on leaving, Ctrl-C, the log's end printed, and
    a failure if the pipeline did not stop cleanly.
    """
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "console.cli", "--config", str(config.path), "run"],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ},
        )
        try:
            wait_for(
                lambda: process.poll() is None and CheckpointStore(config.settings).load(),
                120,
                interval=0.5,
                what="the reader's first checkpoint",
            )
            yield process
        finally:
            process.send_signal(signal.SIGINT)
            try:
                code = process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                code = None
            print(log_path.read_text(errors="replace")[-6000:])
    assert code == 0, "`cdcflow run` did not stop cleanly on Ctrl-C"
