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
from typing import Any, NoReturn, cast

import orjson
import redis

from plugins.delayed_store import DelayedStore
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


@dataclass(frozen=True)
class Cancelled:
    """What a `cancelled` result says of the run: taken from its state, last result, invocation or
    delayed request, whichever holds it."""

    invocation_id: str
    plugin: str
    plugin_version: str = ""
    attempt: int = 1
    trigger_kind: str | None = None
    params: dict[str, Any] | None = None

    @classmethod
    def of(cls, run: Result | Invocation, plugin_version: str, attempt: int | None = None) -> Cancelled:
        kind = run.trigger_kind if isinstance(run, Result) else run.trigger.kind
        return cls(run.invocation_id, run.plugin, plugin_version, attempt or run.attempt, kind, run.params)


def cancelled_result(run: Cancelled, mark: CancelMark | None, when: str) -> Result:
    """The final `cancelled` result of a run."""
    now = datetime.now(UTC)
    who = f" by {mark.by} at {datetime.fromtimestamp(mark.at, UTC).isoformat(timespec='seconds')}" if mark else ""
    return Result(
        invocation_id=run.invocation_id,
        plugin=run.plugin,
        plugin_version=run.plugin_version,
        status="cancelled",
        attempt=run.attempt,
        started_at=now,
        finished_at=now,
        duration_ms=0.0,
        error=ErrorInfo(type="Cancelled", message=f"cancelled{who} {when}"),
        trigger_kind=run.trigger_kind,
        runner=RUNNER_ID,
        params=run.params,
    )


@dataclass(frozen=True)
class CancelOutcome:
    mark: CancelMark
    was: str | None  # pending, running, waiting for its retry; None: no runner has reported it yet (no state)
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
    found = _in_progress(store, invocation_id, state, last)
    if found is None:
        return CancelOutcome(mark, None, None)
    run, was = found
    result = cancelled_result(run, mark, f"while {was}")
    stored = store.record(result)
    if stored is not None:  # it finished between the check and now
        _finished(invocation_id, stored)
    return CancelOutcome(mark, was, result)


def _in_progress(store: RunStore, invocation_id: str, state: Any, last: Any) -> tuple[Cancelled, str] | None:
    """The run to record cancelled and what it was doing; None when nothing here knows it yet."""
    if state is not None:
        current = Result.model_validate_json(state)
        return Cancelled.of(current, current.plugin_version), current.status
    if last is not None:  # an attempt failed and its retry is on its way
        failed = Result.model_validate_json(last)
        return Cancelled.of(failed, failed.plugin_version, failed.attempt + 1), "waiting for its retry"
    waiting = DelayedStore(store.settings, store.client).get(invocation_id)
    if waiting is not None and waiting.request is not None:  # `trigger --delay/--at`: dropped when due
        request = waiting.request
        return Cancelled(invocation_id, request.plugin, "", 1, "manual", request.params), "delayed"
    return None


def _finished(invocation_id: str, raw: bytes | str | None) -> NoReturn:
    status = Result.model_validate_json(raw).status if raw else "finished"
    raise CancelError(
        f"run {invocation_id} already finished ({status}); only a pending or running run can be cancelled"
    )
