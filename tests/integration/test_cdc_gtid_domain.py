"""A MariaDB checkpoint naming a GTID domain the server does not know: a clear stop, never a silent resume.

MariaDB itself accepts such a position (it ignores the domain), so nothing on the shared server has
to be purged or reset to reproduce it: the checkpoint is planted with an extra, unknown domain.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from cdc.checkpoint import CheckpointStore, Position
from cdc.errors import GtidDomainUnknown
from cdc.status import read_status
from console.cli import cli
from schemas.config import Config
from tests.support import consume_all, execute, items_config, mysql
from tests.support.cdc import run_until_it_stops


@pytest.fixture
def config(stack: None, tmp_path: Path) -> Iterator[Config]:
    with items_config("gtiddom", tmp_path) as config:
        yield config


def plant_checkpoint_with_unknown_domain(config: Config) -> str:
    conn = mysql()
    with conn.cursor() as cur:
        cur.execute("SELECT @@global.gtid_binlog_state")
        state = cur.fetchone()[0]
    conn.close()
    known = {int(g.split("-")[0]) for g in state.split(",") if g}
    domain = max(known) + 4242
    gtid_set = f"{state},{domain}-1-5"
    store = CheckpointStore(config.settings)
    store.ensure()
    producer = Producer(config.settings.kafka_config())
    store.save(producer, Position(file="mysql-bin.000001", pos=4, gtid_set=gtid_set))
    assert producer.flush(30) == 0
    return gtid_set


def test_unknown_gtid_domain_stops_the_reader_naming_the_domain(config: Config) -> None:
    gtid_set = plant_checkpoint_with_unknown_domain(config)
    domain = gtid_set.rsplit(",", 1)[1].split("-")[0]
    execute("INSERT INTO items VALUES (1)", config.settings.mysql.database)
    error = run_until_it_stops(config)  # never resumes from a position in an unknown GTID domain
    assert isinstance(error, GtidDomainUnknown), error
    message = str(error)
    assert f"GTID domain {domain} of the checkpoint ({domain}-1-5) is unknown to the source server" in message
    assert "cdcflow cdc snapshot" in message and "cdcflow cdc run --from-now" in message
    topic = config.settings.topics.row_changes(config.settings.mysql.database, "items")
    assert list(consume_all(config, [topic], idle_seconds=1.0)) == []  # nothing sent
    assert CheckpointStore(config.settings).load().gtid_set == gtid_set  # left as it was
    status = read_status(config.settings)
    assert status["state"] == "stopped: position lost" and f"GTID domain {domain}" in status["last_error"]

    result = CliRunner().invoke(cli, ["--config", str(config.path), "cdc", "run"])
    assert result.exit_code == 1 and f"GTID domain {domain} of the checkpoint" in result.output
