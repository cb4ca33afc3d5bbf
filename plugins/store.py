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

# A batch travels as a few arguments, whatever its size: a JSON array of rows (one per run: its id and
# small fields) and, for results and states, their payloads concatenated (each row gives its payload's
# length). redis-py packs each argument in Python (~1.5 us); at 16 arguments per result (the keys and
# fields of each), packing was 18% of the runner's busy time under a flood (py-spy, --gil). The per-run
# keys are built inside the scripts from the prefix (ARGV[1]), as the key methods below build them (a store test checks
# every key the scripts read and write against the methods).
# KEYS: [all-runs index, pending index, running index]
# ARGV: [prefix, ttl, trim horizon ("" = no trim), rows, payloads]; a row: [invocation id, score, payload
#        length, attempt summary ("" = none), marker value ("1", or "cancelled": stored only if nothing final
#        is), attempt, final (1: the done marker; 0: the attempt's tried marker), plugin, status]
# A result ends its run's state unless the state is of a later attempt (a retry taken up by a runner
# before the failed attempt's result was written). States start with {"attempt":N (run_states.py).
# The index entries are gathered per index and added with one multi-member ZADD each: a command costs
# Redis more than a member does, and a batch has a handful of indexes but hundreds of results.
# Returns [position, stored payload, ...] of the results not stored (a cancelled run's later result).
_RECORD_SCRIPT = """
local prefix = ARGV[1]
local ttl = tonumber(ARGV[2])
local horizon = ARGV[3]
local rows = cjson.decode(ARGV[4])
local blob = ARGV[5]
local pos = 1
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
for i, row in ipairs(rows) do
  local id, score, size, summary, mark, attempt = row[1], row[2], row[3], row[4], row[5], row[6]
  local payload = string.sub(blob, pos, pos + size - 1)
  pos = pos + size
  local run_key = prefix .. ':run:' .. id
  local done = redis.call('GET', prefix .. ':done:' .. id)
  if done == 'cancelled' or (done and mark == 'cancelled') then
    skipped[#skipped + 1] = i
    skipped[#skipped + 1] = redis.call('GET', run_key) or ''
  else
    local marker = row[7] == 1 and (prefix .. ':done:' .. id) or (prefix .. ':tried:' .. id .. ':' .. attempt)
    redis.call('SET', run_key, payload, 'EX', ttl)
    redis.call('SET', marker, mark, 'EX', ttl)
    index(KEYS[1], score, id)
    index(prefix .. ':runs:plugin:' .. row[8], score, id)
    index(prefix .. ':runs:status:' .. row[9], score, id)
    if summary ~= '' then
      local attempts_key = prefix .. ':attempts:' .. id
      redis.call('RPUSH', attempts_key, summary)
      redis.call('EXPIRE', attempts_key, ttl)
    end
    local state_key = prefix .. ':state:' .. id
    local state = redis.call('GET', state_key)
    local of = state and tonumber(string.match(state, '^{"attempt":(%d+)'))
    if not of or of <= tonumber(attempt) then
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
# ARGV: [prefix, ttl, rows, payloads]; a row: [invocation id, score, payload length, status (pending or
#        running), attempt]
# A run already finished keeps no state (a redelivered duplicate, or a cancel that came first), nor does
# an attempt that failed and was retried (its `tried` marker: a runner that took it before a rebalance
# may write its held state after another runner's result), and a state never replaces one of a later
# attempt. One state per run in a call (the index moves are batched).
_STATE_SCRIPT = """
local prefix = ARGV[1]
local ttl = tonumber(ARGV[2])
local rows = cjson.decode(ARGV[3])
local blob = ARGV[4]
local pos = 1
local add = {[KEYS[1]] = {}, [KEYS[2]] = {}}
local moved = {[KEYS[1]] = {}, [KEYS[2]] = {}}
for _, row in ipairs(rows) do
  local id, score, size, status = row[1], row[2], row[3], row[4]
  local payload = string.sub(blob, pos, pos + size - 1)
  pos = pos + size
  local state_key = prefix .. ':state:' .. id
  local state = redis.call('GET', state_key)
  local of = state and tonumber(string.match(state, '^{"attempt":(%d+)'))
  local over = redis.call('EXISTS', prefix .. ':done:' .. id, prefix .. ':tried:' .. id .. ':' .. row[5]) > 0
  if not over and not (of and of > tonumber(row[5])) then
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
return #rows
"""
# The runner's per-batch check of what it consumed, in one call (fewer arguments than an MGET of the keys).
# ARGV: [prefix, rows]; a row: [invocation id, attempt]
# Returns one code per invocation: 0 to run, 1 done, 2 this attempt already failed and was retried,
# 3 cancelled before it ran.
_ACCEPT_SCRIPT = """
local prefix = ARGV[1]
local codes = {}
for _, row in ipairs(cjson.decode(ARGV[2])) do
  local id = row[1]
  local code = 0
  if redis.call('EXISTS', prefix .. ':done:' .. id) == 1 then code = 1
  elseif redis.call('EXISTS', prefix .. ':tried:' .. id .. ':' .. row[2]) == 1 then code = 2
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
        passes the states of runs still going STATE_LINGER_SECONDS after they were taken (plugins/sink.py).
        Returns {position: stored payload} of the results not stored because their run was cancelled first.
        """
        if not results:
            self.record_states(states)
            return {}
        if payloads is None:
            payloads = [r.model_dump_json().encode() for r in results]
        if finals is None:
            finals = [True] * len(results)
        keys = [self.index_key(), self.index_key(status="pending"), self.index_key(status="running")]
        rows = [
            (
                result.invocation_id,
                repr(result.finished_at.timestamp()),
                len(payload),
                orjson.dumps(attempt_summary(result)).decode() if result.status in ("failed", "timeout") else "",
                "cancelled" if result.status == "cancelled" and final else "1",
                str(result.attempt),
                1 if final else 0,
                result.plugin,
                result.status,
            )
            for result, payload, final in zip(results, payloads, finals, strict=True)
        ]
        args: list[str | bytes | int] = [
            self.prefix,
            self.ttl,
            self._trim_horizon(),
            orjson.dumps(rows),
            b"".join(payloads),
        ]
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
        rows = [(iid, repr(at), len(payload), status, str(attempt)) for iid, at, payload, status, attempt in states]
        payloads = b"".join(payload for _, _, payload, _, _ in states)
        return keys, [self.prefix, self.ttl, orjson.dumps(rows), payloads]

    def accept(self, items: Sequence[tuple[str, int]]) -> list[int]:
        """The runner's check of a consumed batch, in one round trip: for each (invocation id, attempt),
        0 = to run, 1 = done, 2 = this attempt failed before and its retry is on Kafka, 3 = cancelled."""
        if not items:
            return []
        rows = orjson.dumps([(iid, str(attempt)) for iid, attempt in items])
        return [int(c) for c in self._accept(keys=[], args=[self.prefix, rows])]

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
