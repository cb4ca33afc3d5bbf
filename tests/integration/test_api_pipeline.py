"""The API driving the real pipeline (`cdcflow run --only streams --only runners`): a trigger with
`wait` returns the plugin's result, parameters are refused before anything is sent, an idempotency
key gives one invocation, and a replay started over HTTP runs each replayed invocation exactly once."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.support import isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.api import ApiServer, api_server, pipeline_running


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    directory = tmp_path_factory.mktemp("apipipe")
    config = write_config(directory, isolated_config_data("apipipe"))
    try:
        with pipeline_running(config, directory / "run.log"), api_server(config, directory / "api.log") as server:
            yield server
    finally:
        remove_test_resources(config.settings, [])


def test_trigger_with_wait_returns_the_plugins_result(api: ApiServer) -> None:
    with api.client("trigger") as client:
        done = client.post("/api/plugins/echo/invocations", params={"wait": 60}, json={"params": {"message": "hi"}})
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["status"] == "success"
        assert body["result"]["output"]["message"] == "hi"
        assert body["result"]["output"]["invocation_id"] == body["invocation_id"]
        failing = client.post("/api/plugins/echo/invocations", params={"wait": 60}, json={"params": {"mode": "raise"}})
        assert failing.json()["status"] == "failed"
        assert "echo was asked to fail" in failing.json()["result"]["error"]["message"]
        assert client.get(f"/api/invocations/{body['invocation_id']}").json()["status"] == "success"
        run = client.get(f"/api/runs/{body['invocation_id']}").json()["result"]
        assert run["params"]["message"] == "hi"
        assert run["trigger"]["kind"] == "manual" and run["trigger"]["requested_by"] == "api:test-trigger"


def test_bad_parameters_are_refused_before_anything_is_sent(api: ApiServer) -> None:
    with api.client("trigger") as client:
        bad = client.post("/api/plugins/echo/invocations", json={"params": {"seconds": "soon", "nope": 1}})
        assert bad.status_code == 422
        fields = {e["field"] for e in bad.json()["errors"]}
        assert {"params.seconds", "params.nope"} <= fields, bad.text
        assert client.post("/api/plugins/nope/invocations", json={}).status_code == 404
        for raw, field in (
            (b'{"params": {"seconds": NaN}}', "params.seconds"),
            (b'{"params": {"data": [1e999]}}', "params.data"),
            (b'{"params": {"data": 99999999999999999999999999}}', "params.data"),
        ):
            refused = client.post(
                "/api/plugins/echo/invocations", content=raw, headers={"content-type": "application/json"}
            )
            assert refused.status_code == 422, refused.text
            assert [e["field"] for e in refused.json()["errors"]] == [field]
    with api.client("read") as reader:
        assert reader.post("/api/plugins/echo/invocations", json={}).status_code == 403


def test_idempotency_key_gives_one_invocation(api: ApiServer) -> None:
    with api.client("trigger") as client:
        first = client.post("/api/plugins/echo/invocations", json={"params": {}, "idempotency_key": "order-7"})
        second = client.post("/api/plugins/echo/invocations", json={"params": {}, "idempotency_key": "order-7"})
        assert first.status_code == second.status_code == 202
        assert first.json()["invocation_id"] == second.json()["invocation_id"]
        other = client.post("/api/plugins/echo/invocations", json={"params": {}, "idempotency_key": "order-8"})
        assert other.json()["invocation_id"] != first.json()["invocation_id"]


def test_plugins_are_listed_with_their_workers(api: ApiServer) -> None:
    with api.client("read") as reader:
        plugins = {p["name"]: p for p in reader.get("/api/plugins").json()["plugins"]}
        assert plugins["echo"]["state"] == "serving"
        assert plugins["echo"]["workers_alive"] >= 1
        detail = reader.get("/api/plugins/echo").json()
        assert detail["manifest"]["parameters"]["mode"]["default"] == "echo"
        assert reader.get("/api/plugins/nope").status_code == 404
    with api.client("admin") as admin:
        assert admin.post("/api/plugins/echo/reload").status_code == 202


def test_a_replay_started_over_http_runs_each_invocation_once(api: ApiServer) -> None:
    with api.client("admin") as admin:
        sent = [
            admin.post("/api/plugins/echo/invocations", params={"wait": 60}, json={"params": {"message": f"r{i}"}})
            for i in range(3)
        ]
        assert all(r.json()["status"] == "success" for r in sent)
        body = {"source": "invoke:echo", "filters": {"where": ["params.message ~ ^r[0-9]$"]}}
        started = admin.post("/api/replays", json=body)
        assert started.status_code == 202, started.text
        replay_id = started.json()["replay_id"]
        progress = wait_for(
            lambda: (p := admin.get(f"/api/replays/{replay_id}").json())["state"] != "running" and p,
            90,
            interval=0.3,
            what="the replay to finish",
        )
        assert progress["state"] == "finished" and progress["sent"] == 3, progress

        def replayed() -> list[dict]:
            return admin.get("/api/runs", params={"trigger_kind": "replay", "plugin": "echo", "limit": 50}).json()[
                "runs"
            ]

        runs = wait_for(lambda: len(r := replayed()) >= 3 and r, 60, what="three replayed runs")
        assert sorted(r["output"]["message"] for r in runs) == ["r0", "r1", "r2"]
        again = admin.post("/api/replays", json=body).json()
        second = wait_for(
            lambda: (p := admin.get(f"/api/replays/{again['replay_id']}").json())["state"] != "running" and p, 60
        )
        assert second["state"] == "finished" and second["sent"] == 0, second
        assert len(replayed()) == 3, "a replay run twice must not run anything twice"


def test_events_stream_results_as_they_land(api: ApiServer) -> None:
    with api.client("trigger") as client, client.stream("GET", "/api/events", timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines) == ": connected"
        sent = client.post("/api/plugins/echo/invocations", json={"params": {"message": "live"}}).json()
        event = None
        for line in lines:
            if line.startswith("data: ") and sent["invocation_id"] in line:
                event = json.loads(line[len("data: ") :])
                break
        assert event is not None and event["status"] == "success" and event["plugin"] == "echo"


def test_health_status_and_dead_letters(api: ApiServer) -> None:
    with api.client("admin") as admin:
        health = admin.get("/api/health").json()
        assert health["healthy"] is True, health
        assert any(line.startswith("ok    runner") for line in health["lines"])
        status = admin.get("/api/status").json()
        assert {c["kind"] for c in status["components"]} >= {"streams", "runner", "api"}
        assert "echo" in status["plugins"]
        failed = admin.post("/api/plugins/echo/invocations", params={"wait": 60}, json={"params": {"mode": "raise"}})
        dead_id = failed.json()["invocation_id"]
        assert failed.json()["status"] == "failed"

        def dead_letter() -> dict | None:
            entries = admin.get("/api/dlq", params={"plugin": "echo"}).json()["entries"]
            return next((e for e in entries if e["dlq_id"] == dead_id), None)

        entry = wait_for(dead_letter, 60, what="the dead letter")
        assert entry["replayed"] is None and "echo was asked to fail" in entry["error"]["message"]
        replayed = admin.post("/api/dlq/replay", json={"ids": [dead_id]}).json()
        assert replayed[0]["dlq_id"] == dead_id and replayed[0]["replayed_as"]
        assert admin.post("/api/dlq/replay", json={"ids": [dead_id]}).json()[0]["replayed_as"] is None
        assert admin.post("/api/dlq/replay", json={"ids": ["no-such-id"]}).status_code == 404
        assert wait_for(lambda: (dead_letter() or {}).get("replayed"), 30, what="the replay mark")


def test_a_replay_can_be_stopped(api: ApiServer) -> None:
    with api.client("admin") as admin:
        for i in range(4):
            admin.post("/api/plugins/echo/invocations", params={"wait": 60}, json={"params": {"message": f"s{i}"}})
        started = admin.post("/api/replays", json={"source": "invoke:echo", "rate": 1, "dry_run": True})
        assert started.status_code == 202, started.text
        replay_id = started.json()["replay_id"]
        assert admin.delete(f"/api/replays/{replay_id}").status_code == 202
        final = wait_for(
            lambda: (p := admin.get(f"/api/replays/{replay_id}").json())["state"] != "running" and p,
            30,
            what="the replay to stop",
        )
        assert final["state"] == "stopped" and final["scanned"] < final["total"], final
        assert admin.delete("/api/replays/no-such-replay").status_code == 404
