"""Runs: the table (filters kept in the URL, newest first, live rows over SSE as results land) and a
run's page (params, output, error, attempts, timings, the row change if the result carries it)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, get_args

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, StreamingResponse

from console.api.context import ApiContext, context
from console.api.events import EventHub
from console.web.auth import Who
from console.web.render import NO_STORE, page, render
from console.web.row_change import column_changes, row_change
from plugins.delayed_store import DelayedStore
from plugins.run_query import BadCursor, RunFilter, query_runs
from plugins.state import PluginStates
from plugins.store import RunStore
from schemas.result import IN_PROGRESS, Result, RunStatus

router = APIRouter(include_in_schema=False)
Ctx = Annotated[ApiContext, Depends(context)]
STATUSES: tuple[str, ...] = get_args(RunStatus)
TRIGGER_KINDS = ("cdc", "schedule", "manual", "replay", "retry")
PAGE_SIZE = 50
FILTER_NAMES = ("plugin", "status", "trigger_kind", "rule", "schedule", "since", "until")


@dataclass(frozen=True)
class RunsQuery:
    """The Runs page's URL: its filters as typed in, and what they mean (or why they do not)."""

    values: dict[str, str]
    where: RunFilter
    problem: str | None

    @classmethod
    def parse(cls, request: Request) -> RunsQuery:
        values = {k: request.query_params.get(k, "").strip()[:200] for k in FILTER_NAMES}
        problem = None
        if values["status"] and values["status"] not in STATUSES:
            problem, values["status"] = f"unknown status {values['status']!r}", ""
        if values["trigger_kind"] and values["trigger_kind"] not in TRIGGER_KINDS:
            problem, values["trigger_kind"] = f"unknown trigger kind {values['trigger_kind']!r}", ""
        times: list[float | None] = []
        for name in ("since", "until"):
            try:
                times.append(_epoch(values[name]))
            except ValueError:
                problem, values[name] = f"{name}: not a date and time ({values[name]!r})", ""
                times.append(None)
        where = RunFilter(
            values["plugin"] or None,
            values["status"] or None,
            values["trigger_kind"] or None,
            values["rule"] or None,
            values["schedule"] or None,
            times[0],
            times[1],
        )
        return cls(values, where, problem)

    def query_string(self, **extra: str) -> str:
        from urllib.parse import urlencode

        return urlencode({k: v for k, v in {**self.values, **extra}.items() if v})


def _epoch(text: str) -> float | None:
    """A `datetime-local` value (or ISO-8601 text) as epoch seconds; naive times are UTC."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _choices(ctx: ApiContext) -> dict[str, list[str]]:
    rules = ctx.config.rules
    plugins = set(PluginStates(ctx.redis, ctx.config.settings.redis.key_prefix).all())
    plugins |= {p for r in rules.rules for p in r.triggers} | {s.plugin for s in rules.schedules}
    return {
        "plugin": sorted(plugins),
        "status": list(STATUSES),
        "trigger_kind": list(TRIGGER_KINDS),
        "rule": sorted(r.name for r in rules.rules),
        "schedule": sorted(s.name for s in rules.schedules),
    }


def trigger_of(result: Result) -> dict[str, Any]:
    trigger = result.trigger
    return trigger if isinstance(trigger, dict) else {}


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request, who: Who, ctx: Ctx, cursor: str | None = None) -> HTMLResponse:
    query = RunsQuery.parse(request)
    problem = query.problem
    runs: list[Result] = []
    next_cursor = None
    try:
        found = query_runs(RunStore(ctx.config.settings, client=ctx.redis), query.where, PAGE_SIZE, cursor)
        runs, next_cursor = found.runs, found.next_cursor
    except BadCursor as e:
        problem = str(e)
    live = cursor is None and not query.values["until"]
    return page(
        request,
        "runs.html",
        who,
        "runs",
        runs=runs,
        query=query,
        choices=_choices(ctx),
        problem=problem,
        next_cursor=next_cursor,
        live=live,
        trigger_of=trigger_of,
    )


@router.get("/ui/runs/stream")
async def runs_stream(request: Request, who: Who, ctx: Ctx) -> StreamingResponse:
    """SSE: `run` events whose data is the new table row (HTML), for results that pass the filters."""
    hub: EventHub = request.app.state.events
    query = RunsQuery.parse(request)
    where = dataclasses.replace(query.where, since=None, until=None)  # live rows are new: no time range
    store = RunStore(ctx.config.settings, client=ctx.redis)
    return StreamingResponse(_rows(hub.stream(request), store, where), media_type="text/event-stream", headers=NO_STORE)


def live_match(where: RunFilter, run: dict[str, Any]) -> bool:
    """Whether a stored run (its JSON) passes the filters other than the time range."""
    found = run.get("trigger")
    trigger: dict[str, Any] = found if isinstance(found, dict) else {}
    wanted = {
        "plugin": (where.plugin, run.get("plugin")),
        "status": (where.status, run.get("status")),
        "trigger_kind": (where.trigger_kind, run.get("trigger_kind")),
        "rule": (where.rule, trigger.get("rule")),
        "schedule": (where.schedule, trigger.get("schedule")),
    }
    return all(want is None or want == have for want, have in wanted.values())


async def _rows(frames: AsyncIterator[bytes], store: RunStore, where: RunFilter) -> AsyncIterator[bytes]:
    async for frame in frames:
        if not frame.startswith(b"event: result\n"):
            yield frame  # comments: connected, keep-alive
            continue
        summary = orjson.loads(frame.split(b"\ndata: ", 1)[1])
        raw = await asyncio.to_thread(store.get_raw, str(summary.get("invocation_id")))
        if raw is None or not live_match(where, orjson.loads(raw)):
            continue
        row = render("_run_row.html", run=Result.model_validate_json(raw), trigger_of=trigger_of, fresh=True)
        yield b"event: run\ndata: " + " ".join(row.split()).encode() + b"\n\n"


@router.get("/runs/{invocation_id}", response_class=HTMLResponse)
def run_page(request: Request, who: Who, ctx: Ctx, invocation_id: str) -> HTMLResponse:
    store = RunStore(ctx.config.settings, client=ctx.redis)
    result = store.current(invocation_id)
    if result is None or result.status in IN_PROGRESS:
        # 200, not 404: pending is a state of the run (its page polls itself, and htmx swaps only
        # successful answers); an unknown or expired id reads the same, as the page says
        state = result.model_dump(mode="json") if result is not None else None
        waiting = DelayedStore(ctx.config.settings, ctx.redis).get(invocation_id) if result is None else None
        due = datetime.fromtimestamp(waiting.due_ms / 1000, UTC) if waiting else None
        return page(
            request, "run_pending.html", who, "runs", 200, invocation_id=invocation_id, state=state, delayed_until=due
        )
    change = row_change(result)
    params = result.params
    return page(
        request,
        "run.html",
        who,
        "runs",
        run=result,
        params=params,
        trigger=trigger_of(result),
        attempts=[a for a in store.attempts(invocation_id) if a.get("attempt") != result.attempt],
        timings=_timings(result),
        columns=column_changes(*change) if change else None,
        params_json=orjson.dumps(params or {}).decode(),
    )


def _timings(result: Result) -> list[tuple[str, float | None, float | None]]:
    """Each recorded moment: (name, epoch, ms after the invocation was created)."""
    timings = result.timings or {}
    origin = timings.get("created_at")
    return [(name, at, None if at is None or origin is None else (at - origin) * 1000) for name, at in timings.items()]
