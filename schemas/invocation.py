"""Invocation events on `cdcflow.invoke.<plugin>`, and the trigger that caused each one."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Priority = Literal["low", "normal", "high"]

# Fixed namespace so the same (rule, plugin, event) always yields the same invocation id.
INVOCATION_NAMESPACE = uuid.UUID("7b0c7a1e-3c55-4a7e-9f0e-2b1f5d0c6a11")


def utcnow() -> datetime:
    return datetime.now(UTC)


class CdcTrigger(BaseModel):
    kind: Literal["cdc"] = "cdc"
    rule: str
    event_id: str
    table: str
    op: str
    # The row as it was and as it became, so a run shows what changed (the dashboard's run page):
    # carried when the change's message is small (streams' ROW_IN_TRIGGER_MAX_BYTES), else None.
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class ScheduleTrigger(BaseModel):
    kind: Literal["schedule"] = "schedule"
    schedule: str
    fire_time: datetime


class ManualTrigger(BaseModel):
    kind: Literal["manual"] = "manual"
    requested_by: str
    requested_at: datetime
    request_id: str
    due_at: datetime | None = None  # a delayed trigger's time (`cdcflow trigger --delay/--at`)


class ReplayTrigger(BaseModel):
    kind: Literal["replay"] = "replay"
    source_topic: str
    original_invocation_id: str | None = None
    original_event_id: str | None = None
    replay_id: str
    # Of a re-matched row change (`cdcflow replay` of a cdc topic): the rule that matched it now.
    rule: str | None = None
    table: str | None = None
    op: str | None = None


class RetryTrigger(BaseModel):
    kind: Literal["retry"] = "retry"
    original_invocation_id: str
    previous_error: str | None = None


Trigger = Annotated[
    CdcTrigger | ScheduleTrigger | ManualTrigger | ReplayTrigger | RetryTrigger,
    Field(discriminator="kind"),
]


class Invocation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    invocation_id: str
    plugin: str
    params: dict[str, Any] = Field(default_factory=dict)
    trigger: Trigger
    attempt: int = Field(default=1, ge=1)
    priority: Priority = "normal"
    created_at: datetime = Field(default_factory=utcnow)


def invocation_id_for(*parts: str) -> str:
    """Deterministic id: the same parts (e.g. rule, plugin, event id) always give the same id."""
    return str(uuid.uuid5(INVOCATION_NAMESPACE, "\x1f".join(parts)))
