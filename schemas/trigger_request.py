"""Messages that ask for a run: manual triggers from the CLI, and schedule ticks from the timer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schemas.invocation import Priority, utcnow


class ManualTriggerRequest(BaseModel):
    """Published by `cdcflow trigger` on `cdcflow.triggers`; streams turns it into an invocation."""

    model_config = ConfigDict(extra="forbid")

    request_id: str
    plugin: str
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = "normal"
    requested_by: str
    requested_at: datetime = Field(default_factory=utcnow)
    # Set for a delayed trigger (`--delay`/`--at`): kept in Redis until then, then released onto the
    # triggers topic by the worker's leader (streams/delayed_release.py), which runs it at once.
    due_at: datetime | None = None


class ScheduleTick(BaseModel):
    """One fire of a schedule, as recorded by the timer (fired, coalesced or missed)."""

    schedule: str
    plugin: str
    fire_time: datetime
    emitted_at: datetime | None = None
    status: str = "fired"
    invocation_id: str | None = None
