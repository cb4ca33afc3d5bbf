"""Triggers beyond "run now", on the real stack (a streams worker process, a runner, Kafka, Redis):
`cdcflow trigger --delay/--at` fires within a second of its time and runs once, also when the worker
is killed (-9) and restarted while the trigger waits; a bad time is refused with nothing kept;
`cdcflow schedules run` runs a schedule once per key, recorded in its history; the Python
`trigger(wait=...)` returns the result."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from plugins.cancel import cancel
from plugins.delayed_store import DelayedStore
from plugins.store import RunStore
from schemas.config import Config
from schemas.result import Result
from schemas.runtime.kafka_topics import ensure_topics
from schemas.settings import Settings
from schemas.trigger_request import ManualTriggerRequest
from streams.client import trigger
from streams.delayed_release import DelayedRelease
from streams.manual_trigger import TriggerSender, trigger_request
from streams.schedule_state import ScheduleStore
from tests.support import (
    REPO_ROOT,
    consume_all,
    example_plugin,
    isolated_config_data,
    remove_test_resources,
    topics_config,
    wait_for,
    write_config,
)
from tests.support.api import api_server
from tests.support.plugins import Runner
from tests.support.streams import Worker

BURST = 300  # delayed triggers due at the same moment
SCHEDULES = {"schedules": {"nightly": {"plugin": "echo", "cron": "0 3 * * *", "params": {"message": "nightly"}}}}


def topics(settings: Settings) -> list[str]:
    t = settings.topics
    return [t.triggers, t.results, t.dlq, t.invoke("echo", "normal"), t.invoke("echo", "high")]


def cli(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console.cli", "--config", str(config.path), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@dataclass
class Pipeline:
    config: Config
    worker: Worker
    runs: RunStore

    def result(self, invocation_id: str, timeout: float) -> Result:
        found: Result = wait_for(lambda: self.runs.get(invocation_id), timeout, 0.05, f"the result of {invocation_id}")
        return found

    def copies(self, invocation_id: str, topic: str) -> int:
        """How many messages of `topic` carry this invocation id (as their key)."""
        return len(self._values(invocation_id, topic))

    def runs_of(self, invocation_id: str) -> int:
        """How many times it ran: distinct results on the results topic (a runner given an invocation
        already done publishes its stored result again, the same bytes)."""
        return len(set(self._values(invocation_id, self.config.settings.topics.results)))

    def _values(self, invocation_id: str, topic: str) -> list[bytes]:
        messages = consume_all(self.config, [topic], idle_seconds=1.0)
        return [m.value() or b"" for m in messages if m.key() == invocation_id.encode()]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    directory = tmp_path_factory.mktemp("delayed")
    with topics_config(directory, "dly", SCHEDULES, topics) as config:
        worker = Worker(config, directory / "worker.log")
        worker.start()
        try:
            with Runner(config, plugins=["echo"]):
                runs = RunStore(config.settings)
                warm = trigger("echo", {"message": "warm-up"}, wait=120, config=config)  # worker and runner serve
                assert warm.status == "success", warm
                yield Pipeline(config, worker, runs)
                runs.close()
        finally:
            worker.stop()
            print((directory / "worker.log").read_text(errors="replace")[-4000:])


def lateness(result: Result) -> float:
    """Seconds from the trigger's due time to its invocation's emission by the worker."""
    assert result.trigger is not None and result.timings is not None
    due = datetime.fromisoformat(result.trigger["due_at"]).timestamp()
    created = result.timings["created_at"]
    assert created is not None
    return created - due


def test_delay_fires_within_a_second_once(pipeline: Pipeline) -> None:
    sent = cli(pipeline.config, "trigger", "echo", "-p", "message=later", "--delay", "3s")
    assert sent.returncode == 0, sent.stderr
    invocation_id = sent.stdout.strip()
    assert DelayedStore(pipeline.config.settings).get(invocation_id) is not None, "not kept while waiting"
    assert pipeline.runs.get(invocation_id) is None
    result = pipeline.result(invocation_id, 60)
    assert result.status == "success" and result.output["message"] == "later"
    late = lateness(result)
    print(f"fired {late * 1000:.0f} ms after its time; started {result.started_at}")
    assert 0 <= late <= 1.0
    assert DelayedStore(pipeline.config.settings).get(invocation_id) is None, "still kept after it fired"
    assert pipeline.copies(invocation_id, pipeline.config.settings.topics.invoke("echo")) == 1


def test_delayed_trigger_survives_kill_9_of_the_worker(pipeline: Pipeline) -> None:
    # Long enough for the restarted worker to lead: the killed one's session (10 s) must expire first.
    at = (datetime.now(UTC) + timedelta(seconds=40)).isoformat()
    sent = cli(pipeline.config, "trigger", "echo", "-p", "message=across a kill", "--at", at)
    assert sent.returncode == 0, sent.stderr
    invocation_id = sent.stdout.strip()
    worker = pipeline.worker
    assert worker.process is not None
    time.sleep(2)
    worker.process.kill()
    worker.process.wait(30)
    worker.start()
    result = pipeline.result(invocation_id, 120)
    assert result.status == "success" and result.output["message"] == "across a kill"
    late = lateness(result)
    print(f"after kill -9 and restart: fired {late * 1000:.0f} ms after its time")
    assert 0 <= late <= 1.0
    settings = pipeline.config.settings
    assert pipeline.copies(invocation_id, settings.topics.invoke("echo")) == 1
    assert pipeline.runs_of(invocation_id) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--at", "2020-01-01T00:00:00Z"), "--at: 2020-01-01T00:00:00+00:00 is in the past"),
        (("--at", "2030-01-01 10:00"), "--at: '2030-01-01 10:00' has no UTC offset"),
        (("--delay", "soon"), "--delay: cannot read 'soon' as a delay"),
        (("--delay", "90d"), "--delay: more than 30 days ahead"),
    ],
)
def test_bad_times_are_refused_and_nothing_is_kept(pipeline: Pipeline, args: tuple[str, ...], message: str) -> None:
    refused = cli(pipeline.config, "trigger", "echo", *args)
    assert refused.returncode == 1
    assert refused.stderr.strip() == f"Error: refused, nothing was sent: {message}" or message in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert DelayedStore(pipeline.config.settings).all() == []


def test_schedules_run_runs_once_per_key(pipeline: Pipeline) -> None:
    config = pipeline.config
    first = cli(config, "schedules", "run", "nightly", "--key", "backfill-1")
    again = cli(config, "schedules", "run", "nightly", "--key", "backfill-1")
    assert first.returncode == 0 and again.returncode == 0, first.stderr + again.stderr
    invocation_id = first.stdout.strip()
    assert again.stdout.strip() == invocation_id, "the same key must give the same invocation"
    result = pipeline.result(invocation_id, 60)
    assert result.status == "success" and result.output["message"] == "nightly"
    assert result.trigger is not None and result.trigger["schedule"] == "nightly"
    assert pipeline.copies(invocation_id, config.settings.topics.invoke("echo")) == 2  # sent twice...
    assert pipeline.runs_of(invocation_id) == 1, "ran more than once"  # ...ran once
    other = cli(config, "schedules", "run", "nightly")
    assert other.returncode == 0 and other.stdout.strip() != invocation_id
    store = ScheduleStore(config.settings)
    ticks = store.ticks("nightly")
    assert [t.status for t in ticks[:3]] == ["run", "run", "run"]
    assert store.load("nightly").last_invocation == other.stdout.strip()
    assert store.load("nightly").last is None, "a manual run must not move the schedule's slots"
    unknown = cli(config, "schedules", "run", "nosuch")
    assert unknown.returncode == 1 and "unknown schedule 'nosuch'" in unknown.stderr


def test_python_trigger_returns_the_result_when_waiting(pipeline: Pipeline) -> None:
    config = pipeline.config
    result = trigger("echo", {"message": "from python", "data": {"n": 1}}, wait=60, config=config)
    assert isinstance(result, Result) and result.status == "success"
    assert result.output["message"] == "from python" and result.output["data"] == {"n": 1}
    invocation_id = trigger("echo", {"message": "no wait"}, config=config)
    assert isinstance(invocation_id, str) and pipeline.result(invocation_id, 60).status == "success"
    later = trigger("echo", {"message": "delayed"}, delay=1.5, wait=60, config=config)
    assert later.status == "success" and 0 <= lateness(later) <= 1.0
    failed = trigger("echo", {"mode": "raise"}, wait=60, config=config)
    assert failed.status == "failed" and failed.error is not None and "asked to fail" in failed.error.message


def test_release_keeps_a_trigger_kafka_did_not_take(tmp_path: Path) -> None:
    # Publish first, remove after: a failed publish leaves the trigger for the next tick, and a
    # cancelled one is dropped without being published.
    with topics_config(tmp_path, "rel", {}, lambda s: []) as config:
        settings = config.settings
        store = DelayedStore(settings)
        manifest = example_plugin("echo").manifest
        due = datetime.now(UTC) - timedelta(seconds=1)
        kept = trigger_request("echo", manifest, {}, "normal", "test", "kept", due)
        dropped = trigger_request("echo", manifest, {}, "normal", "test", "dropped", due)
        kept_id, dropped_id = store.add(kept), store.add(dropped)
        published: list[str] = []

        async def failing(request: ManualTriggerRequest) -> None:
            raise RuntimeError("Kafka away (simulated)")

        async def publish(request: ManualTriggerRequest) -> None:
            published.append(request.request_id)

        with pytest.raises(RuntimeError):
            asyncio.run(
                DelayedRelease(store, failing, cancelled=lambda ids: {i for i in ids if i == dropped_id}).tick()
            )
        assert store.get(kept_id) is not None
        asyncio.run(DelayedRelease(store, publish, cancelled=lambda ids: {i for i in ids if i == dropped_id}).tick())
        assert published == [kept.request_id]
        assert store.all() == []
        store.close()


def test_a_cancelled_delayed_trigger_never_fires(pipeline: Pipeline) -> None:
    settings = pipeline.config.settings
    invocation_id = trigger("echo", {"message": "cancel me"}, delay=2, config=pipeline.config)
    cancel(settings, invocation_id, "test")
    wait_for(lambda: DelayedStore(settings).get(invocation_id) is None, 30, what="the cancelled trigger's drop")
    time.sleep(1.0)  # the router and runner would have had it by now
    assert pipeline.copies(invocation_id, settings.topics.invoke("echo")) == 0, "a cancelled trigger was released"
    cancelled = pipeline.runs.get(invocation_id)
    assert cancelled is not None and cancelled.status == "cancelled", cancelled


def test_api_delays_and_refuses_bad_times(pipeline: Pipeline, tmp_path: Path) -> None:
    with api_server(pipeline.config, tmp_path / "api.log") as api, api.client("trigger") as http:
        url = "/api/plugins/echo/invocations"
        answer = http.post(url, json={"params": {"message": "api later"}, "delay_seconds": 1.5})
        assert answer.status_code == 202, answer.text
        invocation_id = answer.json()["invocation_id"]
        assert DelayedStore(pipeline.config.settings).get(invocation_id) is not None
        result = pipeline.result(invocation_id, 60)
        assert result.status == "success" and result.output["message"] == "api later"
        assert 0 <= lateness(result) <= 1.0
        for body, field in [
            ({"at": "2020-01-01T00:00:00Z"}, "at"),
            ({"at": "2030-01-01T00:00:00"}, "at"),
            ({"delay_seconds": -1}, "delay_seconds"),
            ({"delay_seconds": 5, "at": "2030-01-01T00:00:00Z"}, "delay_seconds"),
        ]:
            refused = http.post(url, json={"params": {}, **body})
            assert refused.status_code == 422, refused.text
            assert [e["field"] for e in refused.json()["errors"]] == [field], refused.text
        assert DelayedStore(pipeline.config.settings).all() == []


def test_a_release_repeated_after_a_crash_runs_once(pipeline: Pipeline) -> None:
    # As if a leader had published the request and died before removing it from Redis: the request
    # is on the triggers topic already, and still in the store, due; the next leader releases it again.
    settings = pipeline.config.settings
    due = datetime.now(UTC) + timedelta(seconds=2)
    request = trigger_request(
        "echo", example_plugin("echo").manifest, {"message": "twice"}, "normal", "test", None, due
    )
    sender = TriggerSender(settings)
    try:
        invocation_id = sender.send(request)  # the dead leader's release
    finally:
        sender.close()
    assert DelayedStore(settings).add(request) == invocation_id
    assert pipeline.result(invocation_id, 60).status == "success"
    wait_for(lambda: DelayedStore(settings).get(invocation_id) is None, 30, what="the second release")
    wait_for(lambda: pipeline.copies(invocation_id, settings.topics.invoke("echo")) == 2, 30, what="both releases")
    assert pipeline.runs_of(invocation_id) == 1, "a repeated release ran twice"


def test_status_lists_waiting_delayed_triggers(pipeline: Pipeline) -> None:
    config = pipeline.config
    invocation_id = trigger("echo", {"message": "see me"}, delay="10m", config=config)
    try:
        shown = cli(config, "status", "--no-kafka")
        lines = shown.stdout.splitlines()
        assert "DELAYED TRIGGERS (1 waiting)" in lines, shown.stdout
        row = next(line for line in lines if invocation_id in line)
        assert "echo" in row and "python:" in row
    finally:
        assert DelayedStore(config.settings).remove(invocation_id)


def test_a_burst_due_at_once_fires_within_a_second(pipeline: Pipeline) -> None:
    settings = pipeline.config.settings
    manifest = example_plugin("echo").manifest
    due = datetime.now(UTC) + timedelta(seconds=3)
    store = DelayedStore(settings)
    ids = [
        store.add(trigger_request("echo", manifest, {"message": str(n)}, "normal", "test", None, due))
        for n in range(BURST)
    ]
    results = [pipeline.result(invocation_id, 180) for invocation_id in ids]
    late = sorted(lateness(r) for r in results)
    print(f"{BURST} due at once: fired {late[0] * 1000:.0f}-{late[-1] * 1000:.0f} ms after their time")
    assert all(r.status == "success" for r in results)
    assert 0 <= late[0] and late[-1] <= 1.0


FLAKY_MAIN = """
def run(context=None):
    if context["attempt"] == 1:
        raise RuntimeError("first attempt fails")
    return {"attempt": context["attempt"]}
"""


def test_waiting_returns_the_final_result_not_a_retried_attempt(tmp_path: Path) -> None:
    plugin = tmp_path / "plugins" / "flaky"
    plugin.mkdir(parents=True)
    (plugin / "main.py").write_text(FLAKY_MAIN)
    retries = {"max_retries": 1, "retry_delay": 0.2}
    manifest = {"name": "flaky", "version": "1.0.0", "entry_point": "main.run", "retries": retries}
    (plugin / "plugin.json").write_text(json.dumps(manifest))
    data = isolated_config_data("flk", plugin_dirs=[plugin.parent])
    config = write_config(tmp_path, data)
    t = config.settings.topics
    flaky_topics = [t.triggers, t.results, t.dlq, t.invoke("flaky"), t.invoke("flaky", "high")]
    ensure_topics(config.settings, flaky_topics)
    worker = Worker(config, tmp_path / "worker.log")
    worker.start()
    try:
        with Runner(config, plugins=["flaky"]):
            result = trigger("flaky", wait=120, config=config)
            assert result.status == "success" and result.attempt == 2 and result.output == {"attempt": 2}
            with api_server(config, tmp_path / "api.log") as api, api.client("trigger") as http:
                answer = http.post("/api/plugins/flaky/invocations", params={"wait": 60}, json={"params": {}})
                assert answer.status_code == 200, answer.text
                assert answer.json()["result"]["attempt"] == 2 and answer.json()["status"] == "success"
    finally:
        worker.stop()
        remove_test_resources(config.settings, flaky_topics)
