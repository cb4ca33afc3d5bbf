"""One invocation through one plugin: validate parameters, call the pool, turn the outcome into a Result.

Shared by the runner and `cdcflow plugins test`, so both report exactly the same way.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from plugins.pool import CallOutcome, WorkerPool
from plugins.registry import LoadedPlugin
from schemas.invocation import Invocation
from schemas.manifest import UINT64, ParamError, json_unsafe
from schemas.result import ErrorInfo, Result, RunStatus

RUNNER_ID = f"{socket.gethostname()}:{os.getpid()}"

# A crash has no status of its own in the Result contract: it is a failure whose error type says so.
_STATUS: dict[str, RunStatus] = {
    "success": "success",
    "failed": "failed",
    "timeout": "timeout",
    "crashed": "failed",
    "cancelled": "cancelled",
}


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


def build_request(invocation: Invocation, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "invocation_id": invocation.invocation_id,
        "params": params,
        "context": {
            "invocation_id": invocation.invocation_id,
            "plugin": invocation.plugin,
            "attempt": invocation.attempt,
            "trigger": trigger_json(invocation),
        },
    }


def trigger_json(invocation: Invocation) -> dict[str, Any]:
    # The model's own serializer, called directly: model_dump's Python wrapper costs ~0.5 us more, per invocation.
    return type(invocation.trigger).__pydantic_serializer__.to_python(invocation.trigger, mode="json")  # type: ignore[no-any-return]  # a model's JSON form is a dict


# A rejected result names what was wrong, never carries it whole: the reason may quote a huge value.
REJECTION_MESSAGE_MAX_CHARS = 4000


def rejected_result(
    invocation_id: str,
    plugin: str,
    plugin_version: str,
    error_type: str,
    message: str,
    *,
    attempt: int = 1,
    trigger_kind: str | None = None,
    params: dict[str, Any] | None = None,
    trigger: dict[str, Any] | None = None,
    **extra: Any,
) -> Result:
    """A `rejected` result that always encodes, whatever the invocation held: params, trigger and
    attempt are kept only when JSON can carry them (what was wrong with them is in the message)."""
    now = _dt(time.time())
    if len(message) > REJECTION_MESSAGE_MAX_CHARS:
        message = message[:REJECTION_MESSAGE_MAX_CHARS] + f"... ({len(message)} characters in all)"
    return Result(
        invocation_id=invocation_id,
        plugin=plugin,
        plugin_version=plugin_version,
        status="rejected",
        attempt=attempt if json_unsafe(attempt) is None else 1,
        started_at=now,
        finished_at=now,
        duration_ms=0.0,
        error=ErrorInfo(type=error_type, message=message),
        trigger_kind=trigger_kind,
        runner=RUNNER_ID,
        params=params if json_unsafe(params) is None else None,
        trigger=trigger if json_unsafe(trigger, max_int=UINT64) is None else None,
        **extra,
    )


def outcome_result(
    plugin: LoadedPlugin,
    invocation: Invocation,
    outcome: CallOutcome,
    consumed_at: float | None = None,
    trigger: dict[str, Any] | None = None,
) -> Result:
    """`trigger`: the invocation's trigger as JSON if the caller has it (its request did: a row change's
    images are the larger part of a run's record, not worth serializing twice)."""
    started = outcome.started_at if outcome.started_at is not None else outcome.sent_at
    finished = outcome.finished_at if outcome.finished_at is not None else outcome.received_at
    extra: dict[str, Any] = {
        "code_hash": plugin.code_hash,
        "params": invocation.params,
        "trigger": trigger if trigger is not None else trigger_json(invocation),
        "worker_pid": outcome.worker_pid,
        # Epoch seconds along the way; entry_called_at - created_at is the end-to-end trigger latency.
        "timings": {
            "created_at": invocation.created_at.timestamp(),
            "consumed_at": consumed_at,
            "sent_at": outcome.sent_at,
            "entry_called_at": outcome.entry_called_at,
            "finished_at": outcome.finished_at,
            "received_at": outcome.received_at,
        },
    }
    if outcome.note:
        extra["note"] = outcome.note
    return Result(
        invocation_id=invocation.invocation_id,
        plugin=plugin.name,
        plugin_version=plugin.version,
        status=_STATUS[outcome.status],
        attempt=invocation.attempt,
        started_at=_dt(started),
        finished_at=_dt(finished),
        duration_ms=round(outcome.duration_ms, 3),
        output=outcome.output,
        error=ErrorInfo(**outcome.error) if outcome.error else None,
        trigger_kind=invocation.trigger.kind,
        runner=RUNNER_ID,
        **extra,
    )


def execute(
    plugin: LoadedPlugin, pool: WorkerPool, invocation: Invocation, consumed_at: float | None = None
) -> Result | None:
    """Run one invocation; None when the pool was closed mid-call (the caller must not record anything)."""
    return execute_many(plugin, pool, [invocation], [consumed_at])[0]


def execute_many(
    plugin: LoadedPlugin, pool: WorkerPool, invocations: list[Invocation], consumed_at: list[float | None]
) -> list[Result | None]:
    """Run invocations of one plugin: a batch plugin's in one call, another's as a call each, written to
    one worker together (WorkerPool.call_many). A result each, in order (invalid parameters are rejected
    without being sent); None for each the pool abandoned when it was closed mid-call."""
    results: list[Result | None] = [None] * len(invocations)
    sent: list[int] = []
    requests: list[dict[str, Any]] = []
    for i, invocation in enumerate(invocations):
        try:
            params = plugin.manifest.validate_params(invocation.params)
        except ParamError as e:
            results[i] = _param_rejection(plugin, invocation, e)
            continue
        sent.append(i)
        requests.append(build_request(invocation, params))
    if not requests:
        return results
    timeout = plugin.manifest.timeout_seconds
    if plugin.manifest.batch is not None:
        outcomes = item_outcomes(pool.call({"invocation_id": None, "batch": requests}, timeout), len(requests))
    else:
        outcomes = pool.call_many(requests, timeout)
    for i, request, outcome in zip(sent, requests, outcomes, strict=True):
        if outcome.status != "aborted":
            results[i] = outcome_result(
                plugin, invocations[i], outcome, consumed_at[i], trigger=request["context"]["trigger"]
            )
    return results


def item_outcomes(outcome: CallOutcome, count: int) -> list[CallOutcome]:
    """Each item's outcome of a batch call: its own answer when the call succeeded, else the call's
    (a timeout, crash or exception fails every item alike)."""
    if outcome.status != "success":
        return [outcome] * count
    items = outcome.items
    if items is None or len(items) != count:
        got = "no items" if items is None else f"{len(items)} items"
        error = {"type": "ProtocolError", "message": f"a batch call of {count} answered {got}", "traceback": None}
        return [replace(outcome, status="failed", error=error)] * count
    return [
        replace(
            outcome,
            status="success" if item.get("ok") else "failed",
            output=item.get("output"),
            error=item.get("error"),
            note=item.get("note"),
            items=None,
        )
        for item in items
    ]


def _param_rejection(plugin: LoadedPlugin, invocation: Invocation, e: ParamError) -> Result:
    return rejected_result(
        invocation.invocation_id,
        plugin.name,
        plugin.version,
        "ParamError",
        str(e),
        attempt=invocation.attempt,
        trigger_kind=invocation.trigger.kind,
        code_hash=plugin.code_hash,
        params=invocation.params,  # as asked for, unless they are what was wrong (rejected_result drops them)
        trigger=invocation.trigger.model_dump(mode="json"),
    )
