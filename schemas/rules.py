"""The rules part of the config file: monitored tables (what a row change triggers) and schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.invocation import Priority

Operation = Literal["INSERT", "UPDATE", "DELETE", "READ"]


DEFAULT_OPERATIONS: tuple[Operation, ...] = ("INSERT", "UPDATE", "DELETE")


class RuleSpec(BaseModel):
    """One rule as written under `monitored_tables.<table>` (the original design's shape, extended)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    triggers: list[str] = Field(min_length=1, description="plugins to invoke")
    operations: list[Operation] = Field(default_factory=lambda: list(DEFAULT_OPERATIONS))
    conditions: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(
        default_factory=dict, description="plugin params; strings may use {after.col} templates"
    )
    priority: Priority = "normal"
    debounce_ms: int | None = Field(default=None, ge=1)
    enabled: bool = True

    @field_validator("operations", mode="before")
    @classmethod
    def _upper(cls, ops: Any) -> Any:
        if isinstance(ops, str):
            ops = [ops]
        if isinstance(ops, list):
            return ["READ" if str(o).upper() == "SNAPSHOT" else str(o).upper() for o in ops]
        return ops


class Rule(RuleSpec):
    """A rule bound to its table, after the file was read."""

    name: str
    db: str
    table: str

    @property
    def qualified_table(self) -> str:
        return f"{self.db}.{self.table}"


class ScheduleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plugin: str
    cron: str | None = None
    timezone: str = "UTC"
    interval_seconds: float | None = Field(default=None, gt=0)
    at: datetime | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Priority = "normal"
    misfire_grace_time: float | None = Field(default=60.0, ge=0, description="seconds; None = always run late fires")
    coalesce: bool = True
    max_instances: int = Field(default=1, ge=1)
    enabled: bool = True

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> ScheduleSpec:
        kinds = [k for k in ("cron", "interval_seconds", "at") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of cron, interval_seconds, at (got {', '.join(kinds) or 'none'})")
        if self.cron is not None:
            from croniter import croniter

            if not croniter.is_valid(self.cron):
                raise ValueError(f"invalid cron expression {self.cron!r}")
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(self.timezone)
        except Exception:
            raise ValueError(f"unknown timezone {self.timezone!r}") from None
        return self


class Schedule(ScheduleSpec):
    name: str

    def timing(self) -> str:
        """What decides the slots (cron/interval/at and timezone); a change of it restarts the count from now."""
        return f"cron={self.cron} interval={self.interval_seconds} at={self.at} tz={self.timezone}"


class RulesConfig(BaseModel):
    """Rules and schedules, normalized: each rule knows its db and table and has a unique name."""

    rules: list[Rule] = Field(default_factory=list)
    schedules: list[Schedule] = Field(default_factory=list)

    def tables(self) -> list[tuple[str, str]]:
        return sorted({(r.db, r.table) for r in self.rules if r.enabled})

    def rules_for(self, db: str, table: str) -> list[Rule]:
        return [r for r in self.rules if r.enabled and r.db == db and r.table == table]

    def plugins(self) -> set[str]:
        return {p for r in self.rules for p in r.triggers} | {s.plugin for s in self.schedules}
