"""`cdcflow cdc status`: the reader's figures, published to Redis while it runs."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from cdc.status import read_status
from schemas.config import Config
from tests.support import REPO_ROOT, items_config, mysql, wait_for
from tests.support.cdc import ReaderThread


@pytest.fixture
def config(stack: None, tmp_path: Path) -> Iterator[Config]:
    with items_config("status", tmp_path) as config:
        yield config


def gtid_seqs(gtid_set: str) -> dict[str, int]:
    """MariaDB GTID set "0-1-42,1-7-3" -> {domain: seq}."""
    return {d: int(seq) for d, _server, seq in (g.split("-") for g in gtid_set.split(",") if g)}


def cli_status(config: Config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "console.cli", "--config", str(config.path), "cdc", "status", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_shows_position_lag_rate_and_stops(config: Config) -> None:
    assert cli_status(config).returncode == 1  # never ran: says so instead of printing zeros
    db = config.settings.mysql.database
    with ReaderThread(config) as reader:
        conn = mysql(db)
        with conn.cursor() as cur:
            for i in range(50):
                cur.execute(f"INSERT INTO items VALUES ({i})")
            cur.execute("SELECT @@last_gtid")
            domain, _server, last_seq = cur.fetchone()[0].split("-")
        conn.close()
        live = wait_for(
            lambda: (s := read_status(config.settings)) and s["rows_acked"] >= 50 and s,
            30,
            what="status with the 50 rows",
        )
        assert live["state"] == "running" and live["name"] == config.settings.cdc.name
        # Other tests' transactions move the server's GTIDs on concurrently, so the published set is
        # checked to lie between our last insert and the reader's position now.
        published = gtid_seqs(live["gtid_set"])
        assert int(last_seq) <= published[domain] <= gtid_seqs(reader.reader.stats.position.gtid_set)[domain]
        assert live["position"].startswith("mysql-bin.")
        assert live["last_error"] is None
        # idle: heartbeats say the reader is caught up, so the lag is 0, not "time since the last row"
        time.sleep(2.5)
        idle = wait_for(
            lambda: (s := read_status(config.settings)) and s["lag_ms"] == 0 and s, 10, what="lag 0 once idle"
        )
        assert idle["updated_ms"] > live["updated_ms"]
        shown = cli_status(config)
        assert shown.returncode == 0, shown.stderr
        assert re.search(rf"\b{domain}-\d+-\d+", shown.stdout), shown.stdout
        assert "0 ms behind source" in shown.stdout and "rows/s" in shown.stdout
        raw = orjson.loads(cli_status(config, "--json").stdout)
        assert raw["rows_acked"] == 50
    assert read_status(config.settings)["state"] == "stopped"
