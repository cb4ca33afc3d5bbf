"""Run history and idempotency in Redis.

Keys (prefix = settings.redis.key_prefix):
  <prefix>:run:<invocation_id>          JSON of the Result, expires after result_ttl_seconds
  <prefix>:done:<invocation_id>         "1" once the FINAL result is recorded (success, rejected, or the
                                        last failed attempt): a redelivered id is never run again
  <prefix>:tried:<invocation_id>:<n>    "1" once attempt n failed and its retry message was acknowledged by
                                        Kafka: a redelivered attempt n is not run again, attempt n+1 still runs
  <prefix>:attempts:<invocation_id>     list of JSON summaries of the failed attempts (for the dead letter)
  <prefix>:runs                         sorted set of invocation ids by finish time (all plugins)
  <prefix>:runs:plugin:<name>           the same, per plugin
  <prefix>:runs:status:<status>         the same, per status
  <prefix>:state:<invocation_id>        JSON of a run in progress (Result-shaped, status `pending` once a runner
                                        took the invocation, `running` once a worker started it, with host and
                                        worker pid); deleted with the attempt's result, so a state left behind
                                        is a runner that died: the run shows `running` until it is redelivered
  <prefix>:runs:status:pending|running  sorted sets of the ids in progress (by accepted / started time)
States are written by the runner's result writer in its batch round trip (record_many's `states`).
Index entries older than the TTL are trimmed on write, so the indexes do not outgrow the runs.
A `cancelled` result (plugins/cancel.py) sets the done marker to "cancelled": it is recorded once, and a
result that arrives later (the call that was being stopped, a success racing the cancel) is not stored;
the caller gets the stored result back to publish instead.
A batch of results is written by one Lua script call: one round trip and one command per batch
(redis-py's per-command overhead, not Redis, is what limits throughput), and the result, its done
marker and its index entries appear together or not at all.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import redis

from schemas.result import Result
from schemas.settings import Settings

# The per-id keys of runs in progress, done markers and cancel marks are built inside the scripts from
# the prefix (ARGV[1]): redis-py packs each argument in Python (~1.5 us), which for a 500-invocation
# batch made four key arguments per invocation cost more than the script's work in Redis.
# KEYS: [all-runs index, pending index, running index, then per result: run key, marker key (done or tried),
#        plugin index, status index, attempts list]
# ARGV: [prefix, ttl, trim horizon ("" = no trim), then per result: invocation id, score, payload, attempt
#        summary ("" = none), marker value ("1", or "cancelled": stored only if nothing final is), attempt]
# A result ends its run's state unless the state is of a later attempt (a retry taken up by a runner
# before the failed attempt's result was written). States start with {"attempt":N (run_states.py).
# The index entries are gathered per index and added with one multi-member ZADD each: a command costs
# Redis more than a member does, and a batch has a handful of indexes but hundreds of results.
# Returns [position, stored payload, ...] of the results not stored (a cancelled run's later result).
_RECORD_SCRIPT = """
local prefix = ARGV[1]
local ttl = tonumber(ARGV[2])
local horizon = ARGV[3]
local n = (#ARGV - 3) / 6
local members, indexes, ended, skipped = {}, {}, {}, {}
local function index(key, score, id)
  local t = members[key]
  if not t then
    t = {}
    members[key] = t
    indexes[#indexes + 1] = key
  end
  t[#t + 1] = score
  t[#t + 1] = id
end
for i = 0, n - 1 do
  local a = 4 + i * 6
  local id, score, payload, summary, mark = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local k = 4 + i * 5
  local done = redis.call('GET', prefix .. ':done:' .. id)
  if done == 'cancelled' or (done and mark == 'cancelled') then
    skipped[#skipped + 1] = i + 1
    skipped[#skipped + 1] = redis.call('GET', KEYS[k]) or ''
  else
    redis.call('SET', KEYS[k], payload, 'EX', ttl)
    redis.call('SET', KEYS[k + 1], mark, 'EX', ttl)
    index(KEYS[1], score, id)
    index(KEYS[k + 2], score, id)
    index(KEYS[k + 3], score, id)
    if summary ~= '' then
      redis.call('RPUSH', KEYS[k + 4], summary)
      redis.call('EXPIRE', KEYS[k + 4], ttl)
    end
    local state_key = prefix .. ':state:' .. id
    local state = redis.call('GET', state_key)
    local of = state and tonumber(string.match(state, '^{"attempt":(%d+)'))
    if not of or of <= tonumber(ARGV[a + 5]) then
      if state then redis.call('DEL', state_key) end
      ended[#ended + 1] = id
    end
  end
end
for _, key in ipairs(indexes) do
  local t = members[key]
  for j = 1, #t, 4000 do  -- unpack() has a stack limit; 4000 is even, so pairs stay whole
    redis.call('ZADD', key, unpack(t, j, math.min(j + 3999, #t)))
  end
  if horizon ~= '' then redis.call('ZREMRANGEBYSCORE', key, '-inf', horizon) end
end
for _, key in ipairs({KEYS[2], KEYS[3]}) do
  for j = 1, #ended, 4000 do
    redis.call('ZREM', key, unpack(ended, j, math.min(j + 3999, #ended)))
  end
  if horizon ~= '' then redis.call('ZREMRANGEBYSCORE', key, '-inf', horizon) end
end
return skipped
"""
# KEYS: [pending index, running index]
# ARGV: [prefix, ttl, then per run: invocation id, score, state payload, status (pending or running), attempt]
# A run already finished keeps no state (a redelivered duplicate, or a cancel that came first), and a
# state never replaces one of a later attempt. One state per run in a call (the index moves are batched).
_STATE_SCRIPT = """
local prefix = ARGV[1]
local ttl = tonumber(ARGV[2])
local n = (#ARGV - 2) / 5
local add = {[KEYS[1]] = {}, [KEYS[2]] = {}}
local moved = {[KEYS[1]] = {}, [KEYS[2]] = {}}
for i = 0, n - 1 do
  local a = 3 + i * 5
  local id, score, payload, status = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local state_key = prefix .. ':state:' .. id
  local state = redis.call('GET', state_key)
  local of = state and tonumber(string.match(state, '^{"attempt":(%d+)'))
  if redis.call('EXISTS', prefix .. ':done:' .. id) == 0 and not (of and of > tonumber(ARGV[a + 4])) then
    redis.call('SET', state_key, payload, 'EX', ttl)
    local key = status == 'running' and KEYS[2] or KEYS[1]
    local t = add[key]
    t[#t + 1] = score
    t[#t + 1] = id
    -- a run started leaves the pending index; one pending again (a redelivery of a run left running
    -- by a runner that died) leaves the running index
    local other = status == 'running' and KEYS[1] or KEYS[2]
    local m = moved[other]
    m[#m + 1] = id
  end
end
for key, t in pairs(add) do
  for j = 1, #t, 4000 do redis.call('ZADD', key, unpack(t, j, math.min(j + 3999, #t))) end
end
for key, t in pairs(moved) do
  for j = 1, #t, 4000 do redis.call('ZREM', key, unpack(t, j, math.min(j + 3999, #t))) end
end
return n
"""
# The runner's per-batch check of what it consumed, in one call (fewer arguments than an MGET of the keys).
# ARGV: [prefix, then per invocation: invocation id, attempt]
# Returns one code per invocation: 0 to run, 1 done, 2 this attempt already failed and was retried,
# 3 cancelled before it ran.
_ACCEPT_SCRIPT = """
local prefix = ARGV[1]
local codes = {}
for a = 2, #ARGV, 2 do
  local id = ARGV[a]
  local code = 0
  if redis.call('EXISTS', prefix .. ':done:' .. id) == 1 then code = 1
  elseif redis.call('EXISTS', prefix .. ':tried:' .. id .. ':' .. ARGV[a + 1]) == 1 then code = 2
  elseif redis.call('EXISTS', prefix .. ':cancel:' .. id) == 1 then code = 3
  end
  codes[#codes + 1] = code
end
return codes
"""
# Index trimming is housekeeping: once a second is plenty, and it keeps busy batches cheap.
TRIM_INTERVAL_SECONDS = 1.0


class RunStore:
    def __init__(self, settings: Settings, client: redis.Redis | None = None):
        self.settings = settings
        self.prefix = settings.redis.key_prefix
        self.ttl = settings.runners.result_ttl_seconds
        self.client = client or redis.Redis.from_url(
            settings.redis.url.get_secret_value(),
            socket_timeout=10,
            socket_connect_timeout=5,
            health_check_interval=30,
        )
        self._record = self.client.register_script(_RECORD_SCRIPT)
        self._states = self.client.register_script(_STATE_SCRIPT)
        self._accept = self.client.register_script(_ACCEPT_SCRIPT)
        self._last_trim = 0.0
        self._trim_lock = threading.Lock()

    # -- keys ------------------------------------------------------------------------------
    def run_key(self, invocation_id: str) -> str:
        return f"{self.prefix}:run:{invocation_id}"

    def done_key(self, invocation_id: str) -> str:
        return f"{self.prefix}:done:{invocation_id}"

    def tried_key(self, invocation_id: str, attempt: int) -> str:
        return f"{self.prefix}:tried:{invocation_id}:{attempt}"

    def attempts_key(self, invocation_id: str) -> str:
        return f"{self.prefix}:attempts:{invocation_id}"

    def state_key(self, invocation_id: str) -> str:
        return f"{self.prefix}:state:{invocation_id}"

    def cancel_key(self, invocation_id: str) -> str:
        # plugins/cancel.py's mark, read here in the runner's per-batch check
        return f"{self.prefix}:cancel:{invocation_id}"

    def replayed_key(self) -> str:
        return f"{self.prefix}:dlq:replayed"

    def index_key(self, plugin: str | None = None, status: str | None = None) -> str:
        if plugin is not None:
            return f"{self.prefix}:runs:plugin:{plugin}"
        if status is not None:
            return f"{self.prefix}:runs:status:{status}"
        return f"{self.prefix}:runs"

    # -- writes ----------------------------------------------------------------------------
    def record(self, result: Result) -> bytes | None:
        """Store one final result; the result stored instead when a cancel came first (see the header)."""
        return self.record_many([result]).get(0)

    def record_many(
        self,
        results: Sequence[Result],
        payloads: Sequence[bytes] | None = None,
        finals: Sequence[bool] | None = None,
        states: Sequence[tuple[str, float, bytes, str, int]] = (),
    ) -> dict[int, bytes]:
        """Store results, their markers, attempt summaries and index entries in one round trip, and end
        their runs' `pending`/`running` states.

        `payloads` are the results' JSON if the caller already has it (it is produced to Kafka too).
        `finals[i]` False: the result is a failed attempt whose retry is already on Kafka, so only the
        attempt's `tried` marker is set, never the `done` marker that would swallow the retry.
        `states` (see record_states) are written first, in the same round trip: the runner's result writer
        passes the `running` states that queued up with the results.
        Returns {position: stored payload} of the results not stored because their run was cancelled first.
        """
        if not results:
            self.record_states(states)
            return {}
        if payloads is None:
            payloads = [r.model_dump_json().encode() for r in results]
        if finals is None:
            finals = [True] * len(results)
        keys: list[str] = [self.index_key(), self.index_key(status="pending"), self.index_key(status="running")]
        args: list[str | bytes | int] = [self.prefix, self.ttl, self._trim_horizon()]
        for result, payload, final in zip(results, payloads, finals, strict=True):
            iid = result.invocation_id
            marker = self.done_key(iid) if final else self.tried_key(iid, result.attempt)
            keys += [
                self.run_key(iid),
                marker,
                self.index_key(plugin=result.plugin),
                self.index_key(status=result.status),
                self.attempts_key(iid),
            ]
            summary = orjson.dumps(attempt_summary(result)) if result.status in ("failed", "timeout") else b""
            mark = "cancelled" if result.status == "cancelled" and final else "1"
            args += [iid, repr(result.finished_at.timestamp()), payload, summary, mark, result.attempt]
        if states:
            skipped = self._states_then_record(*self._state_call(states), keys, args)
        else:
            skipped = self._record(keys=keys, args=args)
        return {int(skipped[i]) - 1: _as_bytes(skipped[i + 1]) for i in range(0, len(skipped), 2)}

    def _states_then_record(
        self, state_keys: list[str], state_args: list[str | bytes | int], keys: list[str], args: list[str | bytes | int]
    ) -> Any:
        """Both scripts in one round trip. By their sha: a pipeline given Script objects first asks Redis
        whether they exist (SCRIPT EXISTS), a second round trip per batch. Loaded when Redis does not know
        them (first use, or a restart); both scripts then run again, the state one leaving finished runs alone."""
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            pipe.evalsha(self._states.sha, len(state_keys), *state_keys, *state_args)
            pipe.evalsha(self._record.sha, len(keys), *keys, *args)
            try:
                return pipe.execute()[-1]
            except redis.exceptions.NoScriptError:
                if attempt == 2:
                    raise
                for script in (self._states, self._record):
                    script.sha = self.client.script_load(script.script)
        raise AssertionError("unreachable")

    def record_states(self, states: Sequence[tuple[str, float, bytes, str, int]]) -> None:
        """(invocation id, epoch seconds, state JSON, "pending" or "running", attempt) of runs in progress,
        in one round trip; a run already finished, or in a later attempt, is left alone."""
        if states:
            self._states(*self._state_call(states))

    def _state_call(
        self, states: Sequence[tuple[str, float, bytes, str, int]]
    ) -> tuple[list[str], list[str | bytes | int]]:
        keys = [self.index_key(status="pending"), self.index_key(status="running")]
        args: list[str | bytes | int] = [self.prefix, self.ttl]
        for iid, at, payload, status, attempt in states:
            args += [iid, repr(at), payload, status, attempt]
        return keys, args

    def accept(self, items: Sequence[tuple[str, int]]) -> list[int]:
        """The runner's check of a consumed batch, in one round trip: for each (invocation id, attempt),
        0 = to run, 1 = done, 2 = this attempt failed before and its retry is on Kafka, 3 = cancelled."""
        if not items:
            return []
        args: list[str | int] = [self.prefix]
        for iid, attempt in items:
            args += [iid, attempt]
        return [int(c) for c in self._accept(keys=[], args=args)]

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
        return {i for i, flag in zip(ids, flags, strict=True) if flag is not None}

    def seen(self, pairs: Sequence[tuple[str, int]]) -> tuple[set[str], set[tuple[str, int]]]:
        """(ids that are done, (id, attempt) pairs already failed and retried), in one round trip."""
        ids = list(dict.fromkeys(i for i, _ in pairs))
        tries = list(dict.fromkeys(pairs))
        if not ids:
            return set(), set()
        flags = self.client.mget([self.done_key(i) for i in ids] + [self.tried_key(i, a) for i, a in tries])
        return (
            {i for i, f in zip(ids, flags, strict=False) if f is not None},  # flags: the ids', then the tries'
            {k for k, f in zip(tries, flags[len(ids) :], strict=True) if f is not None},
        )

    def tried(self, pairs: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
        """Which (id, attempt) pairs already failed with their retry scheduled (one round trip)."""
        keys = list(dict.fromkeys(pairs))
        if not keys:
            return set()
        flags = self.client.mget([self.tried_key(i, a) for i, a in keys])
        return {k for k, flag in zip(keys, flags, strict=True) if flag is not None}

    def attempts(self, invocation_id: str) -> list[dict[str, Any]]:
        """Summaries of the recorded failed attempts, one per attempt number (a re-run keeps the last)."""
        by_attempt: dict[int, dict[str, Any]] = {}
        for raw in self.client.lrange(self.attempts_key(invocation_id), 0, -1):
            item = orjson.loads(raw)
            by_attempt[int(item.get("attempt", 0))] = item
        return [by_attempt[a] for a in sorted(by_attempt)]

    def is_done(self, invocation_id: str) -> bool:
        return bool(self.done_ids([invocation_id]))

    def get_raw(self, invocation_id: str) -> bytes | None:
        raw = self.client.get(self.run_key(invocation_id))
        return _as_bytes(raw) if raw is not None else None

    def get(self, invocation_id: str) -> Result | None:
        raw = self.get_raw(invocation_id)
        return Result.model_validate_json(raw) if raw is not None else None

    def current_raw(self, invocation_id: str) -> bytes | None:
        """The run as it stands: its `pending`/`running` state while it has one (an attempt in progress is
        newer than any result stored: a result ends the state), else its last result."""
        state, run = self.client.mget([self.state_key(invocation_id), self.run_key(invocation_id)])
        raw = state if state is not None else run
        return _as_bytes(raw) if raw is not None else None

    def current(self, invocation_id: str) -> Result | None:
        raw = self.current_raw(invocation_id)
        return Result.model_validate_json(raw) if raw is not None else None

    def list(
        self, plugin: str | None = None, status: str | None = None, limit: int = 20, since: float | None = None
    ) -> list[Result]:
        """Newest first, finished at or after `since` (epoch seconds) if given.

        Uses the narrowest index (its score is the finish time, so `since` is a range bound) and
        filters the other criterion client-side.
        """
        index = self.index_key(plugin=plugin) if plugin is not None else self.index_key(status=status)
        low = repr(since) if since is not None else "-inf"
        out: list[Result] = []
        start, page = 0, max(limit * 2, 50)
        while len(out) < limit:
            ids = self.client.zrevrangebyscore(index, "+inf", low, start=start, num=page)
            if not ids:
                break
            start += page
            raws = self.client.mget([self.run_key(_as_text(i)) for i in ids])
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


# redis-py types replies as bytes | str (str with decode_responses=True, which this client never sets).
def _as_bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _as_text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def attempt_summary(result: Result) -> dict[str, Any]:
    """What a dead letter shows of one attempt."""
    return {
        "attempt": result.attempt,
        "status": result.status,
        "error": result.error.model_dump() if result.error else None,
        "started_at": result.started_at.isoformat(),
        "finished_at": result.finished_at.isoformat(),
        "duration_ms": result.duration_ms,
        "plugin_version": result.plugin_version,
        "code_hash": result.code_hash,
        "worker_pid": getattr(result, "worker_pid", None),
        "runner": result.runner,
    }
