"""What every request handler needs, made once per server: the config, one Redis client, the token
store, the audit log, the rate limiter, the metrics; and the `require(scope)` dependency."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

import redis
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from redis.asyncio import Redis as AsyncRedis

from console.api.audit import AuditLog
from console.api.metrics import ApiMetrics
from console.api.problems import ApiProblem
from console.api.rate_limit import RateLimiter
from console.api.tokens import Principal, Scope, TokenStore
from console.web.session import SessionStore
from schemas.config import Config
from schemas.runtime.components import redis_client


@dataclass
class ApiContext:
    config: Config
    redis: redis.Redis
    # for what every request does in the event loop itself (authenticate, audit): waiting for Redis
    # there must not hold up the other requests, as a blocking client would
    aredis: AsyncRedis
    tokens: TokenStore
    audit: AuditLog
    limiter: RateLimiter
    metrics: ApiMetrics = field(default_factory=ApiMetrics)
    started_at: float = field(default_factory=time.time)

    @classmethod
    def create(cls, config: Config) -> ApiContext:
        settings = config.settings
        client = redis_client(settings, timeout=5.0)
        prefix = settings.redis.key_prefix
        api = settings.api
        url = settings.redis.url.get_secret_value()
        return cls(
            config=config,
            redis=client,
            aredis=AsyncRedis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0),
            tokens=TokenStore(client, prefix, api),
            audit=AuditLog(client, prefix),
            limiter=RateLimiter(api.rate_limit_per_second, api.rate_limit_burst),
        )

    @property
    def sessions(self) -> SessionStore:
        """The dashboard's sign-in sessions (console/web/session.py), over the same Redis and tokens."""
        return SessionStore(self.redis, self.config.settings.redis.key_prefix, self.tokens)


async def context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


_bearer = HTTPBearer(auto_error=False, description="a token from `cdcflow api token create`")
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None, ctx: ApiContext
) -> Principal:
    if credentials is None:
        # a dashboard page calling the API: its session cookie (and, to mutate, the CSRF header) instead
        signed_in = ctx.sessions.from_request(request)
        if signed_in is None:
            detail = "an Authorization: Bearer <token> header (or a dashboard session) is required"
            raise ApiProblem(401, "Unauthorized", detail, headers=_CHALLENGE)
        principal: Principal | None = signed_in.principal
    else:
        principal = await ctx.tokens.authenticate_async(credentials.credentials, ctx.aredis)
    if principal is None:
        raise ApiProblem(401, "Unauthorized", "the token is unknown or revoked", headers=_CHALLENGE)
    request.state.principal = principal
    wait = ctx.limiter.take(principal.token_id)
    if wait > 0:
        retry = str(max(1, round(wait + 0.5)))
        raise ApiProblem(
            429, "Too many requests", f"rate limit of token {principal.name!r}", headers={"Retry-After": retry}
        )
    return principal


def require(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the request's principal, which must hold `scope` (or a wider one)."""

    # async (with the asyncio Redis client), so a request neither hops to the thread pool for it nor
    # blocks the event loop while Redis answers
    async def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        ctx: Annotated[ApiContext, Depends(context)],
    ) -> Principal:
        principal = await authenticate(request, credentials, ctx)
        if not principal.may(scope):
            raise ApiProblem(403, "Forbidden", f"token {principal.name!r} lacks the {scope!r} scope")
        return principal

    return dependency
