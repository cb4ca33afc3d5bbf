"""Replays: start one (source, range, filters, target, dry run), watch its progress, stop it."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from console.api.context import ApiContext, context, require
from console.api.problems import ERROR_RESPONSES, ApiProblem, FieldProblem
from console.api.replays import ReplayProgress, Replays
from console.api.tokens import Principal
from streams.event_filter import EventFilter, FilterError
from streams.replay import ReplayError, ReplayRequest, ReplayUsageError, event_filter, plan_replay
from streams.replay_range import KafkaUnreachable, RangeError, UnknownTopic

router = APIRouter(tags=["replays"], responses=ERROR_RESPONSES)
Reader = Annotated[Principal, Depends(require("read"))]
Admin = Annotated[Principal, Depends(require("admin"))]
Ctx = Annotated[ApiContext, Depends(context)]
Text = Annotated[str, Field(min_length=1, max_length=500)]


class ReplayFilters(BaseModel):
    """As `cdcflow replay`'s options: each list is OR-ed, the kinds AND-ed."""

    tables: list[Text] = Field(default_factory=list, max_length=100)
    ops: list[Text] = Field(default_factory=list, max_length=10)
    plugins: list[Text] = Field(default_factory=list, max_length=100)
    rules: list[Text] = Field(default_factory=list, max_length=100)
    statuses: list[Text] = Field(default_factory=list, max_length=10)
    where: list[Text] = Field(default_factory=list, max_length=50, description="e.g. `after.amount > 100`")


class ReplayStart(BaseModel):
    source: Text = Field(description="a topic, or results, dlq, triggers, invoke:PLUGIN, or a [DB.]TABLE")
    target: Literal["pipeline", "topic"] = "pipeline"
    to_topic: Text | None = None
    from_offsets: list[Text] = Field(default_factory=list, max_length=1000, description="[P:]OFFSET each")
    to_offsets: list[Text] = Field(default_factory=list, max_length=1000)
    since: Text | None = Field(default=None, description="ISO-8601 or relative (2h)")
    until: Text | None = None
    filters: ReplayFilters = Field(default_factory=ReplayFilters)
    rate: float | None = Field(default=None, gt=0, le=1_000_000, description="source messages per second")
    dry_run: bool = False
    replay_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,100}$")] | None = None


def replays(request: Request) -> Replays:
    registry: Replays = request.app.state.replays
    return registry


@router.post("/api/replays", response_model=ReplayProgress, status_code=202)
def start_replay(_: Admin, ctx: Ctx, body: ReplayStart, request: Request) -> ReplayProgress:
    """Plan the replay (range resolved now, fixed for re-runs) and start it; 202 with its id."""
    if (body.target == "topic") != (body.to_topic is not None):
        raise ApiProblem(
            422,
            "Invalid request",
            "to_topic goes with target topic, and only with it",
            [FieldProblem(field="to_topic", message="required with target topic, else not allowed")],
        )
    registry = replays(request)
    try:
        flt = event_filter(ctx.config.settings, **body.filters.model_dump())
        plan = plan_replay(ctx.config, _request(body, flt))
    except UnknownTopic as e:
        raise ApiProblem(404, "Not found", str(e)) from None
    except (FilterError, RangeError, ReplayUsageError) as e:
        raise ApiProblem(422, "Invalid request", str(e)) from None
    except KafkaUnreachable as e:
        raise ApiProblem(503, "Service unavailable", str(e)) from None
    except ReplayError as e:
        raise ApiProblem(409, "Conflict", str(e)) from None
    if registry.running(plan.replay_id):
        raise ApiProblem(409, "Conflict", f"replay {plan.replay_id} is running already")
    request.state.audit_detail = f"replay {plan.replay_id} of {plan.spec.topic}"
    return registry.start(plan)


def _request(body: ReplayStart, flt: EventFilter) -> ReplayRequest:
    return ReplayRequest(
        source=body.source,
        target=body.target,
        filter=flt,
        to_topic=body.to_topic,
        from_offsets=tuple(body.from_offsets),
        to_offsets=tuple(body.to_offsets),
        since=body.since,
        until=body.until,
        rate=body.rate,
        dry_run=body.dry_run,
        replay_id=body.replay_id,
    )


@router.get("/api/replays/{replay_id}", response_model=ReplayProgress)
def get_replay(_: Reader, request: Request, replay_id: str) -> ReplayProgress:
    """Counts so far (scanned of total, selected, sent) and the state: running, finished, failed, stopped."""
    progress = replays(request).get(replay_id)
    if progress is None:
        raise ApiProblem(404, "Not found", f"no replay {replay_id!r} started over the API (or it expired)")
    return progress


@router.delete("/api/replays/{replay_id}", response_model=ReplayProgress, status_code=202)
def stop_replay(_: Admin, request: Request, replay_id: str) -> ReplayProgress:
    """Stop after the batch under way (nothing half-sent); starting the same request again continues it."""
    registry = replays(request)
    progress = registry.get(replay_id)
    if progress is None:
        raise ApiProblem(404, "Not found", f"no replay {replay_id!r} started over the API (or it expired)")
    if not registry.stop(replay_id) and progress.state == "running":
        raise ApiProblem(409, "Conflict", f"replay {replay_id} runs in another API server")
    return progress
