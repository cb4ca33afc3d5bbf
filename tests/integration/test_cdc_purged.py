"""A checkpoint the server cannot serve (purged, never existed, diverged): a clear stop, never a skip.

Purging binlogs on the shared MariaDB would break concurrent tests, so the checkpoint is pointed
at GTIDs the server answers exactly as for purged ones (error 1236).
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from cdc.checkpoint import CheckpointStore, Position
from cdc.errors import PositionLost
from schemas.config import Config
from tests.support import (
    consume_all,
    execute,
    items_config,
    mysql,
    wait_for,
)
from tests.support.cdc import cdc_process, run_until_it_stops


@pytest.fixture
def config(stack: None, tmp_path: Path) -> Iterator[Config]:
    with items_config("purged", tmp_path) as config:
        yield config


def server_gtid() -> tuple[int, int, int]:
    conn = mysql()
    with conn.cursor() as cur:
        cur.execute("SELECT @@global.gtid_binlog_pos")
        domain, server, seq = cur.fetchone()[0].split(",")[0].split("-")
    conn.close()
    return int(domain), int(server), int(seq)


def plant_checkpoint(config: Config, gtid: str) -> None:
    store = CheckpointStore(config.settings)
    store.ensure()
    producer = Producer(config.settings.kafka_config())
    store.save(producer, Position(file="mysql-bin.999999", pos=4, gtid_set=gtid))
    assert producer.flush(30) == 0


def rows_on_topic(config: Config) -> list[dict]:
    topic = config.settings.topics.row_changes(config.settings.mysql.database, "items")
    return [orjson.loads(m.value()) for m in consume_all(config, [topic], idle_seconds=1.0)]


def bogus_gtids() -> dict[str, str]:
    domain, server, seq = server_gtid()
    return {
        "ahead": f"{domain}-{server}-{seq + 10**9}",  # like a checkpoint from a reset server
        "diverged": f"{domain}-{server + 4242}-1",
    }  # like a GTID whose binlog was purged


@pytest.mark.parametrize("case", ["ahead", "diverged"])
def test_unavailable_checkpoint_stops_with_a_clear_error(config: Config, case: str) -> None:
    gtid = bogus_gtids()[case]
    plant_checkpoint(config, gtid)
    execute("INSERT INTO items VALUES (1)", config.settings.mysql.database)
    error = run_until_it_stops(config)
    assert isinstance(error, PositionLost), error
    message = str(error)
    assert gtid in message and "not available on the source server" in message
    assert "cdcflow cdc snapshot" in message and "cdcflow cdc run --from-now" in message
    assert rows_on_topic(config) == []  # nothing skipped to, nothing sent
    assert CheckpointStore(config.settings).load().gtid_set == gtid  # the checkpoint is left as it was


def cli(config: Config, *args: str) -> subprocess.Popen[str]:
    return cdc_process(config, "run", *args)


def test_cli_refuses_then_from_now_overwrites_the_checkpoint_loudly(config: Config) -> None:
    gtid = bogus_gtids()["ahead"]
    plant_checkpoint(config, gtid)
    db = config.settings.mysql.database
    execute("INSERT INTO items VALUES (1)", db)  # in the gap: never sent

    refused = cli(config)
    out, err = refused.communicate(timeout=90)
    assert refused.returncode == 1, (out, err)
    assert gtid in err and "--from-now" in err and "snapshot" in err

    started = cli(config, "--from-now")
    try:
        wait_for(
            lambda: (p := CheckpointStore(config.settings).load()) and p.gtid_set != gtid,
            60,
            interval=0.5,
            what="--from-now to overwrite the checkpoint",
        )
        execute("INSERT INTO items VALUES (2)", db)
        got = wait_for(lambda: rows_on_topic(config), 30, what="the row written after --from-now")
        assert [e["after"]["id"] for e in got] == [2]
    finally:
        started.send_signal(signal.SIGTERM)
        out, err = started.communicate(timeout=60)
    assert started.returncode == 0, err
    assert "DISCARDING checkpoint" in err and gtid in err
