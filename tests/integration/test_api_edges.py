"""The HTTP API at its edges, against a real server (`cdcflow api serve`) on the real stack: Redis or
Kafka unreachable is a 503 naming which (and no secret), CORS off unless an origin is configured,
token texts never in the log or the audit trail, and the live event stream's component and
schedule events (from a real streams worker)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from console.api.tokens import token_hash
from schemas.config import Config
from schemas.runtime.components import ComponentRecord, now_ms, redis_client, write_record
from tests.support import REPO_ROOT, isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.api import RULES, ApiServer, api_server, free_port, pipeline_running, token_store

PROBLEM = "application/problem+json"


def config_with(tmp_path: Path, tag: str, **sections: Any) -> Config:
    data = isolated_config_data(tag, RULES)
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return write_config(tmp_path, data)


def assert_unavailable(response: httpx.Response, service: str, secret: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == 503 and service in body["detail"], body
    assert secret not in response.text


def test_redis_unreachable_is_a_503_naming_redis_without_its_password(tmp_path: Path) -> None:
    password = "redis-pw-" + secrets.token_hex(8)
    admin = "edge-admin-" + secrets.token_urlsafe(24)  # declared in the config: no Redis needed to know it
    config = config_with(
        tmp_path,
        "apiredis",
        redis={"url": f"redis://:{password}@127.0.0.1:{free_port()}/0"},
        api={"tokens": [{"name": "edge-admin", "scopes": ["admin"], "sha256": token_hash(admin)}]},
    )
    log = tmp_path / "api.log"
    with api_server(config, log, tokens={"admin": admin}) as server, server.client("admin") as client:
        assert_unavailable(client.get("/api/runs"), "Redis", password)
        assert_unavailable(client.post("/api/schedules/nightly/pause"), "Redis", password)
        assert_unavailable(client.get("/api/health"), "Redis", password)
        # the server itself stays up and answers what needs neither service
        assert client.get("/openapi.json").status_code == 200
        assert server.process is not None and server.process.poll() is None
    text = log.read_text(errors="replace")
    assert "Redis" in text, "the log says what failed"
    assert password not in text and admin not in text


def test_kafka_unreachable_is_a_503_naming_kafka_without_its_password(tmp_path: Path) -> None:
    password = "kafka-pw-" + secrets.token_hex(8)
    sasl = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "PLAIN", "sasl.username": "edge"}
    config = config_with(
        tmp_path,
        "apikafka",
        kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}", "client_options": {**sasl, "sasl.password": password}},
    )
    log = tmp_path / "api.log"
    try:
        with api_server(config, log) as server, server.client("admin") as client:
            trigger = client.post("/api/plugins/echo/invocations", json={"params": {"message": "x"}}, timeout=90)
            assert_unavailable(trigger, "Kafka", password)
            assert_unavailable(client.get("/api/dlq", timeout=90), "Kafka", password)
            # Redis is fine: what reads only Redis still answers
            assert client.get("/api/runs").status_code == 200
            health = client.get("/api/health")
            assert health.status_code == 200 and health.json()["healthy"] is False
            assert server.process is not None and server.process.poll() is None
    finally:
        remove_test_resources(config.settings, [])
    assert password not in log.read_text(errors="replace")


def preflight(client: httpx.Client, origin: str) -> httpx.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    return client.options("/api/schedules/nightly/pause", headers=headers)


def test_cors_is_off_unless_an_origin_is_configured(tmp_path: Path) -> None:
    allowed, other = "https://ops.example.com", "https://evil.example.com"
    (tmp_path / "off").mkdir()
    (tmp_path / "on").mkdir()
    plain = config_with(tmp_path / "off", "apicors")
    opened = config_with(tmp_path / "on", "apicors", api={"cors_origins": [allowed]})
    try:
        with api_server(plain, tmp_path / "off.log") as server, server.client("read") as client:
            response = client.get("/api/runs", headers={"Origin": allowed})
            assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
            refused = preflight(client, allowed)
            assert refused.status_code >= 400 and "access-control-allow-origin" not in refused.headers
        with api_server(opened, tmp_path / "on.log") as server, server.client("read") as client:
            answered = preflight(client, allowed)
            assert answered.status_code == 200, answered.text
            assert answered.headers["access-control-allow-origin"] == allowed
            assert "authorization" in answered.headers["access-control-allow-headers"].lower()
            response = client.get("/api/runs", headers={"Origin": allowed})
            assert response.status_code == 200 and response.headers["access-control-allow-origin"] == allowed
            stranger = client.get("/api/runs", headers={"Origin": other})
            assert "access-control-allow-origin" not in stranger.headers
            refused = preflight(client, other)
            assert refused.status_code >= 400 and "access-control-allow-origin" not in refused.headers
    finally:
        remove_test_resources(plain.settings, [])
        remove_test_resources(opened.settings, [])


def test_tokens_never_reach_the_log_or_the_audit_trail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDCFLOW_LOG_LEVEL", "DEBUG")  # the server logs as much as it ever does
    config = config_with(tmp_path, "apitok")
    store = token_store(config)
    revoked, record = store.create("edge-revoked", ["admin"])
    store.revoke(record.id)
    log = tmp_path / "api.log"
    try:
        with api_server(config, log) as server:
            valid = server.tokens["admin"]
            wrong = valid[:-6] + ("AAAAAA" if not valid.endswith("AAAAAA") else "BBBBBB")  # right id, wrong secret
            texts = [valid, wrong, revoked, valid.rsplit("_", 1)[1], revoked.rsplit("_", 1)[1]]
            statuses = {token: _pause_with(server, token) for token in (valid, wrong, revoked)}
            assert statuses == {valid: 200, wrong: 401, revoked: 401}
            with server.client(None) as anonymous:
                for name in ("token", "access_token", "api_key"):  # the API reads tokens from the header only
                    assert anonymous.get("/api/runs", params={name: valid}).status_code == 401
                    assert anonymous.post("/api/schedules/nightly/resume", params={name: valid}).status_code == 401
            with server.client("admin") as client:
                audit = client.get("/api/audit", params={"limit": 500})
            assert audit.status_code == 200
            entries = audit.json()["entries"]
            assert sorted(e["status"] for e in entries if e["target"] == "/api/schedules/nightly/pause") == [
                200,
                401,
                401,
            ]
            assert [e for e in entries if e["target"] == "/api/schedules/nightly/resume"] and not _containing(
                audit.text, texts
            )
            cli = subprocess.run(
                [sys.executable, "-m", "console.cli", "--config", str(config.path), "api", "audit", "--limit", "500"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert cli.returncode == 0 and "pause" in cli.stdout, cli.stderr
            assert not _containing(cli.stdout + cli.stderr, texts)
    finally:
        remove_test_resources(config.settings, [])
    logged = log.read_text(errors="replace")
    assert " DEBUG " in logged and not _containing(logged, texts)


def _pause_with(server: ApiServer, token: str) -> int:
    with server.client(token=token) as client:
        return client.post("/api/schedules/nightly/pause").status_code


def _containing(text: str, secrets_: list[str]) -> list[str]:
    return [s for s in secrets_ if s in text]


class EventReader:
    """`GET /api/events` read in a thread, as a browser's EventSource would, into (event, data) pairs."""

    def __init__(self, server: ApiServer):
        self.server = server
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        timeout = httpx.Timeout(30.0, read=120.0)  # keep-alives come every 15 s
        try:
            with self.server.client("read") as client, client.stream("GET", "/api/events", timeout=timeout) as stream:
                kind = ""
                for line in stream.iter_lines():
                    if line == ": connected":
                        self.connected.set()
                    elif line.startswith("event: "):
                        kind = line[len("event: ") :]
                    elif line.startswith("data: "):
                        self.events.append((kind, json.loads(line[len("data: ") :])))
        except httpx.HTTPError:
            pass  # the server stopped

    def first(self, event: str, **fields: Any) -> dict[str, Any] | None:
        for name, data in list(self.events):
            if name == event and all(data.get(f) == v for f, v in fields.items()):
                return data
        return None


@pytest.fixture
def events_config(tmp_path: Path) -> Iterator[Config]:
    schedules = {"tick": {"plugin": "echo", "interval_seconds": 2, "params": {"message": "tick"}}}
    data = isolated_config_data("apievents", {"schedules": schedules})
    data["observability"] = {**data["observability"], "stale_after_seconds": 3}
    config = write_config(tmp_path, data)
    try:
        yield config
    finally:
        remove_test_resources(config.settings, [])


def test_events_stream_components_and_schedule_fires(events_config: Config, tmp_path: Path) -> None:
    settings = events_config.settings
    with api_server(events_config, tmp_path / "api.log") as server:
        reader = EventReader(server)
        assert reader.connected.wait(60), "the event stream never opened"
        # a component whose heartbeat stops without a clean stop (a crash): up, then down once stale
        client = redis_client(settings)
        at = now_ms()
        crashed = ComponentRecord(kind="reader", instance="edge:1", host="edge", pid=1, started_ms=at, updated_ms=at)
        write_record(client, settings.redis.key_prefix, crashed)
        client.close()
        wait_for(lambda: reader.first("component", instance="edge:1", liveness="up"), 30, what="reader up")
        wait_for(lambda: reader.first("component", instance="edge:1", liveness="down"), 30, what="reader down")
        # a real streams worker: up when it starts, its schedule's fires, stopped when it stops
        with pipeline_running(events_config, tmp_path / "run.log", only=("streams",)):
            wait_for(lambda: reader.first("component", kind="streams", liveness="up"), 60, what="streams up")
            fire = wait_for(lambda: reader.first("schedule", name="tick"), 60, interval=0.2, what="a fire of 'tick'")
            assert fire["fired_at"] and fire["next_fire"]
        wait_for(lambda: reader.first("component", kind="streams", liveness="stopped"), 30, what="streams stopped")


def test_cancel_with_a_blank_id_is_bad_input_and_its_conflict_is_documented(tmp_path: Path) -> None:
    # found by the fuzzer: a blank id was a 409 (a conflict with the run's state), undocumented at that
    config = config_with(tmp_path, "apicancel")
    try:
        with api_server(config, tmp_path / "api.log") as server, server.client("admin") as client:
            blank = client.post("/api/runs/%20/cancel")
            assert blank.status_code == 422 and blank.headers["content-type"] == PROBLEM
            assert [e["field"] for e in blank.json()["errors"]] == ["invocation_id"]
            responses = client.get("/openapi.json").json()["paths"]["/api/runs/{invocation_id}/cancel"]["post"]
            assert "409" in responses["responses"]
    finally:
        remove_test_resources(config.settings, [])
