"""Schedules (next and last fires, missed slots, pause/resume) and Rules (monitored tables,
operations, conditions and params in words; the explain box). Pause/resume and explain post to the
API; the schedules table refreshes on the API's `schedule` events."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse

from console.api import routes_rules as api_rules
from console.api.context import ApiContext, context
from console.web.auth import Who
from console.web.conditions_text import describe
from console.web.render import fragment, page

router = APIRouter(include_in_schema=False)
Ctx = Annotated[ApiContext, Depends(context)]


@router.get("/schedules", response_class=HTMLResponse)
def schedules_page(request: Request, who: Who, ctx: Ctx) -> HTMLResponse:
    schedules = api_rules.list_schedules(who.principal, ctx)
    return page(request, "schedules.html", who, "schedules", schedules=schedules)


@router.get("/ui/schedules", response_class=HTMLResponse)
def schedules_table(request: Request, who: Who, ctx: Ctx) -> HTMLResponse:
    schedules = api_rules.list_schedules(who.principal, ctx)
    principal = who.principal
    return fragment(
        "_schedules_table.html",
        schedules=schedules,
        is_admin=principal.may("admin"),
        may_trigger=principal.may("trigger"),
    )


@router.get("/rules", response_class=HTMLResponse)
def rules_page(request: Request, who: Who, ctx: Ctx) -> HTMLResponse:
    rules = ctx.config.rules.rules
    source = {"db": rules[0].db, "table": rules[0].table} if rules else {"db": "db", "table": "table"}
    example: dict[str, Any] = {"op": "u", "before": {"id": 1}, "after": {"id": 1}, "source": source}
    return page(
        request,
        "rules.html",
        who,
        "rules",
        rules=rules,
        describe=describe,
        example=json.dumps(example, indent=2),
    )
