"""kill -9 of the reader process at random moments under a multi-table write load, restarted each
time: every committed change is in Kafka exactly once after dedup by event id, re-sent rows keep
their event id. Checked against the tables themselves (see tests/support/cdc_load.assert_exactly_once)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cdc.checkpoint import CheckpointStore
from schemas.config import Config
from tests.support import REPO_ROOT, execute, remove_test_resources, wait_for, write_config
from tests.support.cdc_load import WriteLoad, create_load_tables, load_config_data, wait_until_caught_up

KILLS = 5


@pytest.fixture
def config(stack: None, tmp_path: Path) -> Config:
    data = load_config_data("kill")
    create_load_tables(data["mysql"]["database"])
    config = write_config(tmp_path, data)
    yield config
    execute(f"DROP DATABASE IF EXISTS {data['mysql']['database']}")
    remove_test_resources(config.settings, [])  # the reader's status key


def start_reader(config: Config, log_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "console.cli", "--config", str(config.path), "cdc", "run"],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log_path.open("a"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_kill_9_at_random_moments_loses_and_doubles_nothing(config: Config, tmp_path: Path) -> None:
    db = config.settings.mysql.database
    log_path = tmp_path / "reader.log"
    rng = random.Random()
    seed = rng.randrange(10**6)
    rng.seed(seed)
    # the first reader must have checkpointed its start before any row is written: with no
    # checkpoint a reader starts at "now", and rows before that are (rightly) not its business
    reader = start_reader(config, log_path)
    try:
        wait_for(
            lambda: CheckpointStore(config.settings).load(timeout=2), 60, interval=0.5, what="the first checkpoint"
        )
        with WriteLoad(db) as load:
            wait_for(lambda: load.commits >= 50, 60, what="load to start")
            for _ in range(KILLS):
                # from "still starting up" to "well into streaming"
                try:
                    reader.wait(rng.uniform(0.3, 4.0))
                except subprocess.TimeoutExpired:
                    pass
                assert reader.poll() is None, f"the reader died by itself (seed {seed}): {log_path.read_text()[-2000:]}"
                reader.send_signal(signal.SIGKILL)
                reader.wait(10)
                reader = start_reader(config, log_path)
            wait_for(lambda: load.commits >= 500, 120, what="enough load")
        result = wait_until_caught_up(config, db)
    finally:
        if reader.poll() is None:
            reader.send_signal(signal.SIGTERM)
            try:
                reader.wait(60)
            except subprocess.TimeoutExpired:
                reader.kill()
                reader.wait(10)
    assert reader.returncode == 0, log_path.read_text()[-2000:]
    print(f"kill -9 x{KILLS} (seed {seed}): commits={load.commits} {result}")
