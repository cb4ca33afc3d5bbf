"""A real API server for tests: `cdcflow api serve` in its own process on a free port, with an
isolated config, and one token per scope made through the same TokenStore the CLI uses."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from console.api.tokens import TokenStore
from schemas.config import Config
from schemas.runtime.components import redis_client
from tests.support import REPO_ROOT, wait_for

# A rule with conditions to explain and a schedule to pause: what the API and dashboard tests steer.
RULES = {
    "monitored_tables": {
        "orders": {
            "name": "paid_orders",
            "triggers": ["echo"],
            "operations": ["INSERT", "UPDATE"],
            "conditions": {"status": "paid", "amount": {"gt": 100}},
            "params": {"message": "order {after.id}"},
        }
    },
    "schedules": {"nightly": {"plugin": "echo", "cron": "0 3 * * *", "params": {"message": "night"}}},
}


@dataclass
class ApiServer:
    base_url: str
    config: Config
    tokens: dict[str, str] = field(default_factory=dict)  # scope -> token text
    process: subprocess.Popen[bytes] | None = None

    def client(self, scope: str | None = "admin", token: str | None = None) -> httpx.Client:
        """A client sending the token of `scope` (or `token`; neither: no Authorization header)."""
        token = token or (self.tokens[scope] if scope else None)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token_store(config: Config) -> TokenStore:
    settings = config.settings
    return TokenStore(redis_client(settings, timeout=5.0), settings.redis.key_prefix, settings.api)


@contextmanager
def api_server(
    config: Config, log_path: Path, show_log: bool = True, tokens: dict[str, str] | None = None
) -> Iterator[ApiServer]:
    """The API server for `config`, ready (OpenAPI served), with tokens `read`, `trigger`, `admin`;
    the end of its log printed when it stops (for a failing test), unless `show_log` is False.
    `tokens` (scope -> text, declared in the config's api.tokens): none are made in Redis, for a
    server whose Redis is unreachable."""
    port = free_port()
    server = ApiServer(f"http://127.0.0.1:{port}", config, dict(tokens or {}))
    if tokens is None:
        store = token_store(config)
        for scope in ("read", "trigger", "admin"):
            server.tokens[scope] = store.create(f"test-{scope}", [scope])[0]  # type: ignore[list-item]
    with log_path.open("wb") as log:
        server.process = subprocess.Popen(
            [sys.executable, "-m", "console.cli", "--config", str(config.path), "api", "serve", "--port", str(port)],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: _serving(server), 60, interval=0.2, what="the API server")
            yield server
        finally:
            server.process.terminate()
            try:
                server.process.wait(20)
            except subprocess.TimeoutExpired:
                server.process.kill()
            if show_log:
                print(log_path.read_text(errors="replace")[-4000:])


def _serving(server: ApiServer) -> bool:
    assert server.process is not None
    if server.process.poll() is not None:
        raise AssertionError(f"the API server exited with code {server.process.returncode}")
    try:
        return httpx.get(f"{server.base_url}/openapi.json", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def pipeline_running(config: Config, log_path: Path, only: tuple[str, ...] = ("streams", "runners")) -> Iterator[None]:
    """`cdcflow run --only ...` as a user starts it, ready once its components report ready."""
    from console.status_report import check_health

    kinds = ["streams" if name == "streams" else "runner" for name in only if name != "cdc"]
    args = [arg for name in only for arg in ("--only", name)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "console.cli", "--config", str(config.path), "run", *args],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(lambda: check_health(config, kinds)[0], 120, interval=0.5, what=f"{', '.join(kinds)} ready")
            yield
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
            print(log_path.read_text(errors="replace")[-4000:])
