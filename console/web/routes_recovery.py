"""Dead letters (list, inspect, replay the selected ones) and replays (start one, watch its progress,
stop it). Reads go through the API's own functions; the actions post to the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse

from console.api import routes_runs as api_runs
from console.api.context import ApiContext, context
from console.api.replays import ReplayProgress, Replays
from console.web.auth import Who
from console.web.render import fragment, page

router = APIRouter(include_in_schema=False)
Ctx = Annotated[ApiContext, Depends(context)]
RECENT_REPLAYS = 20


@router.get("/dlq", response_class=HTMLResponse)
def dlq_page(
    request: Request, who: Who, ctx: Ctx, plugin: str | None = None, cursor: str | None = None
) -> HTMLResponse:
    problem, entries, next_cursor = None, [], None
    try:
        found = api_runs.list_dead_letters(who.principal, ctx, plugin=plugin or None, limit=100, cursor=cursor or None)
        entries, next_cursor = found.entries, found.next_cursor
    except Exception as e:  # Kafka unreachable, say: the page says so instead of failing
        problem = f"could not read the dead-letter topic: {type(e).__name__}: {e}"
    return page(
        request,
        "dlq.html",
        who,
        "dlq",
        entries=entries,
        next_cursor=next_cursor,
        plugin=plugin or "",
        problem=problem,
    )


def recent_replays(ctx: ApiContext, registry: Replays) -> list[ReplayProgress]:
    """Replays started over the API (any server), newest first."""
    return registry.recent(RECENT_REPLAYS)


@router.get("/replays", response_class=HTMLResponse)
def replays_page(request: Request, who: Who, ctx: Ctx, id: str | None = None) -> HTMLResponse:
    registry: Replays = request.app.state.replays
    watched = registry.get(id) if id else None
    rules = ctx.config.rules
    tables = sorted({f"{r.db}.{r.table}" for r in rules.rules})
    plugins = sorted({p for r in rules.rules for p in r.triggers} | {s.plugin for s in rules.schedules})
    sources = [*tables, "dlq", "triggers", *(f"invoke:{p}" for p in plugins)]
    return page(
        request,
        "replays.html",
        who,
        "replays",
        recent=recent_replays(ctx, registry),
        watched=watched,
        sources=sources,
    )


@router.get("/ui/replays/{replay_id}", response_class=HTMLResponse)
def replay_progress(request: Request, who: Who, replay_id: str) -> HTMLResponse:
    registry: Replays = request.app.state.replays
    principal = who.principal
    return fragment(
        "_replay_progress.html", progress=registry.get(replay_id), replay_id=replay_id, is_admin=principal.may("admin")
    )
