"""The reader's live figures, published to Redis so `cdcflow cdc status` (on any host) can show them.

One key per reader: `<redis.key_prefix>:cdc:status:<cdc.name>`, a JSON object rewritten about once
a second. A status that stops changing means the reader is gone: `updated_ms` tells how long ago.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import orjson
import redis

from schemas.settings import Settings

log = logging.getLogger(__name__)

PUBLISH_INTERVAL_S = 1.0


def status_key(settings: Settings) -> str:
    return f"{settings.redis.key_prefix}:cdc:status:{settings.cdc.name}"


class RateMeter:
    """Rows per second over the last publishing interval."""

    def __init__(self) -> None:
        self._last_count = 0
        self._last_at = time.monotonic()
        self.rate = 0.0

    def update(self, count: int) -> float:
        now = time.monotonic()
        elapsed = now - self._last_at
        if elapsed > 0:
            self.rate = (count - self._last_count) / elapsed
        self._last_count, self._last_at = count, now
        return self.rate


class StatusPublisher:
    """Writes the status JSON; never lets a Redis problem disturb the reader (the figures are a view)."""

    def __init__(self, settings: Settings, client: redis.Redis | None = None):
        self.key = status_key(settings)
        self.client = client or redis.Redis.from_url(
            settings.redis.url.get_secret_value(), socket_timeout=1, socket_connect_timeout=1
        )
        self._next_at = 0.0
        self._last_failure_log = 0.0
        self.meter = RateMeter()
        self.identity = {"host": socket.gethostname(), "pid": os.getpid()}

    def due(self) -> bool:
        return time.monotonic() >= self._next_at

    def publish(self, figures: dict[str, Any]) -> None:
        self._next_at = time.monotonic() + PUBLISH_INTERVAL_S
        body = {**self.identity, **figures, "updated_ms": int(time.time() * 1000)}
        try:
            self.client.set(self.key, orjson.dumps(body))
        except redis.RedisError as e:
            if time.monotonic() - self._last_failure_log > 60:
                self._last_failure_log = time.monotonic()
                log.warning("could not publish the reader status to Redis (%s); streaming goes on", e)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:
            pass


def read_status(settings: Settings) -> dict[str, Any] | None:
    client = redis.Redis.from_url(settings.redis.url.get_secret_value(), socket_timeout=5)
    try:
        raw = client.get(status_key(settings))
        return orjson.loads(raw) if raw else None
    finally:
        client.close()


def format_status(status: dict[str, Any], now_ms: int | None = None) -> str:
    now_ms = now_ms or int(time.time() * 1000)
    age_s = (now_ms - status.get("updated_ms", 0)) / 1000
    state = status.get("state", "?")
    if age_s > 10 and state == "running":
        state = f"STALE (no update for {age_s:.0f}s: reader stopped or unreachable)"
    lag = status.get("lag_ms")
    lines = [
        ("reader", f"{status.get('name')}  ({status.get('host')} pid {status.get('pid')})"),
        ("state", state),
        ("position", status.get("position") or "-"),
        ("gtid set", status.get("gtid_set") or "-"),
        ("checkpoint", status.get("checkpoint") or "-"),
        ("lag", "-" if lag is None else f"{lag} ms behind source"),
        ("rows/s", f"{status.get('rows_per_s', 0):.1f}"),
        ("rows acked", str(status.get("rows_acked", 0))),
        ("transactions", str(status.get("transactions", 0))),
        ("last error", status.get("last_error") or "-"),
        ("updated", f"{age_s:.1f}s ago"),
    ]
    return "\n".join(f"{k:<13}{v}" for k, v in lines)
