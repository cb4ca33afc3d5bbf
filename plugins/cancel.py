"""Cancel requests: `cdcflow runs cancel ID` and `POST /api/runs/{id}/cancel` mark an invocation; whatever
holds it then drops it (never runs it) or stops it, and its result is `cancelled`.

Keys (prefix = settings.redis.key_prefix), both expiring with the run history (result_ttl_seconds):
  <prefix>:cancel:<invocation_id>   JSON {"at": epoch seconds, "by": who asked}
  <prefix>:cancels                  sorted set of cancelled ids by request time: each runner reads the
                                    entries newer than its last look (one small read every half second,
                                    whatever the load) to stop a running call or drop a queued one
Who checks the mark:
- a runner, for every batch it consumes (in the same round trip as its done markers): a marked
  invocation is recorded `cancelled` without running, and its offset moves on;
- a runner's cancel watcher, for what it already holds: queued or waiting for a retry (dropped when
  its turn comes) and running (its worker process is killed);
- anything that holds invocations back before they reach Kafka (the delay timer): `is_cancelled`
  or `Cancels.cancelled` before firing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn, cast

import orjson
import redis

from plugins.execution import RUNNER_ID
from plugins.store import RunStore
from schemas.invocation import Invocation
from schemas.result import ErrorInfo, Result
from schemas.settings import Settings


class CancelError(ValueError):
    """The invocation cannot be cancelled (it finished, or the id is not usable)."""


@dataclass(frozen=True)
class CancelMark:
    invocation_id: str
    at: float
    by: str


class Cancels:
    """Cancel marks in Redis, with the client given (a runner's or the API's) or one of its own."""

    def __init__(self, client: redis.Redis, prefix: str, ttl: int):
        self.client = client
        self.prefix = prefix
        self.ttl = ttl

    @classmethod
    def from_settings(cls, settings: Settings) -> Cancels:
        client = redis.Redis.from_url(
            settings.redis.url.get_secret_value(), socket_timeout=10, socket_connect_timeout=5
        )
        return cls(client, settings.redis.key_prefix, settings.runners.result_ttl_seconds)

    def key(self, invocation_id: str) -> str:
        return f"{self.prefix}:cancel:{invocation_id}"

    @property
    def log_key(self) -> str:
        return f"{self.prefix}:cancels"

    def mark(self, invocation_id: str, by: str) -> CancelMark:
        """Mark the id cancelled (a second request keeps the first mark) and log it for the runners."""
        if not invocation_id.strip():
            raise CancelError("the invocation id is blank")
        at = time.time()
        pipe = self.client.pipeline(transaction=True)
        pipe.set(self.key(invocation_id), orjson.dumps({"at": at, "by": by}), ex=self.ttl, nx=True)
        pipe.get(self.key(invocation_id))
        pipe.zadd(self.log_key, {invocation_id: at}, nx=True)
        pipe.zremrangebyscore(self.log_key, "-inf", repr(at - self.ttl))
        _, raw, _, _ = pipe.execute()
        data = orjson.loads(raw)
        return CancelMark(invocation_id, float(data["at"]), str(data["by"]))

    def get(self, invocation_id: str) -> CancelMark | None:
        raw = self.client.get(self.key(invocation_id))
        if raw is None:
            return None
        data = orjson.loads(raw)
        return CancelMark(invocation_id, float(data["at"]), str(data["by"]))

    def is_cancelled(self, invocation_id: str) -> bool:
        return bool(self.client.exists(self.key(invocation_id)))

    def cancelled(self, invocation_ids: Iterable[str]) -> set[str]:
        """Which of these ids are marked cancelled (one round trip)."""
        ids = list(dict.fromkeys(invocation_ids))
        if not ids:
            return set()
        flags = self.client.mget([self.key(i) for i in ids])
        return {i for i, flag in zip(ids, flags, strict=True) if flag is not None}

    def requested_since(self, after: float) -> list[tuple[str, float]]:
        """(id, request time) of the cancels requested after `after` (epoch seconds), oldest first."""
        entries = cast(
            list[tuple[bytes, float]], self.client.zrangebyscore(self.log_key, f"({after!r}", "+inf", withscores=True)
        )
        return [(m.decode(), float(s)) for m, s in entries]

    def close(self) -> None:
        self.client.close()


def is_cancelled(settings: Settings, invocation_id: str) -> bool:
    """Whether the invocation was cancelled (for code that holds invocations back, e.g. a delay timer;
    a loop over many should keep one `Cancels` and ask `cancelled(ids)` per batch instead)."""
    cancels = Cancels.from_settings(settings)
    try:
        return cancels.is_cancelled(invocation_id)
    finally:
        cancels.close()


def cancelled_result(
    basis: Result | Invocation, plugin_version: str, mark: CancelMark | None, when: str, attempt: int | None = None
) -> Result:
    """The final `cancelled` result of a run (from its in-progress state, last result or invocation)."""
    now = datetime.now(UTC)
    who = f" by {mark.by} at {datetime.fromtimestamp(mark.at, UTC).isoformat(timespec='seconds')}" if mark else ""
    kind = basis.trigger_kind if isinstance(basis, Result) else basis.trigger.kind
    return Result(
        invocation_id=basis.invocation_id,
        plugin=basis.plugin,
        plugin_version=plugin_version,
        status="cancelled",
        attempt=attempt if attempt is not None else basis.attempt,
        started_at=now,
        finished_at=now,
        duration_ms=0.0,
        error=ErrorInfo(type="Cancelled", message=f"cancelled{who} {when}"),
        trigger_kind=kind,
        runner=RUNNER_ID,
        params=basis.params,
    )


@dataclass(frozen=True)
class CancelOutcome:
    mark: CancelMark
    was: str | None  # pending, running, waiting for its retry; None: no runner has received it yet
    result: Result | None  # as recorded; None: recorded when a runner receives the invocation


def cancel(settings: Settings, invocation_id: str, by: str) -> CancelOutcome:
    """Cancel a pending, delayed or running invocation; CancelError if it already finished."""
    store = RunStore(settings)
    try:
        return cancel_with(store, Cancels(store.client, store.prefix, store.ttl), invocation_id, by)
    finally:
        store.close()


def cancel_with(store: RunStore, cancels: Cancels, invocation_id: str, by: str) -> CancelOutcome:
    """`cancel` with the caller's clients (the API keeps one).

    The mark stops it wherever it is; the `cancelled` result is recorded here at once when a runner has
    the run (its state names the plugin), else by the runner that receives it. Recorded once: a result
    that comes later (the call being stopped, a success racing the cancel) is not stored.
    """
    if not invocation_id.strip():
        raise CancelError("the invocation id is blank")
    state, last, done = store.client.mget(
        [store.state_key(invocation_id), store.run_key(invocation_id), store.done_key(invocation_id)]
    )
    if done is not None:
        _finished(invocation_id, last)
    mark = cancels.mark(invocation_id, by)
    if state is not None:
        basis = Result.model_validate_json(state)
        was: str = basis.status
        attempt = basis.attempt
    elif last is not None:  # an attempt failed and its retry is on its way
        basis = Result.model_validate_json(last)
        was, attempt = "waiting for its retry", basis.attempt + 1
    else:
        return CancelOutcome(mark, None, None)
    result = cancelled_result(basis, basis.plugin_version, mark, f"while {was}", attempt)
    stored = store.record(result)
    if stored is not None:  # it finished between the check and now
        _finished(invocation_id, stored)
    return CancelOutcome(mark, was, result)


def _finished(invocation_id: str, raw: bytes | str | None) -> NoReturn:
    status = Result.model_validate_json(raw).status if raw else "finished"
    raise CancelError(
        f"run {invocation_id} already finished ({status}); only a pending or running run can be cancelled"
    )
