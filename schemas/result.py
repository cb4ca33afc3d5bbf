"""Results on `cdcflow.results` (and in Redis run history)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

# pending: a runner took the invocation and has not started it; running: a worker runs it (a run left
# `running` by a runner that died stays so until it is redelivered). The rest are final: success,
# failed, timeout (the call ran past its timeout_seconds), rejected (bad parameters or message),
# cancelled (`cdcflow runs cancel`), skipped (a schedule slot not run: missed past misfire_grace_time,
# or max_instances still running; the error says which).
RunStatus = Literal["pending", "running", "success", "failed", "timeout", "rejected", "cancelled", "skipped"]
IN_PROGRESS: frozenset[str] = frozenset({"pending", "running"})


class ErrorInfo(BaseModel):
    # Extra fields pass through: a command plugin's failure carries its `exit_code`.
    model_config = ConfigDict(extra="allow")

    type: str
    message: str
    traceback: str | None = None


class Result(BaseModel):
    model_config = ConfigDict(extra="allow")

    invocation_id: str
    plugin: str
    plugin_version: str
    status: RunStatus
    attempt: int = 1
    started_at: datetime
    finished_at: datetime
    duration_ms: float
    output: Any = None
    error: ErrorInfo | None = None
    trigger_kind: str | None = None
    runner: str | None = None
    # Filled by the plugin runner: the sha256 of the plugin's code that ran, and epoch-second
    # timestamps along the way (created_at, consumed_at, sent_at, entry_called_at, finished_at, received_at).
    code_hash: str | None = None
    timings: dict[str, float | None] | None = None
    # What was asked for, so a run explains itself (the API's and dashboard's run page, filters by rule
    # or schedule): the invocation's parameters and its trigger (rule and event id, schedule and slot...).
    params: dict[str, Any] | None = None
    trigger: dict[str, Any] | None = None
