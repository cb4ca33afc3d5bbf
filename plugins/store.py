"""Run history and idempotency in Redis.

Keys (prefix = settings.redis.key_prefix):
  <prefix>:run:<invocation_id>          JSON of the Result, expires after result_ttl_seconds
  <prefix>:done:<invocation_id>         "1" once a result is recorded: a redelivered id is never run again
  <prefix>:runs                         sorted set of invocation ids by finish time (all plugins)
  <prefix>:runs:plugin:<name>           the same, per plugin
  <prefix>:runs:status:<status>         the same, per status
Index entries older than the TTL are trimmed on write, so the indexes do not outgrow the runs.
A batch of results is written by one Lua script call: one round trip and one command per batch
(redis-py's per-command overhead, not Redis, is what limits throughput), and the result, its done
marker and its index entries appear together or not at all.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

import redis

from schemas.result import Result
from schemas.settings import Settings


# KEYS: [all-runs index, then per result: run key, done key, plugin index, status index]
# ARGV: [ttl, trim horizon ("" = no trim), then per result: invocation id, score, payload]
_RECORD_SCRIPT = """
local ttl = tonumber(ARGV[1])
local horizon = ARGV[2]
local n = (#ARGV - 2) / 3
local touched = {[KEYS[1]] = true}
for i = 0, n - 1 do
  local id, score, payload = ARGV[3 + i * 3], ARGV[4 + i * 3], ARGV[5 + i * 3]
  local k = 2 + i * 4
  redis.call('SET', KEYS[k], payload, 'EX', ttl)
  redis.call('SET', KEYS[k + 1], '1', 'EX', ttl)
  redis.call('ZADD', KEYS[1], score, id)
  redis.call('ZADD', KEYS[k + 2], score, id)
  redis.call('ZADD', KEYS[k + 3], score, id)
  touched[KEYS[k + 2]] = true
  touched[KEYS[k + 3]] = true
end
if horizon ~= '' then
  for key, _ in pairs(touched) do redis.call('ZREMRANGEBYSCORE', key, '-inf', horizon) end
end
return n
"""
# Index trimming is housekeeping: once a second is plenty, and it keeps busy batches cheap.
TRIM_INTERVAL_SECONDS = 1.0


class RunStore:
    def __init__(self, settings: Settings, client: redis.Redis | None = None):
        self.prefix = settings.redis.key_prefix
        self.ttl = settings.runners.result_ttl_seconds
        self.client = client or redis.Redis.from_url(
            settings.redis.url.get_secret_value(), socket_timeout=10, socket_connect_timeout=5,
            health_check_interval=30,
        )
        self._record = self.client.register_script(_RECORD_SCRIPT)
        self._last_trim = 0.0
        self._trim_lock = threading.Lock()

    # -- keys ------------------------------------------------------------------------------
    def run_key(self, invocation_id: str) -> str:
        return f"{self.prefix}:run:{invocation_id}"

    def done_key(self, invocation_id: str) -> str:
        return f"{self.prefix}:done:{invocation_id}"

    def index_key(self, plugin: str | None = None, status: str | None = None) -> str:
        if plugin is not None:
            return f"{self.prefix}:runs:plugin:{plugin}"
        if status is not None:
            return f"{self.prefix}:runs:status:{status}"
        return f"{self.prefix}:runs"

    # -- writes ----------------------------------------------------------------------------
    def record(self, result: Result) -> None:
        self.record_many([result])

    def record_many(self, results: Sequence[Result], payloads: Sequence[bytes] | None = None) -> None:
        """Store results, their done markers and index entries in one round trip.

        `payloads` are the results' JSON if the caller already has it (it is produced to Kafka too).
        """
        if not results:
            return
        if payloads is None:
            payloads = [r.model_dump_json().encode() for r in results]
        keys: list[str] = [self.index_key()]
        args: list[str | bytes | int] = [self.ttl, self._trim_horizon()]
        for result, payload in zip(results, payloads):
            iid = result.invocation_id
            keys += [self.run_key(iid), self.done_key(iid), self.index_key(plugin=result.plugin),
                     self.index_key(status=result.status)]
            args += [iid, repr(result.finished_at.timestamp()), payload]
        self._record(keys=keys, args=args)

    def _trim_horizon(self) -> str:
        now = time.time()
        with self._trim_lock:
            if now - self._last_trim < TRIM_INTERVAL_SECONDS:
                return ""
            self._last_trim = now
        return repr(now - self.ttl)

    # -- reads -----------------------------------------------------------------------------
    def done_ids(self, invocation_ids: Iterable[str]) -> set[str]:
        """Which of these ids already have a recorded result (one round trip)."""
        ids = list(dict.fromkeys(invocation_ids))
        if not ids:
            return set()
        flags = self.client.mget([self.done_key(i) for i in ids])
        return {i for i, flag in zip(ids, flags) if flag is not None}

    def is_done(self, invocation_id: str) -> bool:
        return bool(self.done_ids([invocation_id]))

    def get_raw(self, invocation_id: str) -> bytes | None:
        return self.client.get(self.run_key(invocation_id))

    def get(self, invocation_id: str) -> Result | None:
        raw = self.get_raw(invocation_id)
        return Result.model_validate_json(raw) if raw is not None else None

    def list(self, plugin: str | None = None, status: str | None = None, limit: int = 20) -> list[Result]:
        """Newest first. Uses the narrowest index and filters the other criterion client-side."""
        index = self.index_key(plugin=plugin) if plugin is not None else self.index_key(status=status)
        out: list[Result] = []
        start, page = 0, max(limit * 2, 50)
        while len(out) < limit:
            ids = self.client.zrevrange(index, start, start + page - 1)
            if not ids:
                break
            start += page
            raws = self.client.mget([self.run_key(i.decode()) for i in ids])
            for raw in raws:
                if raw is None:  # expired between the index read and now
                    continue
                result = Result.model_validate_json(raw)
                if status is not None and result.status != status:
                    continue
                out.append(result)
                if len(out) >= limit:
                    break
        return out

    def ping(self) -> bool:
        return bool(self.client.ping())

    def close(self) -> None:
        self.client.close()
