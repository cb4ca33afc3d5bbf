"""Retry and dead-letter decisions: what happens after an attempt did not succeed.

A retry is durable because it is a Kafka message, not a timer in memory: the next attempt is
published to the plugin's own topic (same invocation id, `attempt + 1`, trigger kind `retry`) with a
not-before time in a header, and the failed attempt's offset is committed only after Kafka
acknowledged that message. A runner that dies at any point either re-runs the failed attempt (its
retry was not acknowledged yet) or finds the retry on the topic.

Only failures the plugin itself might overcome are retried: `failed` (it raised or its worker
crashed) and `timeout`. A `rejected` invocation (malformed, or parameters that do not fit) would be
rejected again, so it is final at once and is not dead-lettered (its result says why). A call to an
unhealthy plugin (its validate_execution_environment() failed) is not retried either, since it fails
the same way until the plugin or its host is fixed; it is dead-lettered at once, to be replayed then.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import Any

from plugins.offsets import Ack
from plugins.worker_main import UNHEALTHY_ERROR_TYPE
from schemas.invocation import Invocation, RetryTrigger
from schemas.manifest import RetryPolicy
from schemas.result import Result

# Epoch seconds (as ASCII) before which an invocation message must not run.
NOT_BEFORE_HEADER = "cdcflow-not-before"
RETRYABLE = frozenset({"failed", "timeout"})
PREVIOUS_ERROR_CHARS = 500
SHORT_ERROR_CHARS = 4000  # of each error message and traceback in a dead letter slimmed to fit its topic


def backoff_seconds(policy: RetryPolicy, attempt: int) -> float:
    """The wait after failed attempt `attempt` (1-based): retry_delay * backoff_factor^(attempt-1), capped."""
    return min(policy.max_delay, policy.retry_delay * policy.backoff_factor ** max(0, attempt - 1))


def wants_retry(result: Result, policy: RetryPolicy) -> bool:
    # max_retries retries after the first attempt: attempts 1..max_retries+1 in all.
    return result.status in RETRYABLE and result.attempt <= policy.max_retries and not unhealthy(result)


def is_dead(result: Result, policy: RetryPolicy) -> bool:
    return result.status in RETRYABLE and (result.attempt > policy.max_retries or unhealthy(result))


def unhealthy(result: Result) -> bool:
    """The call failed because the plugin's environment check had failed (see plugins/worker_main.py)."""
    return result.error is not None and result.error.type == UNHEALTHY_ERROR_TYPE


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
    """The not-before time of a retry message; None when there is none, or it is not a finite number
    (garbage: a NaN or an infinity would park the message, and its partition, forever)."""
    for key, value in headers or ():
        if key == NOT_BEFORE_HEADER and value:
            try:
                when = float(value.decode())
            except (ValueError, UnicodeDecodeError):
                return None
            return when if math.isfinite(when) else None
    return None


def start_at(after: float, now: float, policy: RetryPolicy) -> float:
    """When a retry message may start: its not-before, but never later than the longest wait the
    policy allows from now (a retry is published at most max_delay ahead; a later one is garbage
    whose wait would hold its partition's commits)."""
    return min(after, now + policy.max_delay)


def dead_letter(
    invocation: Invocation, result: Result, attempts: list[dict[str, Any]], source_topic: str, source: Ack | None = None
) -> dict[str, Any]:
    """The DLQ entry: the last invocation, its full error and a summary of every attempt, and where the
    invocation's message is (`source`: its topic, partition and offset)."""
    return {
        "dlq_id": invocation.invocation_id,
        "plugin": invocation.plugin,
        "invocation": invocation.model_dump(mode="json"),
        "status": result.status,
        "error": result.error.model_dump() if result.error else None,
        "attempts": attempts,
        "source_topic": source.topic if source is not None else source_topic,
        "source_partition": source.partition if source is not None else None,
        "source_offset": source.offset if source is not None else None,
        "dead_at": datetime.now(UTC).isoformat(),
        "runner": result.runner,
        "plugin_version": result.plugin_version,
        "code_hash": result.code_hash,
    }


def slim_dead_letter(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry for a DLQ topic that cannot take it whole: errors cut short, and the invocation without
    its params, which stay in the message at source_topic/source_partition/source_offset (replay that)."""
    out = dict(entry)
    out["error"] = _short_error(entry.get("error"))
    out["attempts"] = [{**a, "error": _short_error(a.get("error"))} for a in entry.get("attempts") or []]
    invocation = dict(entry.get("invocation") or {})
    invocation["params"] = {}
    out["invocation"] = invocation
    out["params_omitted"] = (
        "too large for the DLQ topic; the invocation is at "
        f"{entry.get('source_topic')}[{entry.get('source_partition')}]@{entry.get('source_offset')}"
    )
    return out


def _short_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    if not error:
        return error
    message, trace = str(error.get("message") or ""), error.get("traceback")
    return {
        **error,
        "message": message[:SHORT_ERROR_CHARS],
        "traceback": trace[-SHORT_ERROR_CHARS:] if isinstance(trace, str) else trace,
    }
