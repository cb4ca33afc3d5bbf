"""Result records for tests that store or report runs without running a plugin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.result import Result, RunStatus


def a_result(
    invocation_id: str,
    *,
    plugin: str = "echo",
    plugin_version: str = "1",
    status: RunStatus = "success",
    at: datetime | None = None,
    duration_ms: float = 1.0,
    **fields: Any,
) -> Result:
    """A finished run of `plugin`, ending `at` (now) after `duration_ms`; `fields` sets any other
    Result field (output, error, trigger, params...)."""
    finished = at or datetime.now(UTC)
    return Result(
        invocation_id=invocation_id,
        plugin=plugin,
        plugin_version=plugin_version,
        status=status,
        started_at=finished - timedelta(milliseconds=duration_ms),
        finished_at=finished,
        duration_ms=duration_ms,
        **fields,
    )
