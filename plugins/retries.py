"""Retry and dead-letter decisions: what happens after an attempt did not succeed.

A retry is durable because it is a Kafka message, not a timer in memory: the next attempt is
published to the plugin's own topic (same invocation id, `attempt + 1`, trigger kind `retry`) with a
not-before time in a header, and the failed attempt's offset is committed only after Kafka
acknowledged that message. A runner that dies at any point either re-runs the failed attempt (its
retry was not acknowledged yet) or finds the retry on the topic.

Only failures the plugin itself might overcome are retried: `failed` (it raised or its worker
crashed) and `timeout`. A `rejected` invocation (malformed, or parameters that do not fit) would be
rejected again, so it is final at once and is not dead-lettered (its result says why).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from schemas.invocation import Invocation, RetryTrigger
from schemas.manifest import RetryPolicy
from schemas.result import Result

# Epoch seconds (as ASCII) before which an invocation message must not run.
NOT_BEFORE_HEADER = "cdcflow-not-before"
RETRYABLE = frozenset({"failed", "timeout"})
PREVIOUS_ERROR_CHARS = 500


def backoff_seconds(policy: RetryPolicy, attempt: int) -> float:
    """The wait after failed attempt `attempt` (1-based): retry_delay * backoff_factor^(attempt-1), capped."""
    return min(policy.max_delay, policy.retry_delay * policy.backoff_factor ** max(0, attempt - 1))


def wants_retry(result: Result, policy: RetryPolicy) -> bool:
    # max_retries retries after the first attempt: attempts 1..max_retries+1 in all.
    return result.status in RETRYABLE and result.attempt <= policy.max_retries


def is_dead(result: Result, policy: RetryPolicy) -> bool:
    return result.status in RETRYABLE and result.attempt > policy.max_retries


def retry_of(
    invocation: Invocation, result: Result, policy: RetryPolicy, now: float | None = None
) -> tuple[Invocation, float]:
    """The next attempt's invocation and its not-before time (epoch seconds)."""
    now = time.time() if now is None else now
    error = f"{result.error.type}: {result.error.message}" if result.error else result.status
    original = (
        invocation.trigger.original_invocation_id
        if isinstance(invocation.trigger, RetryTrigger)
        else invocation.invocation_id
    )
    retry = Invocation(
        invocation_id=invocation.invocation_id,  # the same id: plugins key their idempotent side effects on it
        plugin=invocation.plugin,
        params=invocation.params,
        priority=invocation.priority,
        attempt=invocation.attempt + 1,
        created_at=datetime.fromtimestamp(now, tz=UTC),
        trigger=RetryTrigger(original_invocation_id=original, previous_error=error[:PREVIOUS_ERROR_CHARS]),
    )
    return retry, now + backoff_seconds(policy, invocation.attempt)


def not_before(headers: list[tuple[str, bytes | None]] | None) -> float | None:
    for key, value in headers or ():
        if key == NOT_BEFORE_HEADER and value:
            try:
                return float(value.decode())
            except ValueError:
                return None
    return None


def dead_letter(
    invocation: Invocation, result: Result, attempts: list[dict[str, Any]], source_topic: str
) -> dict[str, Any]:
    """The DLQ entry: the last invocation, its full error and a summary of every attempt."""
    return {
        "dlq_id": invocation.invocation_id,
        "plugin": invocation.plugin,
        "invocation": invocation.model_dump(mode="json"),
        "status": result.status,
        "error": result.error.model_dump() if result.error else None,
        "attempts": attempts,
        "source_topic": source_topic,
        "dead_at": datetime.now(UTC).isoformat(),
        "runner": result.runner,
        "plugin_version": result.plugin_version,
        "code_hash": result.code_hash,
    }
