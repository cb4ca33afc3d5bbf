"""Plugins (list, one, reload) and manual invocations (trigger, with an optional wait)."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from console.api.context import ApiContext, context, require
from console.api.problems import ERROR_RESPONSES, ApiProblem, FieldProblem
from console.api.routes_runs import InvocationStatus, run_store
from console.api.tokens import Principal
from plugins.listing import plugin_listing
from plugins.registry import discover
from plugins.state import PluginStates
from plugins.store import RunStore
from schemas.manifest import ParamError, PluginManifest
from schemas.result import Result
from schemas.runtime.components import now_ms, read_records
from streams.due_time import DueTimeError, due_time
from streams.manual_trigger import TriggerError, TriggerSender, submit, trigger_request

router = APIRouter(tags=["plugins"], responses=ERROR_RESPONSES)
Reader = Annotated[Principal, Depends(require("read"))]
Triggerer = Annotated[Principal, Depends(require("trigger"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Ctx = Annotated[ApiContext, Depends(context)]


class PluginOut(BaseModel):
    name: str
    version: str
    code_hash: str
    category: str | None = Field(default=None, description="plugin.json's category")
    tags: list[str] = Field(default_factory=list, description="plugin.json's tags")
    state: str = Field(
        description="serving, building, failed, unhealthy (its environment check failed: last_error says why), "
        "or not served"
    )
    served_version: str | None = None
    served_code_hash: str | None = None
    loaded_at: float | None = None
    last_error: str | None = None
    workers_alive: int = Field(description="worker processes of live runners serving it")
    venv_state: str


class PluginDetail(PluginOut):
    manifest: PluginManifest
    path: str


class PluginsOut(BaseModel):
    plugins: list[PluginOut]
    errors: list[dict[str, str]] = Field(description="plugin folders that are not valid plugins, and why")


class InvocationRequest(BaseModel):
    params: dict[str, Any] = Field(default_factory=dict)
    priority: Literal["low", "normal", "high"] = "normal"
    idempotency_key: str | None = Field(
        default=None, min_length=1, max_length=200, description="the same key gives the same invocation, run once"
    )
    delay_seconds: float | None = Field(
        default=None, description="run it this many seconds from now (at most 30 days); kept until then"
    )
    at: str | None = Field(
        default=None,
        max_length=100,
        description="run it at this ISO-8601 time with a UTC offset (e.g. 2026-12-05T22:00:00+08:00)",
        examples=["2026-12-05T22:00:00Z"],
    )


class ReloadOut(BaseModel):
    plugin: str
    requested_at: float


def _workers_alive(ctx: ApiContext) -> dict[str, int]:
    settings = ctx.config.settings
    at, stale = now_ms(), settings.observability.stale_after_seconds
    alive: dict[str, int] = {}
    for record in read_records(ctx.redis, settings.redis.key_prefix):
        if record.kind == "runner" and record.liveness(at, stale) == "up":
            for name, plugin in (record.details.get("plugins") or {}).items():
                alive[name] = alive.get(name, 0) + int(plugin.get("workers") or 0)
    return alive


def _plugins(ctx: ApiContext) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    settings = ctx.config.settings
    items, errors = plugin_listing(settings, PluginStates(ctx.redis, settings.redis.key_prefix).all())
    alive = _workers_alive(ctx)
    return [{**item, "workers_alive": alive.get(item["name"], 0)} for item in items], errors


@router.get("/api/plugins", response_model=PluginsOut)
def list_plugins(_: Reader, ctx: Ctx) -> PluginsOut:
    """Every plugin in the plugin folders: on disk, as served, workers alive."""
    items, errors = _plugins(ctx)
    return PluginsOut(plugins=[PluginOut.model_validate(i) for i in items], errors=errors)


@router.get("/api/plugins/{name}", response_model=PluginDetail)
def get_plugin(_: Reader, ctx: Ctx, name: str) -> PluginDetail:
    """One plugin with its manifest (parameters, timeout, retries...)."""
    found = discover(ctx.config.settings.runners.plugin_dirs).plugins.get(name)
    item = next((i for i in _plugins(ctx)[0] if i["name"] == name), None)
    if found is None or item is None:
        raise ApiProblem(404, "Not found", f"no plugin {name!r} in the plugin folders")
    return PluginDetail.model_validate({**item, "manifest": found.manifest, "path": str(found.path)})


@router.post("/api/plugins/{name}/reload", response_model=ReloadOut, status_code=202)
def reload_plugin(_: Admin, ctx: Ctx, name: str) -> ReloadOut:
    """Ask every running runner to reload the plugin (new workers on the current code; old ones drain)."""
    if name not in discover(ctx.config.settings.runners.plugin_dirs).plugins:
        raise ApiProblem(404, "Not found", f"no plugin {name!r} in the plugin folders")
    at = PluginStates(ctx.redis, ctx.config.settings.redis.key_prefix).request_reload(name)
    return ReloadOut(plugin=name, requested_at=at)


@router.post("/api/plugins/{name}/invocations", response_model=InvocationStatus, status_code=202)
async def invoke_plugin(
    principal: Triggerer,
    ctx: Ctx,
    name: str,
    body: InvocationRequest,
    request: Request,
    response: Response,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=3600,
            description="seconds to wait for the result (200 when it lands; api.wait_max_seconds at most)",
        ),
    ] = 0,
) -> InvocationStatus:
    """Run the plugin: parameters are checked against plugin.json before anything is published (422
    naming the parameter). 202 with the invocation id; with `wait`, 200 and the result if it lands in time.
    With `delay_seconds` or `at` it runs then (kept in Redis until due: survives restarts)."""
    settings = ctx.config.settings
    plugin = discover(settings.runners.plugin_dirs).plugins.get(name)
    if plugin is None:
        raise ApiProblem(404, "Not found", f"no plugin {name!r} in the plugin folders")
    try:
        plugin.manifest.validate_params(body.params)
    except ParamError as e:
        errors = [FieldProblem(field=f"params.{k}" if k else "params", message=m) for k, m in e.problems]
        raise ApiProblem(422, "Invalid parameters", f"refused, nothing was sent: {e}", errors) from None
    due = _due_at(body)
    key = f"{principal.token_id}:{body.idempotency_key}" if body.idempotency_key else None
    trigger = trigger_request(name, plugin.manifest, body.params, body.priority, f"api:{principal.name}", key, due)
    try:
        sender = _sender(request) if due is None else None
        invocation_id = await asyncio.to_thread(submit, settings, trigger, sender)
    except TriggerError as e:
        raise ApiProblem(503, "Service unavailable", str(e)) from None
    request.state.audit_detail = f"invocation {invocation_id}"
    if wait > 0:
        landed = await _wait_for_result(ctx, invocation_id, min(wait, ctx.config.settings.api.wait_max_seconds))
        if landed is not None:
            response.status_code = 200
            return landed
    return InvocationStatus(invocation_id=invocation_id, status="pending")


def _due_at(body: InvocationRequest) -> datetime | None:
    try:
        return due_time(body.delay_seconds, body.at, datetime.now(UTC), ("delay_seconds", "at"))
    except DueTimeError as e:
        problem = FieldProblem(field=e.field, message=str(e).removeprefix(f"{e.field}: "))
        raise ApiProblem(422, "Invalid time", f"refused, nothing was sent: {e}", [problem]) from None


_sender_lock = threading.Lock()


def _sender(request: Request) -> TriggerSender:
    """The server's one trigger producer, made on the first trigger (startup does not wait for Kafka)."""
    with _sender_lock:
        sender: TriggerSender | None = getattr(request.app.state, "trigger_sender", None)
        if sender is None:
            sender = request.app.state.trigger_sender = TriggerSender(request.app.state.ctx.config.settings)
        return sender


async def _wait_for_result(ctx: ApiContext, invocation_id: str, seconds: float) -> InvocationStatus | None:
    store = run_store(ctx)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = await asyncio.to_thread(_final_result, store, invocation_id)
        if result is not None:
            return InvocationStatus(invocation_id=invocation_id, status=result.status, result=result)
        await asyncio.sleep(0.05)
    return None


def _final_result(store: RunStore, invocation_id: str) -> Result | None:
    """The run's final result (its done marker set), not a failed attempt whose retry is on its way
    (the same as `cdcflow trigger --wait` and `trigger(wait=)` wait for)."""
    return store.get(invocation_id) if store.is_done(invocation_id) else None
