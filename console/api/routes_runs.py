"""Run history, one invocation's status, and dead letters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from console.api.context import ApiContext, context, require
from console.api.problems import ERROR_RESPONSES, ApiProblem, FieldProblem, problem_doc
from console.api.tokens import Principal
from plugins import dlq
from plugins.cancel import CancelError, CancelOutcome, Cancels, cancel_with
from plugins.dlq import dead_letters_to_replay
from plugins.listing import labelled_plugins
from plugins.registry import NotFoundError
from plugins.run_query import CURSOR_PATTERN, BadCursor, RunFilter, query_runs
from plugins.store import RunStore
from schemas.result import Result, RunStatus

router = APIRouter(tags=["runs"], responses=ERROR_RESPONSES)
Reader = Annotated[Principal, Depends(require("read"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Ctx = Annotated[ApiContext, Depends(context)]
TriggerKind = Literal["cdc", "schedule", "manual", "replay", "retry"]
Name = Annotated[str, Query(min_length=1, max_length=200)]
Cursor = Annotated[str, Query(max_length=500, pattern=CURSOR_PATTERN)]


class RunPageOut(BaseModel):
    runs: list[Result]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null at the end")


class RunDetail(BaseModel):
    result: Result
    attempts: list[dict[str, Any]] = Field(description="summaries of the failed attempts before this result")


class InvocationStatus(BaseModel):
    invocation_id: str
    status: RunStatus
    result: Result | None = Field(
        default=None, description="the result; while pending or running once a runner has it, the run's state"
    )


class CancelOut(BaseModel):
    invocation_id: str
    was: str | None = Field(
        description="pending, running, waiting for its retry; null: no runner has reported it yet "
        "(one that took it in the last 0.5 s has not written its state)"
    )
    requested_at: datetime
    requested_by: str
    result: Result | None = Field(description="the `cancelled` result; null: recorded when a runner receives it")

    @classmethod
    def of(cls, outcome: CancelOutcome) -> CancelOut:
        mark = outcome.mark
        at = datetime.fromtimestamp(mark.at, UTC)
        return cls(
            invocation_id=mark.invocation_id,
            was=outcome.was,
            requested_at=at,
            requested_by=mark.by,
            result=outcome.result,
        )


def run_store(ctx: ApiContext) -> RunStore:
    return RunStore(ctx.config.settings, client=ctx.redis)


@router.get("/api/runs", response_model=RunPageOut)
def list_runs(
    _: Reader,
    ctx: Ctx,
    plugin: Name | None = None,
    status: RunStatus | None = None,
    trigger_kind: TriggerKind | None = None,
    rule: Name | None = None,
    schedule: Name | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    category: Annotated[str | None, Query(max_length=64, description="runs of plugins in this category")] = None,
    tag: Annotated[
        list[str] | None, Query(max_length=20, description="runs of plugins with this tag (repeatable: any of them)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Cursor | None = None,
) -> Response:
    """Newest first. Pages are stable: runs that finish while you page do not shift them. `category` and
    `tag` select by the plugins' current plugin.json labels, as `cdcflow runs list --category/--tag`."""
    if since and until and since > until:
        raise ApiProblem(
            422, "Invalid request", "since is after until", [FieldProblem(field="since", message="after until")]
        )
    where = RunFilter(
        plugin,
        status,
        trigger_kind,
        rule,
        schedule,
        since.timestamp() if since else None,
        until.timestamp() if until else None,
        plugins=labelled_plugins(ctx.config.settings, category, tag or ()),
    )
    try:
        page = query_runs(run_store(ctx), where, limit, cursor)
    except BadCursor as e:
        raise ApiProblem(422, "Invalid request", str(e), [FieldProblem(field="cursor", message=str(e))]) from None
    # the stored runs are sent as they are (they were validated as Results when recorded)
    return Response(page.json(), media_type="application/json")


@router.get("/api/runs/{invocation_id}", response_model=RunDetail)
def get_run(_: Reader, ctx: Ctx, invocation_id: str) -> RunDetail:
    """One run: params, output, error and traceback, timings, the trigger that caused it, failed attempts;
    while it is `pending` or `running`, its state (with host and worker pid)."""
    store = run_store(ctx)
    result = store.current(invocation_id)
    if result is None:
        raise ApiProblem(404, "Not found", f"no recorded run {invocation_id!r} (pending, unknown or expired)")
    return RunDetail(result=result, attempts=store.attempts(invocation_id))


@router.get("/api/invocations/{invocation_id}", response_model=InvocationStatus)
def get_invocation(_: Reader, ctx: Ctx, invocation_id: str) -> InvocationStatus:
    """`pending` until a result is recorded (`running` while a worker runs it), then the result's status and
    the result."""
    result = run_store(ctx).current(invocation_id)
    if result is None:
        return InvocationStatus(invocation_id=invocation_id, status="pending")
    return InvocationStatus(invocation_id=invocation_id, status=result.status, result=result)


@router.post(
    "/api/runs/{invocation_id}/cancel",
    response_model=CancelOut,
    responses={409: problem_doc("the invocation already finished")},
)
def cancel_run(principal: Admin, ctx: Ctx, invocation_id: str, request: Request) -> CancelOut:
    """Cancel a pending, delayed or running invocation (`cdcflow runs cancel`): it never runs, or its worker
    is stopped; its result is `cancelled`. 409 if it already finished."""
    if not invocation_id.strip():  # bad input, not a conflict with the run's state
        problem = FieldProblem(field="invocation_id", message="blank")
        raise ApiProblem(422, "Invalid request", "invocation_id: blank", [problem])
    store = run_store(ctx)
    cancels = Cancels(ctx.redis, store.prefix, store.ttl)
    try:
        outcome = cancel_with(store, cancels, invocation_id, f"api:{principal.name}")
    except CancelError as e:
        raise ApiProblem(409, "Conflict", str(e)) from None
    request.state.audit_detail = f"cancelled ({outcome.was or 'not received by a runner yet'})"
    return CancelOut.of(outcome)


class DeadLetterPage(BaseModel):
    entries: list[dict[str, Any]]
    next_cursor: str | None


class DlqReplayIds(BaseModel):
    """These dead letters (of `plugin`, if given)."""

    ids: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(min_length=1, max_length=1000)
    plugin: str | None = Field(default=None, min_length=1, max_length=200)


class DlqReplayPlugin(BaseModel):
    """Every dead letter of the plugin not replayed yet."""

    model_config = ConfigDict(extra="forbid")

    plugin: str = Field(min_length=1, max_length=200)


class DlqReplayed(BaseModel):
    dlq_id: str
    replayed_as: str | None = Field(description="the new invocation id; null: it was replayed before")


@router.get("/api/dlq", response_model=DeadLetterPage, tags=["dead letters"])
def list_dead_letters(
    _: Reader,
    ctx: Ctx,
    plugin: Name | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=200, description="the last id seen")] = None,
) -> DeadLetterPage:
    """Oldest first, with `replayed` set for those replayed already. The cursor is the last id seen."""
    settings = ctx.config.settings
    entries = dlq.read_entries(settings, plugin)
    if cursor:
        ids = [e["dlq_id"] for e in entries]
        entries = entries[ids.index(cursor) + 1 :] if cursor in ids else []
    page = entries[:limit]
    done = dlq.replayed(run_store(ctx), [e["dlq_id"] for e in page])
    out = [{**e, "replayed": done.get(e["dlq_id"])} for e in page]
    return DeadLetterPage(entries=out, next_cursor=page[-1]["dlq_id"] if len(entries) > limit else None)


@router.post("/api/dlq/replay", response_model=list[DlqReplayed], tags=["dead letters"])
def replay_dead_letters(
    _: Admin, ctx: Ctx, body: DlqReplayIds | DlqReplayPlugin, request: Request
) -> list[DlqReplayed]:
    """Publish dead letters again (new invocation id, trigger kind `replay`); replayed ones are skipped."""
    ids = tuple(body.ids) if isinstance(body, DlqReplayIds) else ()
    try:
        entries = dead_letters_to_replay(ctx.config.settings, ids, body.plugin)
    except NotFoundError as e:
        raise ApiProblem(404, "Not found", str(e)) from None
    request.state.audit_detail = f"{len(entries)} dead letter(s)"
    replayed = dlq.replay(ctx.config.settings, entries) if entries else []
    return [DlqReplayed(dlq_id=e["dlq_id"], replayed_as=inv.invocation_id if inv else None) for e, inv in replayed]
