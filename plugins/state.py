"""What runners are serving, and reload requests, in Redis: the runner writes, the CLI reads.

Keys (prefix = settings.redis.key_prefix):
  <prefix>:plugins:state    hash  plugin name -> JSON {version, code_hash, loaded_at, state, last_error,
                                  error_at, path, runner}; the last runner to change it wins (runners
                                  of one deployment serve the same folders)
  <prefix>:plugins:reload   hash  plugin name -> epoch seconds of the last `cdcflow plugins reload NAME`
A reload request is a timestamp rather than a queue entry, so every runner sees it (each remembers
the last one it acted on) and a runner started later ignores requests older than itself.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import orjson
import redis

# unhealthy: served, but its environment check failed in a worker, so its calls fail at once (last_error says why)
PluginState = Literal["serving", "building", "failed", "unhealthy"]


class PluginStates:
    def __init__(self, client: redis.Redis, prefix: str):
        self.client = client
        self.state_key = f"{prefix}:plugins:state"
        self.reload_key = f"{prefix}:plugins:reload"

    def get(self, name: str) -> dict[str, Any] | None:
        raw = self.client.hget(self.state_key, name)
        return orjson.loads(raw) if raw is not None else None

    def all(self) -> dict[str, dict[str, Any]]:
        return {_as_text(k): orjson.loads(v) for k, v in self.client.hgetall(self.state_key).items()}

    def update(self, name: str, **fields: Any) -> dict[str, Any]:
        """Merge fields into the plugin's record (read-modify-write; only runners write it)."""
        record = self.get(name) or {"name": name}
        record.update(fields)
        self.client.hset(self.state_key, name, orjson.dumps(record))
        return record

    def request_reload(self, name: str) -> float:
        at = time.time()
        self.client.hset(self.reload_key, name, repr(at))
        return at

    def reload_requests(self) -> dict[str, float]:
        return {_as_text(k): float(v) for k, v in self.client.hgetall(self.reload_key).items()}


def _as_text(key: bytes | str) -> str:
    # redis-py types replies as bytes | str (str with decode_responses=True, which these clients never set)
    return key.decode() if isinstance(key, bytes) else key
