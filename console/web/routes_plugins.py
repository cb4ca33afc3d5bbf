"""Plugins: the list (version, code hash, workers alive, state, last reload error, reload) and a
plugin's page (its manifest, a trigger form made from plugin.json's parameters, its recent runs).
The data is the API's own (console/api/routes_plugins.py); the forms post to the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import HTMLResponse

from console.api import routes_plugins as api_plugins
from console.api.context import ApiContext, context
from console.api.problems import ApiProblem
from console.web.auth import Who
from console.web.render import page
from plugins.run_query import RunFilter, query_runs
from plugins.store import RunStore
from schemas.manifest import ParameterSpec

router = APIRouter(include_in_schema=False)
Ctx = Annotated[ApiContext, Depends(context)]


def input_kind(spec: ParameterSpec) -> str:
    """How a parameter is typed in: text (string, integer, number; the API coerces or refuses by name),
    a yes/no choice (boolean), or JSON (object, array, any)."""
    return {"boolean": "choice", "object": "json", "array": "json", "any": "json"}.get(spec.type, "text")


@router.get("/plugins", response_class=HTMLResponse)
def plugins_page(request: Request, who: Who, ctx: Ctx) -> HTMLResponse:
    listing = api_plugins.list_plugins(who.principal, ctx)
    return page(request, "plugins.html", who, "plugins", plugins=listing.plugins, errors=listing.errors)


@router.get("/plugins/{name}", response_class=HTMLResponse)
def plugin_page(request: Request, who: Who, ctx: Ctx, name: str) -> HTMLResponse:
    try:
        plugin = api_plugins.get_plugin(who.principal, ctx, name)
    except ApiProblem as e:
        return page(request, "not_found.html", who, "plugins", 404, what=e.problem.detail, back="/plugins")
    store = RunStore(ctx.config.settings, client=ctx.redis)
    recent = query_runs(store, RunFilter(plugin=name), 10).runs
    return page(request, "plugin.html", who, "plugins", plugin=plugin, recent=recent, input_kind=input_kind)
