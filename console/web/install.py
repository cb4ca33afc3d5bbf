"""Adds the dashboard to the API's FastAPI app: its routers, /static, the redirect to the sign-in
page, and the sampler behind the Overview's charts (started and stopped by the API's lifespan)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from console.api.context import ApiContext
from console.web import routes_auth, routes_config, routes_overview, routes_plugins, routes_recovery, routes_runs
from console.web.auth import LoginRequired, on_login_required
from console.web.render import STATIC
from console.web.sampler import Sampler


def install(app: FastAPI) -> None:
    ctx: ApiContext = app.state.ctx
    app.state.sampler = Sampler(ctx.config, ctx.redis)
    app.add_exception_handler(LoginRequired, on_login_required)
    for module in (routes_auth, routes_overview, routes_runs, routes_plugins, routes_config, routes_recovery):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
