"""Every request timed into /metrics by route template, and every mutating one written to the audit
log with the status the client got (refused and failed calls included).

A plain ASGI middleware, not Starlette's BaseHTTPMiddleware: that one runs each request's app in a
task of its own and copies the response through a stream, which cost ~40% of a small request here.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


class Observe:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            await _record(scope, status, time.perf_counter() - started)


async def _record(scope: Scope, status: int, seconds: float) -> None:
    ctx: Any = scope["app"].state.ctx
    template = getattr(scope.get("route"), "path", "unmatched")
    method = scope["method"]
    ctx.metrics.observe(template, method, status, seconds)
    if method in MUTATING and template.startswith("/api/"):
        state = scope.get("state") or {}
        principal = state.get("principal")
        who = f"{principal.name} ({principal.token_id})" if principal else "anonymous"
        action, detail = f"{method} {template}", state.get("audit_detail", "")
        try:
            await ctx.audit.record_async(ctx.aredis, who, action, scope["path"], status, detail)
        except (redis.ConnectionError, redis.TimeoutError) as e:
            # the response is sent: raising here only makes uvicorn drop the client's connection (the
            # next request on it fails); the log keeps what the audit log could not
            log.warning(
                "audit entry not written (Redis: %s): %s %s by %s: %s",
                type(e).__name__,
                action,
                scope["path"],
                who,
                status,
            )
