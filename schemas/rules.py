"""The rules part of the config file: monitored tables (what a row change triggers) and schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from schemas.errors import location
from schemas.invocation import Priority

Operation = Literal["INSERT", "UPDATE", "DELETE", "READ"]


DEFAULT_OPERATIONS: tuple[Operation, ...] = ("INSERT", "UPDATE", "DELETE")


class TriggerSpec(BaseModel):
    """One plugin of a rule with its own settings: `{plugin: es_indexer, params: {...}, priority: high}`."""

    model_config = ConfigDict(extra="forbid")

    plugin: str = Field(min_length=1)
    params: dict[str, Any] = Field(
        default_factory=dict, description="this plugin's params, over the rule's params (same templates)"
    )
    priority: Priority | None = Field(default=None, description="this plugin's priority (default: the rule's)")


class RuleSpec(BaseModel):
    """One rule as written under `monitored_tables.<table>` (the original design's shape, extended)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    triggers: list[str | TriggerSpec] = Field(
        min_length=1, description="plugins to invoke: a name, or {plugin, params, priority}"
    )
    operations: list[Operation] = Field(default_factory=lambda: list(DEFAULT_OPERATIONS))
    conditions: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="params of every plugin of the rule; strings may use {after.col} templates; "
        "none given (here or on a trigger): each plugin's declared parameters are bound by name",
    )
    priority: Priority = "normal"
    debounce_ms: int | None = Field(default=None, ge=1)
    enabled: bool = True

    @field_validator("triggers", mode="before")
    @classmethod
    def _trigger_entries(cls, entries: Any) -> Any:
        # Each entry read here (not by a str | TriggerSpec union): an error names the entry and its key
        # once, instead of once per member of the union.
        if not isinstance(entries, list):
            return entries
        out: list[Any] = []
        names: set[str] = set()
        for i, entry in enumerate(entries):
            if isinstance(entry, dict):
                try:
                    entry = TriggerSpec.model_validate(entry)
                except ValidationError as e:
                    first = e.errors(include_url=False)[0]
                    raise PydanticCustomError("trigger", f"[{i}].{location(first['loc'])}: {first['msg']}") from None
            elif not isinstance(entry, str | TriggerSpec):
                raise PydanticCustomError("trigger", f"[{i}]: a plugin name or a mapping {{plugin, params, priority}}")
            name = entry if isinstance(entry, str) else entry.plugin
            if name in names:
                raise PydanticCustomError(
                    "trigger",
                    f"[{i}]: plugin {name!r} is listed twice (one invocation per rule, plugin and change: "
                    "use a second rule)",
                )
            names.add(name)
            out.append(entry)
        return out

    @field_validator("operations", mode="before")
    @classmethod
    def _upper(cls, ops: Any) -> Any:
        if isinstance(ops, str):
            ops = [ops]
        if isinstance(ops, list):
            return ["READ" if str(o).upper() == "SNAPSHOT" else str(o).upper() for o in ops]
        return ops


class Rule(RuleSpec):
    """A rule bound to its table, after the file was read.

    `triggers` is the plugin names, in order (what most readers need); a trigger written with its
    own settings keeps them in `trigger_settings`, by plugin (a plugin appears once per rule: the
    invocation id is made of rule, plugin and change)."""

    name: str
    db: str
    table: str
    triggers: list[str] = Field(min_length=1, description="plugins to invoke")  # type: ignore[assignment]  # narrows RuleSpec's
    trigger_settings: dict[str, TriggerSpec] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split_triggers(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not isinstance(data.get("triggers"), list):
            return data
        names: list[Any] = []
        settings = dict(data.get("trigger_settings") or {})
        for entry in data["triggers"]:
            spec = TriggerSpec.model_validate(entry) if isinstance(entry, dict | TriggerSpec) else None
            names.append(spec.plugin if spec is not None else entry)
            if spec is not None:
                settings[spec.plugin] = spec
        return {**data, "triggers": names, "trigger_settings": settings}

    def params_for(self, plugin: str) -> dict[str, Any]:
        """The params `plugin` is given: the rule's, overridden key by key by its trigger's own."""
        own = self.trigger_settings.get(plugin)
        return {**self.params, **own.params} if own is not None and own.params else self.params

    def priority_for(self, plugin: str) -> Priority:
        own = self.trigger_settings.get(plugin)
        return own.priority if own is not None and own.priority is not None else self.priority

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
