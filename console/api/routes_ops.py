"""Health, status, the audit log, /metrics and the live event stream."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from console.api.audit import AuditEntry, BadCursor
from console.api.context import ApiContext, context, require
from console.api.problems import ERROR_RESPONSES, ApiProblem, FieldProblem
from console.api.tokens import Principal
from console.status_report import check_health, gather

router = APIRouter(responses=ERROR_RESPONSES)
Reader = Annotated[Principal, Depends(require("read"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Ctx = Annotated[ApiContext, Depends(context)]


class HealthReport(BaseModel):
    healthy: bool
    lines: list[str]


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    next_cursor: str | None


@router.get("/api/health", response_model=HealthReport, tags=["operations"])
def get_health(_: Reader, ctx: Ctx) -> HealthReport:
    """What `cdcflow health` says: `healthy` when every expected component is up and ready, and one
    line per component kind. The status is 200 either way (a 5xx would say the API itself failed)."""
    ok, lines = check_health(ctx.config)
    return HealthReport(healthy=ok, lines=lines)


@router.get("/api/status", tags=["operations"])
def get_status(_: Reader, ctx: Ctx, failures: Annotated[int, Query(ge=0, le=100)] = 5) -> dict[str, Any]:
    """What `cdcflow status --json` says: components, reader, consumer lag, plugins, schedules, delayed
    triggers, failures."""
    return gather(ctx.config, failures=failures)


@router.get("/api/audit", response_model=AuditPage, tags=["operations"])
def get_audit(
    _: Admin,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=40, pattern=r"^[0-9]{1,19}-[0-9]{1,19}$")] = None,
) -> AuditPage:
    """Mutating calls, newest first: who (token name and id), what, the path, the status returned."""
    try:
        entries = ctx.audit.page(limit, cursor)
    except BadCursor as e:
        raise ApiProblem(422, "Invalid request", str(e), [FieldProblem(field="cursor", message=str(e))]) from None
    return AuditPage(entries=entries, next_cursor=entries[-1].id if len(entries) == limit else None)


@router.get("/metrics", include_in_schema=False)
def metrics(ctx: Ctx) -> Response:
    return Response(ctx.metrics.text(), media_type="text/plain; version=0.0.4")


@router.get("/api/events", tags=["operations"], response_class=StreamingResponse)
async def events(_: Reader, request: Request) -> StreamingResponse:
    """Server-Sent Events: `result` (a run's result landed), `component` (up/down), `schedule` (a fire)."""
    hub = request.app.state.events
    return StreamingResponse(hub.stream(request), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
