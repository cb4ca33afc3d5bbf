"""The real Debezium MySQL connector in Kafka Connect standalone, against the stack's MariaDB and Kafka.

Jars come from `python3 stack/stack.py install-connect` (Maven Central, cached under .state/connect).
Debezium 2.7.4's MySQL connector with connector.adapter=mariadb: 3.x's refuses MariaDB 10.11. One JVM
runs one connector per option combination, each with its own topic prefix, server id, offsets and
schema history under the test's folder; snapshot.mode=no_data, so each streams from the binlog's end.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from tests.support import REPO_ROOT, wait_for

# where `stack.py install-connect` puts them (its state folder: $CDCFLOW_STATE_DIR, else <repo>/.state)
CONNECT_LIBS = Path(os.environ.get("CDCFLOW_STATE_DIR") or REPO_ROOT / ".state").resolve() / "connect" / "libs"
STREAMING = re.compile(r"Connected to binlog at .* starting at")
# Spatial columns of each declared type, and a row of values for them (SRIDs 0, 4326 and 3857)
GEO_COLUMNS = (
    "id INT PRIMARY KEY, g GEOMETRY, p POINT, l LINESTRING, pg POLYGON, mp MULTIPOINT,"
    " ml MULTILINESTRING, mpg MULTIPOLYGON, gc GEOMETRYCOLLECTION, n GEOMETRY"
)
GEO_VALUES = (
    "ST_GeomFromText('POINT(1 2)'), ST_GeomFromText('POINT(1.5 -2.25)', 4326),"
    " ST_GeomFromText('LINESTRING(0 0, 1 1)'), ST_GeomFromText('POLYGON((0 0,1 0,1 1,0 0))', 3857),"
    " ST_GeomFromText('MULTIPOINT(1 1, 2 2)'), ST_GeomFromText('MULTILINESTRING((0 0,1 1),(2 2,3 3))'),"
    " ST_GeomFromText('MULTIPOLYGON(((0 0,1 0,1 1,0 0)))', 4326), ST_GeomFromText('GEOMETRYCOLLECTION(POINT(1 1))'),"
    " NULL"
)


def install_connect() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "stack" / "stack.py"), "install-connect"], capture_output=True, text=True
    )
    assert result.returncode == 0, f"stack.py install-connect failed:\n{result.stdout}\n{result.stderr}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _properties(path: Path, values: dict[str, str]) -> Path:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


class KafkaConnect:
    """`with KafkaConnect(folder, db, {prefix: options}) as connect:` returns once every connector streams."""

    def __init__(self, folder: Path, database: str, connectors: dict[str, dict[str, str]], server_id: int):
        self.folder, self.database, self.connectors, self.server_id = folder, database, connectors, server_id
        self.log = folder / "connect.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0

    def _worker(self) -> Path:
        return _properties(
            self.folder / "worker.properties",
            {
                "bootstrap.servers": "127.0.0.1:9092",
                "key.converter": "org.apache.kafka.connect.json.JsonConverter",
                "value.converter": "org.apache.kafka.connect.json.JsonConverter",
                "key.converter.schemas.enable": "false",
                "value.converter.schemas.enable": "false",
                "offset.storage.file.filename": str(self.folder / "offsets.dat"),
                "offset.flush.interval.ms": "1000",
                "listeners": f"http://127.0.0.1:{_free_port()}",
            },
        )

    def _connector(self, index: int, prefix: str, options: dict[str, str]) -> Path:
        return _properties(
            self.folder / f"{prefix}.properties",
            {
                "name": prefix,
                "connector.class": "io.debezium.connector.mysql.MySqlConnector",
                "tasks.max": "1",
                "connector.adapter": "mariadb",
                "database.hostname": "127.0.0.1",
                "database.port": "3307",
                "database.user": "cdcflow_reader",
                "database.password": "cdcflow_reader",
                "database.server.id": str(self.server_id + index),
                "topic.prefix": prefix,
                "database.include.list": self.database,
                "snapshot.mode": "no_data",
                # Only the test database's schema: the stack's MariaDB holds many other tests' databases.
                "schema.history.internal.store.only.captured.databases.ddl": "true",
                "schema.history.internal.store.only.captured.tables.ddl": "true",
                "schema.history.internal": "io.debezium.storage.file.history.FileSchemaHistory",
                "schema.history.internal.file.filename": str(self.folder / f"{prefix}.history"),
                **options,
            },
        )

    def _log4j(self) -> Path:
        return _properties(
            self.folder / "log4j2.properties",
            {
                "rootLogger.level": "INFO",
                "rootLogger.appenderRef.file.ref": "F",
                "appender.file.type": "File",
                "appender.file.name": "F",
                "appender.file.fileName": str(self.log),
                "appender.file.layout.type": "PatternLayout",
                "appender.file.layout.pattern": "%d %p %c{1} %m%n",
            },
        )

    def __enter__(self) -> KafkaConnect:
        started = time.monotonic()
        files = [self._connector(i, p, o) for i, (p, o) in enumerate(self.connectors.items())]
        command = [
            "java",
            "-Xmx768m",
            "-XX:-UsePerfData",
            f"-Djava.io.tmpdir={self.folder}",
            f"-Dlog4j2.configurationFile={self._log4j()}",
            "-cp",
            str(CONNECT_LIBS / "*"),
            "org.apache.kafka.connect.cli.ConnectStandalone",
            str(self._worker()),
            *map(str, files),
        ]
        with open(self.folder / "connect.out", "wb") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        wait_for(self._all_streaming, 120, interval=0.2, what="every Debezium connector to stream the binlog")
        self.startup_seconds = time.monotonic() - started
        return self

    def _all_streaming(self) -> bool:
        assert self.process is not None and self.process.poll() is None, f"Kafka Connect died: {self.tail()}"
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return len(STREAMING.findall(text)) >= len(self.connectors)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def errors(self) -> list[str]:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if " ERROR " in line]

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


# Kafka Connect's converter settings behind an option name the tests share with cdcflow's cdc.debezium
CONVERTER_OPTIONS = {
    "schemas.enable": {
        "key.converter": "org.apache.kafka.connect.json.JsonConverter",
        "value.converter": "org.apache.kafka.connect.json.JsonConverter",
        "key.converter.schemas.enable": "true",
        "value.converter.schemas.enable": "true",
    }
}


def connector_options(options: dict[str, str]) -> dict[str, str]:
    """A connector's config for Debezium options as cdcflow takes them (converter options spelled out)."""
    plain = {k: v for k, v in options.items() if k not in CONVERTER_OPTIONS}
    return plain | {k: v for name in options if name in CONVERTER_OPTIONS for k, v in CONVERTER_OPTIONS[name].items()}


def read_topics(topics: list[str], partitions: int) -> dict[str, list[tuple[Any, ...]]]:
    """topic -> [(partition, key, value, headers, key bytes)] in partition then offset order, up to the end now."""
    consumer = Consumer({"bootstrap.servers": "127.0.0.1:9092", "group.id": f"dbz-{uuid.uuid4().hex}"})
    got: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
    try:
        ends = {}
        for topic in topics:
            for p in range(partitions):
                high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
                if high > 0:
                    ends[(topic, p)] = high
        consumer.assign([TopicPartition(t, p, 0) for t, p in ends])
        left = dict(ends)
        while left:
            msg = consumer.poll(5)
            assert msg is not None and not msg.error(), f"unreadable: {msg and msg.error()}"
            topic, partition, offset = str(msg.topic()), int(msg.partition() or 0), int(msg.offset() or 0)
            if offset >= ends[(topic, partition)]:
                continue
            raw_value, raw_key = msg.value(), msg.key()
            value = orjson.loads(raw_value) if raw_value is not None else None
            key = orjson.loads(raw_key) if raw_key is not None else None
            got.setdefault((topic, partition), []).append((partition, key, value, msg.headers(), raw_key))
            if offset + 1 >= ends[(topic, partition)]:
                del left[(topic, partition)]
    finally:
        consumer.close()
    return {t: [m for p in range(partitions) for m in got.get((t, p), [])] for t in topics}


def diff(a: Any, b: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in {*a, *b} for d in diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b and type(a) is type(b) else [(path, a, b)]
