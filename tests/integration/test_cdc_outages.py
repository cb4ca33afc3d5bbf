"""Source and broker outages under a sustained write load: nothing lost, nothing doubled after dedup.

CROSS-TEST RISK: these tests stop and restart the shared MariaDB / Kafka of the local stack, so any
other test running at the same moment sees that outage. They are kept here, in one file, so they
can be run (or excluded) together: `pytest tests/integration/test_cdc_outages.py`.

The proof compares the database's own final table contents with the state rebuilt from the Kafka
events after de-duplication by event id — not with the reader's counters or the writer's notes.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schemas.config import Config
from tests.support import (
    REPO_ROOT,
    execute,
    remove_test_resources,
    wait_for,
    write_config,
)
from tests.support.cdc import ReaderThread
from tests.support.cdc_load import WriteLoad, create_load_tables, load_config_data, wait_until_caught_up


def stack_ctl(action: str, service: str) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "stack" / "stack.py"), action, service],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture
def config(stack: None, tmp_path: Path) -> Config:
    data = load_config_data("outage")
    db = data["mysql"]["database"]
    create_load_tables(db)
    config = write_config(tmp_path, data)
    yield config
    stack_ctl("up", "mariadb")  # whatever happened, leave the stack running for the tests after us
    stack_ctl("up", "kafka")
    remove_test_resources(config.settings, [])  # the reader's status key
    execute(f"DROP DATABASE IF EXISTS {db}")


def test_mariadb_restart_during_load(config: Config, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="cdc.reader")
    db = config.settings.mysql.database
    with ReaderThread(config) as reader, WriteLoad(db) as load:
        wait_for(lambda: load.commits >= 100, 60, what="load before the outage")
        stack_ctl("down", "mariadb")
        time.sleep(4)
        stack_ctl("up", "mariadb")
        before = load.commits
        wait_for(lambda: load.commits >= before + 100, 120, what="load after the outage")
        load.stop.set()
        load.thread.join(30)
        result = wait_until_caught_up(config, db)
        assert reader.thread.is_alive()
    waits = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert waits, "the reader did not say what it waits for"
    assert len(waits) < 20, f"{len(waits)} reconnect attempts in a few seconds: spinning"
    assert load.errors > 0, "the outage did not hit the writer: the test proved nothing"
    print(f"mariadb restart: commits={load.commits} {result} reconnect_logs={len(waits)}")


@pytest.mark.parametrize("delivery_timeout_ms", [None, 3000], ids=["broker-restart", "delivery-timeouts"])
def test_kafka_restart_during_load(
    config: Config, caplog: pytest.LogCaptureFixture, delivery_timeout_ms: int | None
) -> None:
    # With a 3 s message timeout the outage makes deliveries fail: the reader must drop its producer
    # and re-read from the last acknowledged checkpoint instead of losing those rows.
    caplog.set_level(logging.WARNING, logger="cdc.reader")
    db = config.settings.mysql.database
    options = {"message.timeout.ms": delivery_timeout_ms} if delivery_timeout_ms else {}
    reader_thread = ReaderThread(config)
    reader_thread.reader.producer_options = options
    with reader_thread as reader, WriteLoad(db) as load:
        wait_for(lambda: load.commits >= 100, 60, what="load before the outage")
        stack_ctl("down", "kafka")
        time.sleep(8)
        stack_ctl("up", "kafka")
        before = load.commits
        wait_for(lambda: load.commits >= before + 100, 60, what="load after the outage")
        load.stop.set()
        load.thread.join(30)
        result = wait_until_caught_up(config, db)
        assert reader.thread.is_alive()
    if delivery_timeout_ms:
        assert any("did not acknowledge" in r.getMessage() for r in caplog.records), "no delivery failure happened"
    print(f"kafka restart ({delivery_timeout_ms}): commits={load.commits} {result}")


LAG_READER = """
import sys, time, uuid
from schemas.settings import Settings
from console.status_report import consumer_lag
settings, readings, refused = Settings(), 0, 0
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline:
    try:
        consumer_lag(settings, [f"cdcflow-lag-{uuid.uuid4().hex}", settings.runners.group_id])
        readings += 1
    except Exception:
        refused += 1
        time.sleep(0.2)
print(f"readings={readings} refused={refused}")
"""


def test_consumer_lag_survives_a_broker_restart(stack: None) -> None:
    # `cdcflow status`, /api/status and the dashboard's sampler read consumer lag; on a broker that
    # has just started, the admin API's group offsets request crashed the whole process (SIGSEGV in
    # librdkafka) -- it killed the API server in CI. Now an unreachable broker is an exception.
    stack_ctl("down", "kafka")
    try:
        reader = subprocess.Popen(
            [sys.executable, "-c", LAG_READER, "40"], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        time.sleep(2)
    finally:
        stack_ctl("up", "kafka")
    out, _ = reader.communicate(timeout=120)
    assert reader.returncode == 0, f"the lag reader died with {reader.returncode}: {out!r}"
    readings = int(out.decode().split("readings=")[1].split()[0])
    assert readings > 10, out
