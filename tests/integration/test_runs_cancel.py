"""Run states and cancelling (issue 14): marks and the run history in the real Redis, and a real runner
(Kafka, warm workers) holding, running, stopping and recording invocations."""

from __future__ import annotations

import json
import os
import re
import socket
import time
from datetime import UTC, datetime

import httpx
import pytest

from plugins.cancel import CancelError, Cancels, cancel_with, is_cancelled
from plugins.run_query import RunFilter, query_runs
from plugins.store import RunStore
from schemas.result import Result
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, isolated_settings, remove_test_resources, wait_for, write_config
from tests.support.plugins import ResultsReader, Runner, new_invocation, produce_messages, result_for
from tests.support.results import a_result

SLOW_MAIN = """import os, time

def run(seconds=0, context=None):
    open("started-" + context["invocation_id"], "w").close()
    time.sleep(float(seconds))
    return {"pid": os.getpid()}
"""


@pytest.fixture
def settings(stack):
    s = isolated_settings("cancel")
    yield s
    remove_test_resources(s, [])


@pytest.fixture
def slow(stack, tmp_path):
    """A config whose only plugin, `slow` (one worker), marks each call it starts with a file."""
    folder = tmp_path / "plugins" / "slow"
    folder.mkdir(parents=True)
    (folder / "plugin.json").write_text(
        json.dumps(
            {
                "name": "slow",
                "entry_point": "main.run",
                "concurrency": 1,
                "timeout_seconds": 120,
                "parameters": {"seconds": {"type": "number", "default": 0}},
            }
        )
    )
    (folder / "main.py").write_text(SLOW_MAIN)
    config = write_config(tmp_path, isolated_config_data("cancelrun", plugin_dirs=[tmp_path / "plugins"]))
    settings = config.settings
    topics = [settings.topics.invoke("slow"), settings.topics.invoke("slow", "high"), settings.topics.results]
    ensure_topics(settings, topics)
    yield config, folder
    remove_test_resources(settings, [*topics, settings.topics.dlq])


def _send(settings, seconds: float):
    inv = new_invocation("slow", {"seconds": seconds})
    produce_messages(
        settings, [(settings.topics.invoke("slow"), inv.invocation_id.encode(), inv.model_dump_json().encode())]
    )
    return inv


def _status(store: RunStore, iid: str) -> str | None:
    run = store.current(iid)
    return run.status if run is not None else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_marks_are_kept_once_listed_for_runners_and_refuse_finished_runs(settings):
    store = RunStore(settings)
    cancels = Cancels(store.client, store.prefix, store.ttl)
    try:
        before = time.time() - 0.001
        first = cancel_with(store, cancels, "inv-1", "cli:alice")
        again = cancel_with(store, cancels, "inv-1", "api:bob")
        assert first.was is None and first.result is None  # no runner has it: recorded when one receives it
        assert again.mark == first.mark and first.mark.by == "cli:alice"  # the first request is the one kept
        assert is_cancelled(settings, "inv-1") and not is_cancelled(settings, "inv-2")
        assert cancels.cancelled(["inv-1", "inv-2", "inv-1"]) == {"inv-1"}
        assert [i for i, _ in cancels.requested_since(before)] == ["inv-1"]
        assert 0 < store.client.ttl(cancels.key("inv-1")) <= store.ttl
        with pytest.raises(CancelError, match="blank"):
            cancel_with(store, cancels, "  ", "cli")
        store.record(a_result("done-1"))
        with pytest.raises(CancelError, match=r"done-1 already finished \(success\)"):
            cancel_with(store, cancels, "done-1", "cli")
        assert not cancels.is_cancelled("done-1")
    finally:
        store.close()


def test_a_cancelled_result_is_recorded_once(settings):
    """A result that arrives after the cancel (the stopped call, or a success racing it) is not stored;
    the writer gets the stored one back, to publish instead."""
    store = RunStore(settings)
    cancels = Cancels(store.client, store.prefix, store.ttl)
    try:
        now = time.time()
        inv = new_invocation("echo", {})
        state = {
            "attempt": 1,
            "invocation_id": inv.invocation_id,
            "plugin": "echo",
            "plugin_version": "1.0.0",
            "status": "running",
            "started_at": now,
            "finished_at": now,
            "duration_ms": 0.0,
            "host": "h",
            "worker_pid": 1,
        }
        store.record_states([(inv.invocation_id, now, json.dumps(state, separators=(",", ":")).encode(), "running", 1)])
        assert _status(store, inv.invocation_id) == "running"
        outcome = cancel_with(store, cancels, inv.invocation_id, "pytest")
        assert outcome.was == "running" and outcome.result is not None
        assert _status(store, inv.invocation_id) == "cancelled"
        assert store.client.zscore(store.index_key(status="running"), inv.invocation_id) is None
        late = outcome.result.model_copy(update={"status": "success", "error": None})
        stored = store.record(late)
        assert stored is not None and Result.model_validate_json(stored).status == "cancelled"
        assert store.get(inv.invocation_id).status == "cancelled"
        assert store.client.zscore(store.index_key(status="success"), inv.invocation_id) is None
    finally:
        store.close()


def test_runner_running_state_cancel_running_and_pending(slow):
    """`slow` has one worker: A runs (state `running` with host and worker pid), B waits behind it
    (`pending`). B cancelled never runs; A cancelled has its worker stopped within seconds; both are
    recorded and published `cancelled`, their offsets move on, and the lane goes on with C."""
    config, folder = slow
    settings = config.settings
    store = RunStore(settings)
    cancels = Cancels(store.client, store.prefix, store.ttl)
    reader = ResultsReader(settings)
    try:
        with Runner(config):
            a = _send(settings, 120)
            wait_for(lambda: (folder / f"started-{a.invocation_id}").exists(), 60, what="A to start")
            wait_for(lambda: _status(store, a.invocation_id) == "running", 10, what="A recorded running")
            running = store.current(a.invocation_id)
            assert running is not None
            extra = running.model_extra or {}
            assert extra["host"] == socket.gethostname() and _alive(extra["worker_pid"])
            page = query_runs(store, RunFilter(status="running"), 10)
            assert [r.invocation_id for r in page.runs] == [a.invocation_id]
            b = _send(settings, 0)
            wait_for(lambda: _status(store, b.invocation_id) == "pending", 30, what="B recorded pending")
            assert [r.invocation_id for r in query_runs(store, RunFilter(status="pending"), 10).runs] == [
                b.invocation_id
            ]

            assert cancel_with(store, cancels, b.invocation_id, "pytest").was == "pending"
            asked = time.monotonic()
            outcome = cancel_with(store, cancels, a.invocation_id, "pytest")
            assert outcome.was == "running" and _status(store, a.invocation_id) == "cancelled"
            wait_for(lambda: not _alive(extra["worker_pid"]), 5, what="A's worker to be stopped")
            assert time.monotonic() - asked < 5
            published = result_for(reader, a.invocation_id, 30)
            assert published["status"] == "cancelled" and published["error"]["type"] == "Cancelled"
            assert result_for(reader, b.invocation_id, 30)["status"] == "cancelled"

            c = _send(settings, 0)
            assert result_for(reader, c.invocation_id, 60)["status"] == "success"
            assert not (folder / f"started-{b.invocation_id}").exists()  # B never ran
            for iid in (a.invocation_id, b.invocation_id):
                assert store.get(iid).status == "cancelled" and store.client.exists(store.state_key(iid)) == 0
            with pytest.raises(CancelError, match="already finished .cancelled."):
                cancel_with(store, cancels, a.invocation_id, "pytest")
        assert query_runs(store, RunFilter(status="running"), 10).runs == []
        assert len([k for k, _ in reader.messages if k == a.invocation_id]) >= 1
    finally:
        reader.close()
        store.close()


def test_cancelled_before_a_runner_receives_it_never_runs(slow):
    config, folder = slow
    settings = config.settings
    store = RunStore(settings)
    cancels = Cancels(store.client, store.prefix, store.ttl)
    reader = ResultsReader(settings)
    try:
        d = _send(settings, 0)
        outcome = cancel_with(store, cancels, d.invocation_id, "pytest")
        assert outcome.was is None and outcome.result is None
        e = _send(settings, 0)
        with Runner(config):
            published = result_for(reader, d.invocation_id, 60)
            assert published["status"] == "cancelled" and "before a runner received it" in published["error"]["message"]
            assert result_for(reader, e.invocation_id, 60)["status"] == "success"
        assert not (folder / f"started-{d.invocation_id}").exists()
        assert store.get(d.invocation_id).status == "cancelled"
    finally:
        reader.close()
        store.close()


def test_cli_and_api_show_running_runs_and_cancel_them(slow, tmp_path):
    """`runs list --status running`, `runs show` and GET /api/runs show a running run with host and pid;
    POST /api/runs/ID/cancel (admin) and `runs cancel` share the logic, and refuse a finished run."""
    from click.testing import CliRunner

    from console.cli import cli
    from tests.support.api import api_server

    config, folder = slow
    settings = config.settings
    store = RunStore(settings)

    def cdcflow(*args: str):
        return CliRunner().invoke(cli, ["-c", str(config.path), *args])

    try:
        with Runner(config), api_server(config, tmp_path / "api.log") as api:
            a = _send(settings, 120)
            wait_for(lambda: _status(store, a.invocation_id) == "running", 60, what="A recorded running")
            pid = (store.current(a.invocation_id).model_extra or {})["worker_pid"]
            listed = cdcflow("runs", "list", "--status", "running")
            assert listed.exit_code == 0 and a.invocation_id in listed.output
            assert f"{socket.gethostname()} pid {pid}" in listed.output
            shown = json.loads(cdcflow("runs", "show", a.invocation_id).output)
            assert shown["status"] == "running" and shown["worker_pid"] == pid
            with api.client("read") as reader:
                page = reader.get("/api/runs", params={"status": "running"}).json()
                assert [(r["invocation_id"], r["worker_pid"]) for r in page["runs"]] == [(a.invocation_id, pid)]
                status = reader.get(f"/api/invocations/{a.invocation_id}").json()
                assert status["status"] == "running" and status["result"]["host"] == socket.gethostname()
                assert reader.post(f"/api/runs/{a.invocation_id}/cancel").status_code == 403
            browser = _dashboard(api)  # the dashboard's Runs page and the run's page
            try:
                rows = browser.get("/runs", params={"status": "running"}).text
                assert f'data-invocation-id="{a.invocation_id}" data-status="running"' in rows
                assert f"pid {pid}" in rows
                assert 'id="run-state" data-status="running"' in browser.get(f"/runs/{a.invocation_id}").text
            finally:
                browser.close()
            with api.client("admin") as admin:
                answer = admin.post(f"/api/runs/{a.invocation_id}/cancel")
                assert answer.status_code == 200, answer.text
                body = answer.json()
                assert body["was"] == "running" and body["result"]["status"] == "cancelled"
                assert body["requested_by"].startswith("api:")
                wait_for(lambda: not _alive(pid), 5, what="A's worker to be stopped")
                again = admin.post(f"/api/runs/{a.invocation_id}/cancel")
                assert again.status_code == 409 and "already finished (cancelled)" in again.json()["detail"]
                assert admin.get(f"/api/runs/{a.invocation_id}").json()["result"]["status"] == "cancelled"
            refused = cdcflow("runs", "cancel", a.invocation_id)
            assert refused.exit_code == 1 and "already finished (cancelled)" in refused.output
            later = cdcflow("runs", "cancel", "not-sent-yet")
            assert later.exit_code == 0 and "no runner has reported it yet" in later.output
            assert "cancel requested" in cdcflow("runs", "show", "not-sent-yet").output
            assert cdcflow("runs", "list", "--status", "cancelled").output.count(a.invocation_id) == 1
    finally:
        store.close()


def _dashboard(api) -> httpx.Client:
    """A client signed in to the dashboard (the login form's nonce, then the read token)."""
    client = httpx.Client(base_url=api.base_url, timeout=30.0)
    nonce = re.search(r'name="login_nonce" value="([^"]+)"', client.get("/login").text)
    assert nonce is not None
    signed = client.post("/login", data={"token": api.tokens["read"], "login_nonce": nonce.group(1), "next": "/"})
    assert signed.status_code == 303, signed.text
    return client


def test_a_delayed_trigger_cancelled_is_recorded_cancelled_at_once(settings):
    """`trigger --delay` keeps the request in Redis until due (its release drops a cancelled one): the
    cancel records its `cancelled` result right away, under the id the trigger was given."""
    from datetime import timedelta

    from plugins.delayed_store import DelayedStore
    from schemas.trigger_request import ManualTriggerRequest

    store = RunStore(settings)
    cancels = Cancels(store.client, store.prefix, store.ttl)
    delayed = DelayedStore(settings, store.client)
    try:
        request = ManualTriggerRequest(
            request_id="r-1",
            plugin="echo",
            params={"message": "later"},
            requested_by="pytest",
            due_at=datetime.now(UTC) + timedelta(hours=1),
        )
        iid = delayed.add(request)
        outcome = cancel_with(store, cancels, iid, "pytest")
        assert outcome.was == "delayed" and outcome.result is not None
        recorded = store.get(iid)
        assert recorded is not None and recorded.status == "cancelled" and recorded.plugin == "echo"
        assert recorded.params == {"message": "later"} and recorded.trigger_kind == "manual"
        assert is_cancelled(settings, iid)  # what the release checks before publishing it
    finally:
        store.close()


FLAKY_MAIN = """def run(context=None):
    open("started-%s-%d" % (context["invocation_id"], context["attempt"]), "w").close()
    raise RuntimeError("first attempt fails")
"""


def test_a_retry_waiting_for_its_time_cancelled_never_runs(stack, tmp_path):
    """Attempt 1 fails; attempt 2 waits in the runner for its retry delay (state `pending`). Cancelled
    then, it is recorded `cancelled` at once and never runs, and is not dead-lettered."""
    folder = tmp_path / "plugins" / "flaky"
    folder.mkdir(parents=True)
    (folder / "plugin.json").write_text(
        json.dumps(
            {
                "name": "flaky",
                "entry_point": "main.run",
                "concurrency": 1,
                "retries": {"max_retries": 1, "retry_delay": 4, "backoff_factor": 1},
            }
        )
    )
    (folder / "main.py").write_text(FLAKY_MAIN)
    config = write_config(tmp_path, isolated_config_data("cancelretry", plugin_dirs=[tmp_path / "plugins"]))
    settings = config.settings
    topics = [settings.topics.invoke("flaky"), settings.topics.invoke("flaky", "high"), settings.topics.results]
    ensure_topics(settings, [*topics, settings.topics.dlq])
    store = RunStore(settings)
    cancels = Cancels(store.client, store.prefix, store.ttl)
    reader = ResultsReader(settings)
    try:
        with Runner(config):
            inv = new_invocation("flaky", {})
            produce_messages(settings, [(topics[0], inv.invocation_id.encode(), inv.model_dump_json().encode())])
            iid = inv.invocation_id
            wait_for(
                lambda: (run := store.current(iid)) is not None and run.status == "pending" and run.attempt == 2,
                30,
                what="attempt 2 waiting for its retry time",
            )
            outcome = cancel_with(store, cancels, iid, "pytest")
            assert outcome.was == "pending" and store.get(iid).status == "cancelled"
            time.sleep(6)  # past attempt 2's time
            published = [json.loads(v) for k, v in reader.wait_for(2, 30) if k == iid]
            assert [(r["attempt"], r["status"]) for r in published] == [(1, "failed"), (2, "cancelled")]
            assert (folder / f"started-{iid}-1").exists() and not (folder / f"started-{iid}-2").exists()
            assert store.get(iid).status == "cancelled" and store.attempts(iid)[0]["status"] == "failed"
    finally:
        reader.close()
        store.close()
        remove_test_resources(settings, [*topics, settings.topics.dlq])
