"""A network drop that never closes the TCP connection: the reader notices the silence and reconnects.

The reader talks to MariaDB through a small TCP proxy in this test. "Dropping" the network blackholes
the connections open at that moment (bytes are no longer relayed, nothing is closed, just as when
a cable or a NAT entry goes away); connections made afterwards are relayed again. Without a read
timeout the binlog socket would wait forever.
"""

from __future__ import annotations

import logging
import socket
import threading
from pathlib import Path

import orjson
import pytest

from schemas.config import Config
from tests.support import (
    consume_all,
    execute,
    isolated_config_data,
    remove_test_resources,
    wait_for,
    write_config,
)
from tests.support.cdc import ReaderThread


class BlackholingProxy:
    """127.0.0.1:<port> -> MariaDB; `drop()` silently stops relaying every connection open now."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.generation = 0
        self.connections = 0
        self.held: list[socket.socket] = []  # blackholed sockets, kept open on purpose
        threading.Thread(target=self._accept, daemon=True).start()

    def drop(self) -> None:
        self.generation += 1

    def close(self) -> None:
        self.listener.close()
        for s in self.held:
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            self.connections += 1
            generation = self.generation
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._relay, args=(a, b, generation), daemon=True).start()

    def _relay(self, source: socket.socket, sink: socket.socket, generation: int) -> None:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                return
            if not data:
                sink.close()
                return
            if generation != self.generation:  # dropped: swallow everything, close nothing
                self.held += [source, sink]
                return
            try:
                sink.sendall(data)
            except OSError:
                return


@pytest.fixture
def proxied_config(stack: None, tmp_path: Path):
    data = isolated_config_data("net", {"monitored_tables": {"items": {"triggers": ["echo"]}}})
    proxy = BlackholingProxy(("127.0.0.1", data["mysql"]["port"]))
    data["mysql"].update(port=proxy.port, read_timeout_s=3)
    db = data["mysql"]["database"]
    execute([f"CREATE DATABASE {db}", f"CREATE TABLE {db}.items (id INT PRIMARY KEY, n INT)"])
    config = write_config(tmp_path, data)
    yield config, proxy
    proxy.close()
    execute(f"DROP DATABASE IF EXISTS {db}")
    remove_test_resources(config.settings, [])


def ids_in_kafka(config: Config) -> set[int]:
    topic = config.settings.topics.row_changes(config.settings.mysql.database, "items")
    return {orjson.loads(m.value())["after"]["id"] for m in consume_all(config, [topic], idle_seconds=1.0)}


def test_silent_network_drop_is_detected_and_the_reader_reconnects(
    proxied_config: tuple[Config, BlackholingProxy], caplog: pytest.LogCaptureFixture
) -> None:
    config, proxy = proxied_config
    caplog.set_level(logging.WARNING, logger="cdc.reader")
    db = config.settings.mysql.database
    with ReaderThread(config) as reader:
        execute([f"INSERT INTO {db}.items VALUES ({i}, {i})" for i in range(10)])
        wait_for(lambda: ids_in_kafka(config) == set(range(10)), 30, what="rows before the drop")
        before = proxy.connections
        proxy.drop()
        execute([f"INSERT INTO {db}.items VALUES ({i}, {i})" for i in range(10, 20)])
        # read_timeout_s=3: the silence is noticed and a new connection made through the proxy
        wait_for(lambda: ids_in_kafka(config) == set(range(20)), 60, interval=0.5, what="rows after the drop")
        assert proxy.connections > before, "the rows came without a new connection: the drop was not real"
        assert reader.thread.is_alive()
    lost = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("unavailable" in m or "lost" in m.lower() for m in lost), lost
