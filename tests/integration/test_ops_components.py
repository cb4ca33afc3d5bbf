"""`cdcflow status`/`health`, /metrics and probes, alerts and JSON logs of the real components.

Each component runs as a real `cdcflow ...` process against the local stack; the test scrapes its
HTTP endpoints, reads `status --json` and `health` as an operator would, then stops or kills it.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from schemas.config import Config
from schemas.invocation import Invocation, ManualTrigger
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import (
    REPO_ROOT,
    execute,
    isolated_config_data,
    items_config,
    remove_test_resources,
    wait_for,
    write_config,
)
from tests.support.receivers import WebhookReceiver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_ops(config: Config, tmp_path: Path, **alerts: Any) -> tuple[Config, int]:
    """The config rewritten with every component's HTTP port free, fast heartbeats and these alert settings."""
    data = yaml.safe_load(Path(config.path).read_text())
    port = free_port()
    data["observability"] = {
        "reader_port": port,
        "streams_port": port,
        "runners_port": port,
        "heartbeat_seconds": 0.5,
        "stale_after_seconds": 2.0,
    }
    if alerts:
        data["alerts"] = alerts
    return write_config(tmp_path, data), port


class Cdcflow:
    """`cdcflow --config C ARGS` in the background, its stderr collected line by line."""

    def __init__(self, config: Config, *args: str, log_format: str = "text"):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "console.cli", "--config", str(config.path), "--log-format", log_format, *args],
            cwd=REPO_ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(iter(self.process.stderr.readline, "")), daemon=True).start()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(
                f"{self.process.args} did not stop within 60 s of {sig}:\n{self.log()[-4000:]}"
            ) from None

    def log(self) -> str:
        return "".join(self.lines)


def cli(config: Config, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console.cli", "--config", str(config.path), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    code, text = get(port, "/metrics")
    assert code == 200, text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(port: int, name: str, **labels: str) -> float:
    return scrape(port).get((name, tuple(sorted(labels.items()))), 0.0)


def readiness_answers(port: int, timeout: float) -> list[tuple[int, str]]:
    """Every answer of /readyz (polled fast from the process start) up to the first 200."""
    answers: list[tuple[int, str]] = []

    def ready() -> bool:
        code, body = get(port, "/readyz")
        if code:
            answers.append((code, body))
        return code == 200

    wait_for(ready, timeout, interval=0.02, what="/readyz 200")
    return answers


def component(config: Config, kind: str) -> dict[str, Any] | None:
    result = cli(config, "status", "--json", "--no-kafka")
    assert result.returncode == 0, result.stderr
    mine = [c for c in json.loads(result.stdout)["components"] if c["kind"] == kind]
    return mine[0] if mine else None


def ready_everywhere(config: Config, port: int, kind: str, pid: int) -> dict[str, Any] | None:
    c = component(config, kind)
    return c if c and c["state"] == "ready" and c["pid"] == pid and get(port, "/readyz")[0] == 200 else None


# -- runner ------------------------------------------------------------------------------------
@pytest.fixture
def runner_config(stack: None, tmp_path: Path) -> Iterator[tuple[Config, int, WebhookReceiver]]:
    receiver = WebhookReceiver()
    base = write_config(tmp_path, isolated_config_data("ops"))
    config, port = with_ops(
        base, tmp_path, webhook_url=receiver.url, window_seconds=3.0, max_per_window=1, long_run_seconds=1.0
    )
    s = config.settings
    topics = [s.topics.invoke("echo"), s.topics.invoke("echo", "high"), s.topics.results, s.topics.dlq]
    ensure_topics(s, topics)
    yield config, port, receiver
    receiver.close()
    remove_test_resources(s, topics)


def produce_echo(config: Config, modes: list[str], **params: Any) -> list[str]:
    s = config.settings
    producer = Producer(s.kafka_config(**{"acks": "all"}))
    ids = []
    for mode in modes:
        now = datetime.now(UTC)
        inv = Invocation(
            invocation_id=str(uuid.uuid4()),
            plugin="echo",
            params={"mode": mode, "message": mode, **params},
            created_at=now,
            trigger=ManualTrigger(requested_by="pytest", requested_at=now, request_id="r"),
        )
        producer.produce(s.topics.invoke("echo"), key=inv.invocation_id.encode(), value=inv.model_dump_json().encode())
        ids.append(inv.invocation_id)
    assert producer.flush(30) == 0
    return ids


def test_runner_metrics_probes_status_health_alerts_and_json_logs(runner_config) -> None:  # type: ignore[no-untyped-def]
    config, port, receiver = runner_config
    assert cli(config, "health", "--expect", "runner").returncode == 1  # nothing runs yet
    runner = Cdcflow(config, "runners", "run", "--plugin", "echo", "--no-watch", log_format="json")
    try:
        answers = readiness_answers(port, 120)
        assert answers[0] == (503, "not ready: starting: building plugin venvs and warm pools\n"), answers[:3]
        up = wait_for(
            lambda: ready_everywhere(config, port, "runner", runner.process.pid),
            120,
            interval=0.3,
            what="the runner ready in status and /readyz",
        )
        assert up["liveness"] == "up" and up["port"] == port and up["host"] == socket.gethostname()
        assert get(port, "/healthz")[0] == 200
        health = cli(config, "health", "--expect", "runner")
        assert health.returncode == 0 and f"ok    runner: {up['instance']} ready" in health.stdout, health.stdout
        assert sample(port, "cdcflow_runner_workers_alive", plugin="echo") == 2.0
        before = sample(port, "cdcflow_runner_invocations_total", plugin="echo", status="success")

        ok_ids = produce_echo(config, ["echo"])
        failed_ids = produce_echo(config, ["raise"] * 5)
        wait_for(
            lambda: sample(port, "cdcflow_runner_invocations_total", plugin="echo", status="failed") == 5,
            60,
            interval=0.2,
            what="5 failed results counted",
        )
        assert sample(port, "cdcflow_runner_invocations_total", plugin="echo", status="success") == before + 1
        assert sample(port, "cdcflow_runner_duration_seconds_count", plugin="echo") == 6
        assert sample(port, "cdcflow_runner_dead_letters_total", plugin="echo") == 5

        # alerts: the first failure and the first dead letter one by one, then one summary each
        summaries = wait_for(
            lambda: (s := [b for b in receiver.bodies if b["summary"]]) and len(s) == 2 and s,
            20,
            what="the two summaries",
        )
        singles = [b for b in receiver.bodies if not b["summary"]]
        assert sorted(b["kind"] for b in singles) == ["dead_letter", "failure"]
        assert all(b["details"]["invocation_id"] in failed_ids for b in singles)
        by_kind = {b["kind"]: b for b in summaries}
        assert by_kind["failure"]["count"] == 5 and by_kind["dead_letter"]["count"] == 5
        assert by_kind["failure"]["message"].startswith("5 failures of plugin echo in the last 3 s")

        # status shows the failures; JSON log lines parse and name the plugin and invocation
        report = json.loads(cli(config, "status", "--json").stdout)
        assert report["problems"] == [] and report["reader"] is None  # every part read; this test runs no reader
        assert {f["invocation_id"] for f in report["recent_failures"]} <= set(failed_ids)
        assert "s3cr3t-token" not in json.dumps(report) + runner.log()  # the webhook URL is a secret

        # a run over long_run_seconds is reported while it still runs, and only once
        (slow,) = produce_echo(config, ["sleep"], seconds=3)
        long_runs = wait_for(lambda: [b for b in receiver.bodies if b["kind"] == "long_run"], 15, what="long-run alert")
        assert sample(port, "cdcflow_runner_invocations_total", plugin="echo", status="success") == before + 1
        assert long_runs[0]["details"]["invocation_id"] == slow and "still running after" in long_runs[0]["message"]
        wait_for(
            lambda: sample(port, "cdcflow_runner_invocations_total", plugin="echo", status="success") == before + 2,
            30,
            what="the slow run's result",
        )
        assert len(report["recent_failures"]) == 5 and report["plugins"]["echo"]["state"] == "serving"
        assert any(r["topic"] == config.settings.topics.invoke("echo") for r in report["consumer_lag"]), report
        lines = [json.loads(line) for line in runner.lines if line.startswith("{")]
        assert lines and len(lines) == len([line for line in runner.lines if line.strip()]), runner.log()
        done = [r for r in lines if r.get("invocation_id") == ok_ids[0]]
        assert done and done[0]["plugin"] == "echo" and done[0]["component"] == "runner" and done[0]["level"] == "INFO"
    finally:
        runner.stop()

    assert len([b for b in receiver.bodies if b["kind"] == "long_run"]) == 1
    # stopped: status and health say so at once (the last heartbeat says "stopped")
    down = component(config, "runner")
    assert down is not None and down["liveness"] == "stopped", down
    health = cli(config, "health", "--expect", "runner")
    assert health.returncode == 1 and "FAIL  runner:" in health.stdout and "stopped" in health.stdout
    assert get(port, "/healthz")[0] == 0  # the port is closed

    # consumer-group lag: what arrives while no runner consumes is the group's lag on that topic
    produce_echo(config, ["echo"] * 3)
    report = json.loads(cli(config, "status", "--json").stdout)
    lag = {(r["group"], r["topic"]): r["lag"] for r in report["consumer_lag"]}
    assert lag[(config.settings.runners.group_id, config.settings.topics.invoke("echo"))] == 3, report["consumer_lag"]


# -- reader --------------------------------------------------------------------------------------
def test_reader_metrics_and_a_killed_reader_shows_down_within_seconds(stack: None, tmp_path: Path) -> None:
    with items_config("opsr", tmp_path) as base:
        config, port = with_ops(base, tmp_path)
        reader = Cdcflow(config, "cdc", "run")
        try:
            wait_for(
                lambda: ready_everywhere(config, port, "reader", reader.process.pid),
                60,
                interval=0.3,
                what="the reader ready",
            )
            assert cli(config, "health", "--expect", "reader").returncode == 0
            db = config.settings.mysql.database
            execute(
                [f"INSERT INTO items VALUES ({i})" for i in range(20)]
                + ["UPDATE items SET id = id + 100 WHERE id < 5"],
                db,
            )
            wait_for(lambda: sample(port, "cdcflow_reader_rows_acked_total") >= 25, 30, what="25 rows acked")
            metrics = scrape(port)
            assert metrics[("cdcflow_reader_rows_total", (("db", db), ("op", "c"), ("table", "items")))] == 20
            assert metrics[("cdcflow_reader_rows_total", (("db", db), ("op", "u"), ("table", "items")))] == 5
            assert metrics[("cdcflow_reader_state", (("state", "running"),))] == 1
            assert any(
                name == "cdcflow_reader_checkpoint_position" and value > 4 for (name, _), value in metrics.items()
            )
            assert (
                wait_for(lambda: sample(port, "cdcflow_reader_lag_ms") == 0 or None, 10, what="lag 0 when idle")
                is not None
            )
            # the Redis record is rewritten once per heartbeat (1 s), so it may trail the live metrics a little
            shown = wait_for(
                lambda: (c := component(config, "reader")) and c["details"]["rows_acked"] >= 25 and c,
                10,
                interval=0.5,
                what="the heartbeat record with the 25 rows",
            )
            assert shown["details"]["position"].startswith("mysql-bin.")
        finally:
            reader.stop(signal.SIGKILL)
        # killed: no clean "stopped" record; the heartbeat goes stale (2 s here) and health fails
        health = wait_for(
            lambda: (h := cli(config, "health", "--expect", "reader")).returncode == 1 and h,
            15,
            interval=0.5,
            what="health failing after kill -9",
        )
        assert "down: no heartbeat" in health.stdout, health.stdout
        text = cli(config, "status", "--no-kafka").stdout
        assert "DOWN" in text and "no heartbeat: killed or hung" in text


# -- streams worker -------------------------------------------------------------------------------
def test_streams_worker_is_ready_after_table_recovery_and_counts_triggers(stack: None, tmp_path: Path) -> None:
    data = isolated_config_data(
        "opss",
        {
            "monitored_tables": {"items": {"triggers": ["echo"]}},
            "schedules": {"tick": {"plugin": "echo", "interval_seconds": 1}},
        },
    )
    config, port = with_ops(write_config(tmp_path, data), tmp_path)
    s = config.settings
    worker = Cdcflow(config, "streams", "worker")
    try:
        answers = readiness_answers(port, 120)
        assert answers[0] == (503, "not ready: starting: joining the group, recovering tables\n"), answers[:3]
        up = wait_for(
            lambda: ready_everywhere(config, port, "streams", worker.process.pid),
            120,
            interval=0.5,
            what="the Faust worker ready (tables recovered)",
        )
        assert up["details"]["app_id"] == s.streams.app_id and up["details"]["assigned"] > 0
        assert cli(config, "health", "--expect", "streams").returncode == 0
        triggered = cli(config, "trigger", "echo", "-p", "message=hi")
        assert triggered.returncode == 0, triggered.stderr
        wait_for(
            lambda: sample(port, "cdcflow_streams_invocations_total", plugin="echo", trigger="manual") == 1,
            30,
            what="the manual trigger counted",
        )
        assert sample(port, "cdcflow_streams_events_total", db="manual", table="") == 1
        # a row change of the monitored table: counted as an event, a match of its rule, a cdc invocation
        db = s.mysql.database
        producer = Producer(s.kafka_config())
        producer.produce(
            s.topics.row_changes(db, "items"),
            key=b'{"id":1}',
            value=json.dumps(
                {
                    "before": None,
                    "after": {"id": 1},
                    "op": "c",
                    "ts_ms": 1,
                    "event_id": "1:mysql-bin.000001:100:0",
                    "source": {"db": db, "table": "items"},
                }
            ).encode(),
        )
        assert producer.flush(10) == 0
        wait_for(
            lambda: sample(port, "cdcflow_streams_invocations_total", plugin="echo", trigger="cdc") == 1,
            30,
            what="the row change's invocation counted",
        )
        metrics = scrape(port)
        assert metrics[("cdcflow_streams_events_total", (("db", db), ("table", "items")))] == 1
        # its transaction's size and commit time reach the heartbeat and the status line
        rows = wait_for(
            lambda: (c := component(config, "streams")) and (r := c["details"]["row_changes"])["events"] == 1 and r,
            30,
            what="the row change in the heartbeat",
        )
        assert rows["recent_batch_events"] == 1.0 and rows["recent_commit_ms"] > 0
        status = cli(config, "status", "--no-kafka").stdout
        assert "last ~20 transactions: 1.0 change(s) each, offsets + commit " in status
        # the schedule fired (the leader's timer), and status shows its next fire
        wait_for(
            lambda: sample(port, "cdcflow_streams_schedule_fires_total", schedule="tick") >= 1,
            20,
            what="a schedule fire counted",
        )
        schedules = json.loads(cli(config, "status", "--json", "--no-kafka").stdout)["schedules"]
        assert [s["name"] for s in schedules] == ["tick"] and schedules[0]["last_fire"] is not None
        assert sum(v for (name, _), v in metrics.items() if name == "cdcflow_streams_matches_total") == 1
        worker.stop()
        assert worker.process.returncode == 0, worker.log()[-3000:]
        health = cli(config, "health", "--expect", "streams")
        assert health.returncode == 1 and "stopped" in health.stdout
    finally:
        worker.stop()
        remove_test_resources(
            s,
            [
                s.topics.row_changes(s.mysql.database, "items"),
                s.topics.triggers,
                s.topics.invoke("echo"),
                s.topics.invoke("echo", "high"),
            ],
        )


# -- supervised: `cdcflow run` ---------------------------------------------------------------------
def test_cdcflow_run_logs_json_lines_for_itself_and_its_children(runner_config) -> None:  # type: ignore[no-untyped-def]
    config, port, _ = runner_config
    run = Cdcflow(config, "run", "--only", "runners", log_format="json")
    try:
        wait_for(
            lambda: (c := component(config, "runner")) and c["state"] == "ready" and c["pid"] != run.process.pid,
            120,
            interval=0.3,
            what="the supervised runner ready",
        )
    finally:
        run.stop(signal.SIGINT)
    lines = [line for line in run.lines if line.strip()]
    parsed = [json.loads(line) for line in lines]  # every line, the supervisor's own included
    components = {p["component"] for p in parsed}
    assert {"runner", "supervisor"} <= components, components
    assert any(p["message"] == "stopping all components" for p in parsed)


def test_a_port_in_use_leaves_the_component_running_without_its_server(stack: None) -> None:
    from schemas.runtime.components import read_records, redis_client
    from schemas.runtime.observability import ComponentObservability
    from tests.support import isolated_settings

    settings = isolated_settings("port")
    settings.observability.heartbeat_seconds = 0.2
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        obs = ComponentObservability("runner", settings, taken.getsockname()[1]).start()
        try:
            assert obs.port is None
            client = redis_client(settings)
            seen = wait_for(lambda: read_records(client, settings.redis.key_prefix), 10, what="a heartbeat")
            client.close()
            assert seen[0].state == "ready" and seen[0].port is None
        finally:
            obs.stop()
            remove_test_resources(settings, [])
