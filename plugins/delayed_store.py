"""Delayed triggers (`cdcflow trigger --delay/--at`) waiting for their time, in Redis.

Why Redis, and not a Kafka topic: a delayed trigger has to be found by its due time, and dropped
(fired or cancelled) by its id; a sorted set does both in O(log n), where a topic would have to be
read whole into memory by every new leader before it may release anything. Redis already holds the
state the schedule timer's guarantees rest on (anchor, last slot, pause) and the runners' done
markers that make a repeated invocation run once, so a delayed trigger is as durable as a schedule
(give Redis persistence, `appendonly yes`, for either to survive a Redis restart). The CLI, the API
and every worker reach it, so the one that accepts a trigger stores it and the leader releases it.
It lives in plugins/ (beside the run store and cancel marks) so that run history commands, which
must not import streams/, can tell a delayed invocation from an unknown one (`DelayedStore.get`).

  <prefix>:delayed           sorted set: invocation id, scored by due time (epoch ms)
  <prefix>:delayed:requests  hash: invocation id -> the ManualTriggerRequest JSON (with due_at)

Both written in one transaction, and only if absent (ZADD NX, HSETNX): the same request sent twice
(an idempotency key, a client's retry) keeps its first due time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from schemas.invocation import invocation_id_for
from schemas.settings import Settings
from schemas.trigger_request import ManualTriggerRequest


def due_ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


@dataclass(frozen=True)
class Waiting:
    """A delayed trigger in the store: its invocation id, due time (epoch ms) and request (None when
    its JSON is missing or unreadable: dropped by the release, with a log line)."""

    invocation_id: str
    due_ms: int
    request: ManualTriggerRequest | None


def delayed_invocation_id(request: ManualTriggerRequest) -> str:
    """The id the request's invocation will have: the same as an immediate manual trigger's."""
    return invocation_id_for("manual", request.request_id, request.plugin)


class DelayedStore:
    def __init__(self, settings: Settings, client: redis.Redis | None = None):
        # Short timeouts: the release runs on the worker's event loop (as the schedule timer does).
        self.client = client or redis.Redis.from_url(
            settings.redis.url.get_secret_value(), socket_timeout=2, socket_connect_timeout=2
        )
        self.due_key = f"{settings.redis.key_prefix}:delayed"
        self.requests_key = f"{settings.redis.key_prefix}:delayed:requests"

    def add(self, request: ManualTriggerRequest) -> str:
        """Keep the request (which has its due_at) until then; returns its invocation id."""
        assert request.due_at is not None
        invocation_id = delayed_invocation_id(request)
        pipe = self.client.pipeline(transaction=True)
        pipe.hsetnx(self.requests_key, invocation_id, request.model_dump_json())
        pipe.zadd(self.due_key, {invocation_id: due_ms(request.due_at)}, nx=True)
        pipe.execute()
        return invocation_id

    def due(self, now_ms: int, limit: int = 100) -> list[Waiting]:
        """The triggers due by `now_ms`, earliest first, at most `limit`."""
        found = self.client.zrangebyscore(self.due_key, "-inf", now_ms, start=0, num=limit, withscores=True)
        return self._waiting(_entries(found))

    def next_due_ms(self) -> int | None:
        first = self.client.zrange(self.due_key, 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    def get(self, invocation_id: str) -> Waiting | None:
        """The waiting trigger of this id, or None (none was delayed, or it was released already)."""
        score = self.client.zscore(self.due_key, invocation_id)
        return None if score is None else self._waiting([(invocation_id, int(score))])[0]

    def all(self) -> list[Waiting]:
        return self.earliest(0)

    def earliest(self, limit: int) -> list[Waiting]:
        """The `limit` triggers due first (all of them for 0)."""
        return self._waiting(_entries(self.client.zrange(self.due_key, 0, limit - 1, withscores=True)))

    def count(self) -> int:
        return int(self.client.zcard(self.due_key))

    def remove(self, invocation_id: str) -> bool:
        """Drop it (released or cancelled); whether it was there."""
        return self.remove_many([invocation_id]) == 1

    def remove_many(self, invocation_ids: list[str]) -> int:
        """Drop these (released or cancelled); how many were there."""
        if not invocation_ids:
            return 0
        pipe = self.client.pipeline(transaction=True)
        pipe.zrem(self.due_key, *invocation_ids)
        pipe.hdel(self.requests_key, *invocation_ids)
        removed, _ = pipe.execute()
        return int(removed)

    def _waiting(self, entries: list[tuple[str, int]]) -> list[Waiting]:
        if not entries:
            return []
        raws = self.client.hmget(self.requests_key, [iid for iid, _ in entries])
        return [Waiting(iid, ms, _request(raw)) for (iid, ms), raw in zip(entries, raws, strict=True)]

    def close(self) -> None:
        self.client.close()


def _entries(found: Any) -> list[tuple[str, int]]:
    """(member, score) pairs of a sorted-set reply as (invocation id, due ms)."""
    return [(m.decode() if isinstance(m, bytes) else str(m), int(score)) for m, score in found]


def _request(raw: bytes | str | None) -> ManualTriggerRequest | None:
    if raw is None:
        return None
    try:
        return ManualTriggerRequest.model_validate_json(raw)
    except ValueError:
        return None


def utc_from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
