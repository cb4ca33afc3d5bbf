"""The HTTP API's FastAPI application: routers, error handling, limits, metrics and the audit trail.

Middleware order matters: the body limit refuses an oversized request before anything reads it;
the outer layer times every request and, for mutating calls, writes the audit entry with the
status the client actually got (so refused and failed calls are recorded too).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis
from confluent_kafka import KafkaException
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console.api import routes_ops, routes_plugins, routes_replays, routes_rules, routes_runs
from console.api.context import ApiContext
from console.api.docs import install_docs
from console.api.events import EventHub
from console.api.observe import Observe
from console.api.problems import (
    ApiProblem,
    Problem,
    on_api_problem,
    on_http_error,
    on_validation_error,
    problem_response,
)
from console.api.replays import Replays
from console.web.install import install as install_dashboard
from schemas.config import Config
from schemas.runtime.observability import ComponentObservability

log = logging.getLogger(__name__)


def create_app(config: Config, ctx: ApiContext | None = None) -> FastAPI:
    app = FastAPI(
        lifespan=_lifespan,
        docs_url=None,  # served by console/api/docs.py from vendored assets, not a CDN
        redoc_url=None,
        title="cdcflow API",
        version="1",
        description="Trigger plugins, read runs, steer schedules, dead letters and replays. "
        "Every call needs `Authorization: Bearer <token>` (`cdcflow api token create`).",
    )
    app.state.ctx = ctx or ApiContext.create(config)
    app.state.events = EventHub(config)
    app.state.replays = Replays(config, app.state.ctx.redis)
    _install_errors(app)
    install_docs(app)
    for router in (routes_ops, routes_plugins, routes_runs, routes_rules, routes_replays):
        app.include_router(router.router)
    install_dashboard(app)  # the web dashboard at / (console/web)
    app.add_middleware(Observe)
    api = config.settings.api
    if api.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=api.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyLimit, max_bytes=api.max_body_bytes)
    return app


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The event hub's thread, the dashboard's chart sampler and the heartbeat (kind `api`) live as long
    as the server."""
    ctx: ApiContext = app.state.ctx
    obs = ComponentObservability("api", ctx.config.settings, port=0).start()
    app.state.events.start()
    app.state.sampler.start()
    try:
        yield
    finally:
        app.state.sampler.stop()
        app.state.events.stop()
        obs.stop()


def _install_errors(app: FastAPI) -> None:
    app.add_exception_handler(ApiProblem, on_api_problem)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    # unreachable or timing out: a 503; any other Redis error is a bug of ours, and stays a 500
    app.add_exception_handler(redis.ConnectionError, _redis_down)
    app.add_exception_handler(redis.TimeoutError, _redis_down)
    app.add_exception_handler(KafkaException, _kafka_down)


async def _redis_down(request: Request, exc: Exception) -> Response:
    # the log says what happened (secrets are masked in every log line); the client learns which
    # service failed, not how to reach it (the error text may carry the URL)
    log.warning("%s %s: Redis: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return problem_response(
        Problem(title="Service unavailable", status=503, detail=f"Redis is unreachable ({type(exc).__name__})")
    )


async def _kafka_down(request: Request, exc: Exception) -> Response:
    log.warning("%s %s: Kafka: %s", request.method, request.url.path, exc)
    return problem_response(Problem(title="Service unavailable", status=503, detail=f"Kafka: {exc}"))


class BodyLimit:
    """Refuses a request body over `max_bytes` (413), by its Content-Length or as it streams in."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise ApiProblem(413, "Payload too large", f"the request body is over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = Problem(
            title="Payload too large", status=413, detail=f"the request body is over {self.max_bytes} bytes"
        )
        await problem_response(problem)(scope, receive, send)
