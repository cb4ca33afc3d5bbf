"""One small HTTP server and one heartbeat thread per long-running component.

    GET /metrics   Prometheus text format of the component's own registry
    GET /healthz   200 while the component's process is alive (and its loop, where it can tell)
    GET /readyz    200 once it does its job (reader streaming, Faust tables recovered, runner pools up),
                   503 with the reason otherwise

The heartbeat thread writes the component's record to Redis (schemas/runtime/components.py) every
`observability.heartbeat_seconds`, with the same readiness, so `cdcflow status`/`health` work from
any host without reaching the ports. Neither thread ever touches the component's hot path: the
figures are read when asked for. A port already in use is logged and the component runs without
its server (two runners on one host with one config must not refuse to start). With alert channels
configured, the heartbeat thread also alerts on the other components that went down (down_watch.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from schemas.runtime.alerts import Alerter
from schemas.runtime.components import ComponentRecord, Kind, now_ms, redis_client, this_instance, write_record
from schemas.runtime.down_watch import DownWatch
from schemas.settings import Settings

log = logging.getLogger("cdcflow.observability")

# (ready, why not) ; checked by /readyz and each heartbeat
ReadyCheck = Callable[[], tuple[bool, str | None]]


def _always_ready() -> tuple[bool, str | None]:
    return True, None


class _OpsServer(ThreadingHTTPServer):
    """The HTTP server of one component's /metrics, /healthz and /readyz; its handler asks `owner`."""

    owner: ComponentObservability


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.split("?", 1)[0]
        owner = cast(_OpsServer, self.server).owner
        if path == "/metrics":
            self._send(200, generate_latest(owner.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            ok, why = owner.live()
            self._send(200 if ok else 503, (b"ok\n" if ok else f"not alive: {why}\n".encode()))
        elif path == "/readyz":
            ok, why = owner.ready()
            self._send(200 if ok else 503, (b"ready\n" if ok else f"not ready: {why}\n".encode()))
        else:
            self._send(404, b"not found: try /metrics, /healthz or /readyz\n")

    def _send(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every 15 s is not news


class ComponentObservability:
    def __init__(
        self,
        kind: Kind,
        settings: Settings,
        port: int,
        registry: CollectorRegistry | None = None,
        ready: ReadyCheck = _always_ready,
        live: ReadyCheck = _always_ready,
        details: Callable[[], dict[str, Any]] | None = None,
        on_heartbeat: Callable[[], None] | None = None,
    ):
        self.kind = kind
        self.settings = settings
        self.registry = registry or CollectorRegistry()
        self.ready_check = ready
        self.live_check = live
        self.details = details or (lambda: {})
        self.on_heartbeat = on_heartbeat
        self.host, self.pid, self.instance = this_instance()
        self.requested_port = port
        self.port: int | None = None
        self.started_ms = now_ms()
        self._server: ThreadingHTTPServer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._redis: redis.Redis | None = None
        self._last_failure_log = 0.0
        self._down_watch: DownWatch | None = None

    # -- checks (never raise: a probe answers, it does not crash) ----------------------------------
    def ready(self) -> tuple[bool, str | None]:
        try:
            return self.ready_check()
        except Exception as e:
            return False, f"readiness check failed: {type(e).__name__}: {e}"

    def live(self) -> tuple[bool, str | None]:
        try:
            return self.live_check()
        except Exception as e:
            return False, f"liveness check failed: {type(e).__name__}: {e}"

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> ComponentObservability:
        if self.requested_port:
            try:
                server = _OpsServer((self.settings.observability.bind, self.requested_port), _Handler)
            except OSError as e:
                log.warning(
                    "%s: cannot serve /metrics on %s:%d (%s); running without it",
                    self.kind,
                    self.settings.observability.bind,
                    self.requested_port,
                    e,
                )
            else:
                server.daemon_threads = True
                server.owner = self
                self._server = server
                self.port = server.server_address[1]
                threading.Thread(
                    target=server.serve_forever, kwargs={"poll_interval": 0.5}, name=f"{self.kind}-http", daemon=True
                ).start()
                log.info(
                    "%s: /metrics, /healthz, /readyz on http://%s:%d",
                    self.kind,
                    self.settings.observability.bind,
                    self.port,
                )
        self._redis = redis_client(self.settings)
        alerts = self.settings.alerts
        if alerts.on_component_down and alerts.all_channels():
            self._down_watch = DownWatch(self.settings, Alerter(alerts, self.kind).start(), self.instance)
        self._thread = threading.Thread(target=self._heartbeat_loop, name=f"{self.kind}-heartbeat", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Idempotent: the last heartbeat says `stopped`, then the server closes."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._publish(stopped=True)
        if self._down_watch is not None:
            self._down_watch.alerter.close()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._redis is not None:
            self._redis.close()

    def record(self, stopped: bool = False) -> ComponentRecord:
        ok, why = self.ready()
        try:
            details = self.details()
        except Exception as e:
            details = {"error": f"{type(e).__name__}: {e}"}
        return ComponentRecord(
            kind=self.kind,
            instance=self.instance,
            host=self.host,
            pid=self.pid,
            port=self.port,
            state="stopped" if stopped else ("ready" if ok else "not ready"),
            reason=None if ok or stopped else why,
            started_ms=self.started_ms,
            updated_ms=now_ms(),
            details=details,
        )

    def _heartbeat_loop(self) -> None:
        interval = self.settings.observability.heartbeat_seconds
        while not self._stop.is_set():
            self._publish()
            self._watch_others()
            if self.on_heartbeat is not None:
                try:
                    self.on_heartbeat()
                except Exception:
                    log.exception("%s: heartbeat hook failed", self.kind)
            self._stop.wait(interval)

    def _watch_others(self) -> None:
        if self._down_watch is None or self._redis is None:
            return
        try:
            self._down_watch.check(self._redis)
        except redis.RedisError:
            pass  # the heartbeat write above has already said Redis is unreachable

    def _publish(self, stopped: bool = False) -> None:
        if self._redis is None:
            return
        try:
            write_record(self._redis, self.settings.redis.key_prefix, self.record(stopped))
        except redis.RedisError as e:
            if time.monotonic() - self._last_failure_log > 60:
                self._last_failure_log = time.monotonic()
                log.warning("%s: could not write the heartbeat to Redis (%s); the component goes on", self.kind, e)
