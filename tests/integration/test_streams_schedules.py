"""The schedule timer in a real Faust worker against the real Kafka and Redis.

Interval schedules of 1 s fire with deterministic ids and no duplicates; pause stops one, resume
restarts it, a pause survives a restart; max_instances holds a fire back until a result exists;
a worker restart catches up a schedule inside its grace time (coalesced into one fire) and records
the slots of a schedule outside its grace time as missed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import orjson
import pytest

from schemas.config import Config
from schemas.invocation import invocation_id_for
from schemas.trigger_request import ScheduleTick
from streams.schedule_state import ScheduleStore
from tests.support import REPO_ROOT, consume_all, isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.streams import Worker

SCHEDULES = {
    "schedules": {
        # catch-up inside the grace time, coalesced
        "tick": {
            "plugin": "echo",
            "interval_seconds": 1,
            "misfire_grace_time": 3600,
            "coalesce": True,
            "max_instances": 1000,
            "params": {"message": "tick"},
        },
        # slots late by more than 0.5 s are missed
        "strict": {
            "plugin": "echo",
            "interval_seconds": 1,
            "misfire_grace_time": 0.5,
            "coalesce": False,
            "max_instances": 1000,
        },
        # at most one invocation without a result
        "capped": {"plugin": "echo", "interval_seconds": 1, "max_instances": 1},
    },
}


def cli(config: Config, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "console.cli", "--config", str(config.path), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def fired(store: ScheduleStore, name: str) -> list[ScheduleTick]:
    return sorted((t for t in store.ticks(name) if t.status == "fired"), key=lambda t: t.fire_time)


@pytest.fixture
def scheduled(stack: None, tmp_path: Path) -> Iterator[tuple[Config, Worker, ScheduleStore]]:
    config = write_config(tmp_path, isolated_config_data("sch", SCHEDULES))
    worker = Worker(config, tmp_path / "worker.log")
    store = ScheduleStore(config.settings)
    worker.start()
    try:
        yield config, worker, store
    finally:
        worker.stop()
        print(worker.log_path.read_text(errors="replace")[-6000:])
        remove_test_resources(config.settings, [config.settings.topics.invoke("echo")])
        store.close()


def test_schedules_fire_pause_resume_cap_and_survive_a_restart(scheduled: tuple[Config, Worker, ScheduleStore]) -> None:
    config, worker, store = scheduled
    settings = config.settings

    # fires every second, one invocation per slot
    wait_for(lambda: len(fired(store, "tick")) >= 3, 90, interval=0.1, what="three fires of `tick`")

    # max_instances=1: no result for the first fire -> later slots are skipped, until a result exists
    wait_for(
        lambda: sum(t.status == "skipped_max_instances" for t in store.ticks("capped")) >= 2,
        10,
        what="capped slots skipped",
    )
    assert len(fired(store, "capped")) == 1
    first_capped = fired(store, "capped")[0].invocation_id
    store.client.set(store.done_key(first_capped), "1")  # what the runners write with a result
    wait_for(lambda: len(fired(store, "capped")) == 2, 10, what="capped firing again after a result")

    # pause stops `tick` (within a second), resume restarts it from the next slot, no catch-up
    cli(config, "schedules", "pause", "tick")
    time.sleep(1.5)
    count_paused = len(fired(store, "tick"))
    paused_at = datetime.now().astimezone()
    time.sleep(3)
    assert len(fired(store, "tick")) == count_paused, "a paused schedule fired"
    assert '"paused":true' in cli(config, "schedules", "list", "--json").replace(" ", "")
    cli(config, "schedules", "resume", "tick")
    wait_for(lambda: len(fired(store, "tick")) >= count_paused + 2, 10, what="tick firing after resume")
    after_resume = fired(store, "tick")[count_paused:]
    assert all(t.fire_time > paused_at + timedelta(seconds=3) for t in after_resume), "paused slots were caught up"

    # a pause survives a restart; `tick` (large grace) catches up once, `strict` (0.5 s) records misses
    cli(config, "schedules", "pause", "capped")
    assert worker.stop() == 0
    stopped = datetime.now().astimezone()
    last_tick_before = fired(store, "tick")[-1].fire_time
    capped_before = len(fired(store, "capped"))
    time.sleep(4)
    worker.start()
    wait_for(
        lambda: fired(store, "tick")[-1].fire_time > stopped + timedelta(seconds=3),
        90,
        interval=0.1,
        what="tick firing after the restart",
    )
    wait_for(
        lambda: fired(store, "tick")[-1].fire_time > stopped + timedelta(seconds=12),
        60,
        interval=0.1,
        what="a few regular fires after the restart",
    )
    assert worker.stop() == 0

    ticks = sorted(store.ticks("tick"), key=lambda t: t.fire_time)
    # the first fire after the restart is the latest due slot; the slots of the outage before it are
    # coalesced into it (none missed: the grace time is an hour)
    recovered = [t for t in ticks if t.status == "fired" and t.fire_time > last_tick_before][0]
    coalesced = [t for t in ticks if t.status == "coalesced"]
    assert coalesced and all(last_tick_before < t.fire_time < recovered.fire_time for t in coalesced)
    assert not [t for t in ticks if t.status == "missed"]
    strict = store.ticks("strict")
    assert sum(t.status == "missed" for t in strict) >= 3
    assert store.load("strict").missed_total == sum(t.status == "missed" for t in strict)
    assert all(t.emitted_at - t.fire_time <= timedelta(seconds=0.5) for t in strict if t.status == "fired")
    assert len(fired(store, "capped")) == capped_before, "a paused schedule fired after a restart"

    # Kafka holds exactly the fired invocations: deterministic ids, no duplicates, none lost
    messages = [orjson.loads(m.value()) for m in consume_all(config, [settings.topics.invoke("echo")])]
    ids = [m["invocation_id"] for m in messages]
    assert len(ids) == len(set(ids)), "duplicate invocation on the invoke topic"
    for m in messages:
        trigger = m["trigger"]
        assert trigger["kind"] == "schedule"
        assert m["invocation_id"] == invocation_id_for("schedule", trigger["schedule"], trigger["fire_time"])
    for name in ("tick", "strict", "capped"):
        assert {m["invocation_id"] for m in messages if m["trigger"]["schedule"] == name} == {
            t.invocation_id for t in fired(store, name)
        }, name
    tick_params = {orjson.dumps(m["params"]) for m in messages if m["trigger"]["schedule"] == "tick"}
    assert tick_params == {orjson.dumps({"message": "tick"})}
    # slots of one schedule are whole seconds apart (anchored, not drifting with wake-ups)
    times = sorted(
        datetime.fromisoformat(m["trigger"]["fire_time"]) for m in messages if m["trigger"]["schedule"] == "tick"
    )
    assert all(((b - a).total_seconds()).is_integer() for a, b in pairwise(times))
    # steady-state lateness stays small (a loose bound: this is a test, not the benchmark)
    steady = [t for t in ticks if t.status == "fired" and t is not recovered and t.emitted_at is not None]
    late = sorted((t.emitted_at - t.fire_time).total_seconds() for t in steady)
    assert late[len(late) // 2] < 0.2, late
