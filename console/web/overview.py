"""What the Overview shows, read in a few Redis round trips (Kafka's consumer lag comes from the
sampler's last reading, never from a page request), and what is wrong with it, said in words: a
component down or missing, a reader error or lag, consumer lag growing, failed runs, a plugin that
failed to load."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from cdc.status import status_key
from console.api.context import ApiContext
from console.status_report import component_views, expected_kinds
from console.web.sampler import Sampler
from plugins.state import PluginStates
from plugins.store import RunStore
from schemas.result import Result

RECENT_SECONDS = 15 * 60
READER_LAG_WARN_MS = 60_000


@dataclass
class Finding:
    level: str  # "problem" or "warning"
    text: str


@dataclass
class Overview:
    components: list[dict[str, Any]]
    missing: list[str]
    reader: dict[str, Any] | None
    lag: list[dict[str, Any]]
    lag_read_at: float | None
    plugins: dict[str, dict[str, Any]]
    failures: list[Result]
    failures_15min: int
    findings: list[Finding] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return not any(f.level == "problem" for f in self.findings)


def gather_overview(ctx: ApiContext, sampler: Sampler) -> Overview:
    settings = ctx.config.settings
    prefix = settings.redis.key_prefix
    at_ms = int(time.time() * 1000)
    components = component_views(sampler.components(), settings, at_ms)
    expected = expected_kinds(ctx.config)
    raw_reader = cast(bytes | None, ctx.redis.get(status_key(settings)))
    store = RunStore(settings, client=ctx.redis)
    failures = sorted(
        store.list(status="failed", limit=5) + store.list(status="timeout", limit=5),
        key=lambda r: r.finished_at,
        reverse=True,
    )[:5]
    since = time.time() - RECENT_SECONDS
    pipe = ctx.redis.pipeline(transaction=False)
    for status in ("failed", "timeout"):
        pipe.zcount(store.index_key(status=status), repr(since), "+inf")
    lag = sampler.lag
    view = Overview(
        components=components,
        missing=[k for k in expected if k not in {c["kind"] for c in components}],
        reader=orjson.loads(raw_reader) if raw_reader else None,
        lag=[{**row, "growing": lag.growing(row["group"], row["topic"])} for row in lag.rows],
        lag_read_at=lag.read_at,
        plugins=PluginStates(ctx.redis, prefix).all(),
        failures=failures,
        failures_15min=sum(cast(list[int], pipe.execute())),
    )
    view.findings = findings(view, lag.problem)
    return view


def findings(view: Overview, lag_problem: str | None) -> list[Finding]:
    out = [Finding("problem", f"{kind}: no instance has reported (not started?)") for kind in view.missing]
    for c in view.components:
        if c["liveness"] == "down":
            silent = f"no heartbeat for {c['heartbeat_age_s']:.0f}s"
            out.append(Finding("problem", f"{c['kind']} {c['instance']} is DOWN: {silent}"))
        elif c["liveness"] == "up" and c["state"] != "ready":
            out.append(Finding("warning", f"{c['kind']} {c['instance']} is {c['state']}: {c.get('reason') or '?'}"))
    out += _reader_findings(view.reader)
    for row in view.lag:
        if row["growing"]:
            before, now = row["growing"]
            out.append(
                Finding("warning", f"consumer lag of {row['group']} on {row['topic']} is growing: {before} -> {now}")
            )
    if lag_problem:
        out.append(Finding("warning", lag_problem))
    if view.failures_15min:
        text = f"{view.failures_15min} failed run(s) in the last 15 minutes"
        if view.failures:
            last = view.failures[0]
            text += f"; last: {last.plugin} {last.status}" + (f" ({last.error.type})" if last.error else "")
        out.append(Finding("problem", text))
    for name, state in sorted(view.plugins.items()):
        if state.get("state") == "failed" or state.get("last_error"):
            error = str(state.get("last_error") or "").splitlines()[:1]
            out.append(Finding("warning", f"plugin {name} {state.get('state')}: {error[0] if error else 'no detail'}"))
    return out


def _reader_findings(reader: dict[str, Any] | None) -> list[Finding]:
    if not reader:
        return []
    out = []
    if reader.get("last_error"):
        out.append(Finding("warning", f"reader {reader.get('name')}: last error: {reader['last_error']}"))
    lag_ms = reader.get("lag_ms")
    if isinstance(lag_ms, int | float) and lag_ms > READER_LAG_WARN_MS:
        out.append(Finding("warning", f"reader {reader.get('name')} is {lag_ms / 1000:.0f}s behind the binlog"))
    return out
