"""Schedule state in Redis: anchor, last handled slot, paused flag, recent invocations, fire history.

Why Redis and not a Faust table: the timer runs on whichever worker is leader, and a Faust table
read only sees the partitions assigned to the reading worker, while `cdcflow schedules
list|pause|resume` must read and write the same state from outside the consumer group. Redis is
already the run store (results, done markers), is reachable by every worker and by the CLI, and a
pause written there is seen by the timer at its next wake-up (at most a second later) and survives
restarts of every worker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
import redis
from redis.typing import EncodableT, FieldT

from schemas.settings import Settings
from schemas.trigger_request import ScheduleTick

# Fire history kept per schedule (newest first).
TICKS_KEPT = 200
# Invocation ids remembered per schedule for max_instances (more than any sane max_instances).
RECENT_KEPT = 50


# Stores the timing on first sight; on a change, stores it and restarts anchor and last; returns the old one.
_SYNC_TIMING = """
local old = redis.call('HGET', KEYS[1], 'timing')
if old == ARGV[1] then return false end
if not old then redis.call('HSET', KEYS[1], 'timing', ARGV[1]) return false end
redis.call('HSET', KEYS[1], 'timing', ARGV[1], 'anchor', ARGV[2], 'last', ARGV[2])
return old
"""


@dataclass
class ScheduleState:
    anchor: datetime | None = None
    last: datetime | None = None
    paused: bool = False
    recent: list[str] = field(default_factory=list)  # invocation ids, newest last
    last_fired_at: datetime | None = None
    last_invocation: str | None = None
    missed_total: int = 0


def _text(raw: bytes | str | None) -> str | None:
    """A Redis reply as text (bytes from this client, which does not decode responses)."""
    return raw.decode() if isinstance(raw, bytes) else raw


def _dt(raw: bytes | str | None) -> datetime | None:
    text = _text(raw)
    return datetime.fromisoformat(text) if text else None


class ScheduleStore:
    def __init__(self, settings: Settings, client: redis.Redis | None = None):
        # Short timeouts: the timer runs on the Faust event loop, a hung Redis must not stall it long.
        self.client = client or redis.Redis.from_url(
            settings.redis.url.get_secret_value(), socket_timeout=2, socket_connect_timeout=2
        )
        self.prefix = settings.redis.key_prefix

    def key(self, name: str) -> str:
        return f"{self.prefix}:schedule:{name}"

    def ticks_key(self, name: str) -> str:
        return f"{self.prefix}:schedule:{name}:ticks"

    def done_key(self, invocation_id: str) -> str:
        # Written by the runners' RunStore with every result (plugins/store.py).
        return f"{self.prefix}:done:{invocation_id}"

    def load(self, name: str) -> ScheduleState:
        h = self.client.hgetall(self.key(name))
        return ScheduleState(
            anchor=_dt(h.get(b"anchor")),
            last=_dt(h.get(b"last")),
            paused=h.get(b"paused") == b"1",
            recent=orjson.loads(h[b"recent"]) if h.get(b"recent") else [],
            last_fired_at=_dt(h.get(b"last_fired_at")),
            last_invocation=_text(h.get(b"last_invocation")) or None,
            missed_total=int(h.get(b"missed_total") or 0),
        )

    def ensure_anchor(self, name: str, now: datetime) -> datetime:
        """The schedule's anchor, set to `now` (whole seconds) the first time any worker sees it."""
        self.client.hsetnx(self.key(name), "anchor", now.astimezone(UTC).replace(microsecond=0).isoformat())
        anchor = _dt(self.client.hget(self.key(name), "anchor"))
        assert anchor is not None
        return anchor

    def sync_timing(self, name: str, timing: str, now: datetime) -> str | None:
        """Record the schedule's timing; if it differs from the stored one, restart anchor and last at `now`.

        Slots of an old definition say nothing about the new one: without this, changing a daily cron
        to an hourly one would count every hourly slot since the last daily fire as missed (or run
        them, within the grace time). APScheduler's reschedule_job also counts from now. Returns the
        previous timing when it changed, else None. Atomic, so two workers agree.
        """
        stamp = now.astimezone(UTC).replace(microsecond=0).isoformat()
        previous = self.client.eval(_SYNC_TIMING, 1, self.key(name), timing, stamp)
        return previous.decode() if previous else None

    def outstanding(self, recent: list[str]) -> list[str]:
        """Invocations of `recent` that have no result yet (no done marker)."""
        if not recent:
            return []
        flags = self.client.mget([self.done_key(i) for i in recent])
        return [i for i, f in zip(recent, flags, strict=True) if f is None]  # one reply per key

    def record(
        self, name: str, last: datetime | None, ticks: list[ScheduleTick], fired: list[str], missed: int
    ) -> None:
        """Advance `last` and append the ticks, in one transaction."""
        state = self.load(name)
        recent = (state.recent + fired)[-RECENT_KEPT:]
        pipe = self.client.pipeline(transaction=True)
        mapping: dict[FieldT, EncodableT] = {"recent": orjson.dumps(recent).decode()}
        if last is not None:
            mapping["last"] = last.isoformat()
        if fired:
            mapping["last_invocation"] = fired[-1]
            mapping["last_fired_at"] = datetime.now(UTC).isoformat()
        pipe.hset(self.key(name), mapping=mapping)
        if missed:
            pipe.hincrby(self.key(name), "missed_total", missed)
        if ticks:
            pipe.lpush(self.ticks_key(name), *[t.model_dump_json() for t in ticks])
            pipe.ltrim(self.ticks_key(name), 0, TICKS_KEPT - 1)
        pipe.execute()

    def ticks(self, name: str, limit: int = TICKS_KEPT) -> list[ScheduleTick]:
        return [ScheduleTick.model_validate_json(raw) for raw in self.client.lrange(self.ticks_key(name), 0, limit - 1)]

    def pause(self, name: str) -> None:
        self.client.hset(self.key(name), "paused", "1")

    def resume(self, name: str, now: datetime) -> None:
        """Unpause; slots that passed while paused are not caught up (APScheduler's resume_job)."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.key(name), mapping={"paused": "0", "last": now.astimezone(UTC).isoformat()})
        pipe.execute()

    def close(self) -> None:
        self.client.close()
