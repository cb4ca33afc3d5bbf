"""The Overview page, its live part (refreshed by htmx) and the charts' data."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse, JSONResponse

from console.api.context import ApiContext, context
from console.web.auth import Who
from console.web.overview import gather_overview
from console.web.render import NO_STORE, fragment, page
from console.web.sampler import Sampler

router = APIRouter(include_in_schema=False)
Ctx = Annotated[ApiContext, Depends(context)]


def sampler(request: Request) -> Sampler:
    found: Sampler = request.app.state.sampler
    return found


@router.get("/", response_class=HTMLResponse)
def overview_page(request: Request, who: Who, ctx: Ctx) -> HTMLResponse:
    return page(request, "overview.html", who, "overview", view=gather_overview(ctx, sampler(request)))


@router.get("/ui/overview", response_class=HTMLResponse)
def overview_live(request: Request, who: Who, ctx: Ctx) -> HTMLResponse:
    return fragment("_overview_live.html", view=gather_overview(ctx, sampler(request)))


@router.get("/ui/charts.json")
def chart_series(request: Request, who: Who) -> JSONResponse:
    series: dict[str, Any] = sampler(request).series()
    return JSONResponse(series, headers=NO_STORE)
