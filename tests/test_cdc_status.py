"""`cdcflow cdc status`: the reader's figures, published to Redis while it runs."""
from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from cdc.status import read_status
from schemas.config import Config
from tests.support import REPO_ROOT, execute, items_config, wait_for
from tests.test_cdc_reader import ReaderThread

pytestmark = pytest.mark.integration


@pytest.fixture
def config(stack: None, tmp_path: Path) -> Iterator[Config]:
    with items_config("status", tmp_path) as config:
        yield config


def cli_status(config: Config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "schemas.cli", "--config", str(config.path), "cdc", "status", *args],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)


def test_status_shows_position_lag_rate_and_stops(config: Config) -> None:
    assert cli_status(config).returncode == 1  # never ran: says so instead of printing zeros
    db = config.settings.mysql.database
    with ReaderThread(config) as reader:
        execute([f"INSERT INTO items VALUES ({i})" for i in range(50)], db)
        live = wait_for(lambda: (s := read_status(config.settings)) and s["rows_acked"] >= 50 and s, 30,
                        what="status with the 50 rows")
        assert live["state"] == "running" and live["name"] == config.settings.cdc.name
        assert live["gtid_set"] == reader.reader.stats.position.gtid_set and live["position"].startswith("mysql-bin.")
        assert live["last_error"] is None
        # idle: heartbeats say the reader is caught up, so the lag is 0, not "time since the last row"
        time.sleep(2.5)
        idle = wait_for(lambda: (s := read_status(config.settings)) and s["lag_ms"] == 0 and s, 10,
                        what="lag 0 once idle")
        assert idle["updated_ms"] > live["updated_ms"]
        shown = cli_status(config)
        assert shown.returncode == 0, shown.stderr
        assert live["gtid_set"] in shown.stdout and "0 ms behind source" in shown.stdout and "rows/s" in shown.stdout
        raw = orjson.loads(cli_status(config, "--json").stdout)
        assert raw["rows_acked"] == 50
    assert read_status(config.settings)["state"] == "stopped"
