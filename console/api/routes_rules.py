"""Rules (list, check a config text, explain a row change) and schedules (list, pause, resume, run now)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from console.api.context import ApiContext, context, require
from console.api.problems import ERROR_RESPONSES, ApiProblem
from console.api.tokens import Principal
from console.status_report import schedule_views
from schemas.config import config_from_text
from schemas.errors import ConfigError
from schemas.rules import Rule, Schedule
from streams.matcher import Matcher, explain
from streams.schedule_run import ScheduleRunError, run_schedule_now
from streams.schedule_state import ScheduleStore
from streams.startup_checks import startup_report
from streams.validation import discover_manifests

router = APIRouter(responses=ERROR_RESPONSES)
Reader = Annotated[Principal, Depends(require("read"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Triggerer = Annotated[Principal, Depends(require("trigger"))]
Ctx = Annotated[ApiContext, Depends(context)]


class RulesOut(BaseModel):
    rules: list[Rule]
    schedules: list[Schedule]


class CheckRequest(BaseModel):
    config: str = Field(max_length=512 * 1024, description="a config file's text (YAML or JSON)")


class ConfigProblem(BaseModel):
    where: str
    problem: str


class CheckOut(BaseModel):
    ok: bool
    rules: int
    schedules: int
    problems: list[ConfigProblem]
    notes: list[str] = Field(default_factory=list, description="what could not be checked, and why")


class TableRef(BaseModel):
    db: str = Field(min_length=1, max_length=200)
    table: str = Field(min_length=1, max_length=200)


class ExplainRequest(BaseModel):
    """A row change as on a cdc topic (other envelope fields may be present and are ignored)."""

    op: Literal["c", "u", "d", "r"]
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    source: TableRef


class RuleVerdict(BaseModel):
    rule: str
    matched: bool
    reason: str


class ScheduleRunRequest(BaseModel):
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=200, description="the same key gives the same invocation, run once"
    )


class ScheduleRunOut(BaseModel):
    schedule: str
    plugin: str
    invocation_id: str
    status: Literal["pending"] = "pending"


class ScheduleView(BaseModel):
    name: str
    plugin: str
    when: str = Field(description="cron, interval or one-off time, in words")
    enabled: bool
    paused: bool
    next_fire: str | None = Field(description="in the schedule's timezone; null when paused or disabled")
    last_fire: str | None
    last_result: str | None = Field(description="status of the last fire's run; pending until it lands")
    missed: int = Field(description="slots skipped by misfire grace or max_instances, in total")


@router.get("/api/rules", response_model=RulesOut, tags=["rules"])
def list_rules(_: Reader, ctx: Ctx) -> RulesOut:
    """The monitored-table rules and schedules the server's config holds."""
    return RulesOut(rules=ctx.config.rules.rules, schedules=ctx.config.rules.schedules)


@router.post("/api/rules/check", response_model=CheckOut, tags=["rules"])
def check_rules(_: Reader, ctx: Ctx, body: CheckRequest) -> CheckOut:
    """What `cdcflow rules check` says of a config text (streams/startup_checks.py), against the server's
    plugins and tables. The text's kafka, mysql, redis, runners and streams sections are checked for form
    only: the check uses the server's own (a request must not make the server reach other hosts or look
    at its files), and starts only plugins whose venv is built (it installs nothing)."""
    try:
        candidate = config_from_text(body.config, "config", ctx.config.path.parent if ctx.config.path else Path.cwd())
    except ConfigError as e:
        problems = [ConfigProblem(where=k or "(top)", problem=p) for k, p in e.problems]
        return CheckOut(ok=False, rules=0, schedules=0, problems=problems)
    server, settings = ctx.config.settings, candidate.settings
    settings.kafka, settings.mysql, settings.redis, settings.runners, settings.streams = (
        server.kafka,
        server.mysql,
        server.redis,
        server.runners,
        server.streams,
    )
    report = startup_report(candidate, build_venvs=False)
    rules = candidate.rules
    return CheckOut(
        ok=not report.problems,
        rules=len(rules.rules),
        schedules=len(rules.schedules),
        problems=[ConfigProblem(where=k or "(top)", problem=p) for k, p in report.problems],
        notes=report.notes,
    )


@router.post("/api/rules/explain", response_model=list[RuleVerdict], tags=["rules"])
def explain_change(_: Reader, ctx: Ctx, body: ExplainRequest) -> list[RuleVerdict]:
    """Which rules on the change's table match it, and for the others the check that failed."""
    try:
        manifests = discover_manifests(ctx.config.settings.runners.plugin_dirs)[0]  # params bound by name
        matcher = Matcher.compile(ctx.config.rules, str(ctx.config.path or "config"), manifests)
    except ConfigError as e:
        raise ApiProblem(409, "Conflict", f"the server's rules do not compile: {e}") from None
    verdicts = explain(matcher, ctx.config.rules, body.model_dump())
    return [RuleVerdict(rule=v.rule, matched=v.matched, reason=v.reason) for v in verdicts]


@router.get("/api/schedules", response_model=list[ScheduleView], tags=["schedules"])
def list_schedules(_: Reader, ctx: Ctx) -> list[ScheduleView]:
    """Each schedule: paused or not, next and last fire."""
    return [ScheduleView.model_validate(v) for v in schedule_views(ctx.config)]


# before the pause/resume route: its `{action}` would take "run" and refuse it
@router.post("/api/schedules/{name}/run", response_model=ScheduleRunOut, status_code=202, tags=["schedules"])
def run_schedule(
    principal: Triggerer, ctx: Ctx, name: str, request: Request, body: ScheduleRunRequest | None = None
) -> ScheduleRunOut:
    """Fire a schedule now, outside its slots (`cdcflow schedules run`): its plugin and params, a `schedule`
    trigger, recorded in its history; it runs even when paused, and its next slot fires as planned.
    503 if Kafka does not take it (nothing is recorded then)."""
    schedule = next((s for s in ctx.config.rules.schedules if s.name == name), None)
    if schedule is None:
        raise ApiProblem(404, "Not found", f"no schedule {name!r} in the config")
    key = body.idempotency_key if body else None
    try:
        invocation_id = run_schedule_now(ctx.config.settings, schedule, f"{principal.token_id}:{key}" if key else None)
    except ScheduleRunError as e:
        raise ApiProblem(503, "Service unavailable", str(e)) from None
    request.state.audit_detail = f"run {name}: invocation {invocation_id}"
    return ScheduleRunOut(schedule=name, plugin=schedule.plugin, invocation_id=invocation_id)


@router.post("/api/schedules/{name}/{action}", response_model=ScheduleView, tags=["schedules"])
def pause_or_resume(
    _: Admin, ctx: Ctx, name: str, action: Literal["pause", "resume"], request: Request
) -> ScheduleView:
    """Pause (no fires until resumed) or resume a schedule; the state is in Redis, seen by every worker."""
    if name not in {s.name for s in ctx.config.rules.schedules}:
        raise ApiProblem(404, "Not found", f"no schedule {name!r} in the config")
    store = ScheduleStore(ctx.config.settings, client=ctx.redis)
    if action == "pause":
        store.pause(name)
    else:
        store.resume(name, datetime.now(UTC))
    request.state.audit_detail = f"{action} {name}"
    return next(ScheduleView.model_validate(v) for v in schedule_views(ctx.config) if v["name"] == name)
