"""Heartbeat records of the long-running components, in Redis, so `cdcflow status` sees them from any host.

One key per component instance: `<redis.key_prefix>:components:<kind>:<host>:<pid>` (listed in the
set `<redis.key_prefix>:components`), a JSON object
rewritten every `observability.heartbeat_seconds` and expiring 10 minutes after the last write, so
a crashed instance shows as down for a while and then disappears. A clean stop writes state
`stopped` once (an intentional stop is not an outage). The instance is host:pid, not a random id:
a Faust worker that re-execs itself after a rules change keeps its pid and so its record.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any, Literal, cast

import orjson
import redis
from pydantic import BaseModel, Field

from schemas.settings import Settings

Kind = Literal["reader", "streams", "runner", "api"]
KINDS: tuple[Kind, ...] = ("reader", "streams", "runner", "api")
RECORD_TTL_SECONDS = 600


class ComponentRecord(BaseModel):
    kind: Kind
    instance: str
    host: str
    pid: int
    port: int | None = None
    state: Literal["starting", "ready", "not ready", "stopped"] = "starting"
    reason: str | None = None  # why it is not ready
    started_ms: int
    updated_ms: int
    details: dict[str, Any] = Field(default_factory=dict)

    def liveness(self, now_ms: int, stale_after_seconds: float) -> Literal["up", "down", "stopped"]:
        if self.state == "stopped":
            return "stopped"
        return "down" if now_ms - self.updated_ms > stale_after_seconds * 1000 else "up"

    def age_seconds(self, now_ms: int) -> float:
        return max(0.0, (now_ms - self.updated_ms) / 1000)


def this_instance() -> tuple[str, int, str]:
    host, pid = socket.gethostname(), os.getpid()
    return host, pid, f"{host}:{pid}"


def record_key(prefix: str, kind: str, instance: str) -> str:
    return f"{prefix}:components:{kind}:{instance}"


def redis_client(settings: Settings, timeout: float = 2.0) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis.url.get_secret_value(), socket_timeout=timeout, socket_connect_timeout=timeout
    )


def index_key(prefix: str) -> str:
    """The set of record keys: reading them is one SMEMBERS, not a SCAN of a keyspace that holds the
    whole run history."""
    return f"{prefix}:components"


def write_record(client: redis.Redis, prefix: str, record: ComponentRecord) -> None:
    key = record_key(prefix, record.kind, record.instance)
    pipe = client.pipeline(transaction=False)
    pipe.set(key, record.model_dump_json(), ex=RECORD_TTL_SECONDS)
    pipe.sadd(index_key(prefix), key)
    pipe.execute()


def read_records(client: redis.Redis, prefix: str) -> list[ComponentRecord]:
    keys = sorted(cast(set[bytes], client.smembers(index_key(prefix))))
    if not keys:
        return []
    out = []
    for key, raw in zip(keys, cast(list[bytes | None], client.mget(keys)), strict=True):
        if raw is None:  # expired: its instance is gone for good
            client.srem(index_key(prefix), key)
            continue
        try:
            out.append(ComponentRecord.model_validate(orjson.loads(raw)))
        except ValueError:
            continue  # a record of another version: not ours to judge
    return sorted(out, key=lambda r: (KINDS.index(r.kind), r.instance))


def read_records_once(settings: Settings, timeout: float = 2.0) -> list[ComponentRecord]:
    """read_records on a connection of its own, closed after: for a caller that keeps no client."""
    client = redis_client(settings, timeout)
    try:
        return read_records(client, settings.redis.key_prefix)
    finally:
        client.close()


def now_ms() -> int:
    return int(time.time() * 1000)
