"""`cdcflow health`'s judgement (pure logic over heartbeat records) and the kinds it expects."""

from __future__ import annotations

from typing import Any

from console.status_report import component_views, expected_kinds, format_report, health
from schemas.config import Config
from schemas.rules import RulesConfig
from schemas.runtime.components import ComponentRecord
from tests.support import isolated_settings

NOW = 1_000_000_000


def record(kind: str, pid: int, state: str = "ready", age_s: float = 0.5, reason: str | None = None) -> ComponentRecord:
    return ComponentRecord(
        kind=kind,
        instance=f"h:{pid}",
        host="h",
        pid=pid,
        state=state,
        reason=reason,  # type: ignore[arg-type]
        started_ms=NOW - 60_000,
        updated_ms=NOW - int(age_s * 1000),
    )


def judge(*records: ComponentRecord, expected: list[str]) -> tuple[bool, list[str]]:
    views: list[dict[str, Any]] = component_views(list(records), isolated_settings("h"), NOW)
    return health(views, expected)


def test_healthy_when_each_expected_kind_has_one_live_ready_instance() -> None:
    ok, lines = judge(
        record("runner", 1), record("runner", 2, age_s=30), record("streams", 3), expected=["streams", "runner"]
    )
    assert ok
    assert "ok    runner: h:1 ready" in lines and "      (also h:2: down, no heartbeat for 30s)" in lines


def test_unhealthy_names_each_reason() -> None:
    ok, lines = judge(
        record("reader", 1, age_s=12),
        record("streams", 2, state="not ready", reason="recovering tables"),
        record("runner", 3, state="stopped", age_s=3),
        expected=["reader", "streams", "runner"],
    )
    assert not ok
    assert lines == [
        "FAIL  reader: h:1 down: no heartbeat for 12s (killed or hung)",
        "FAIL  streams: h:2 not ready: recovering tables",
        "FAIL  runner: h:3 stopped (3s ago)",
    ]
    ok, lines = judge(expected=["runner"])
    assert not ok and lines == ["FAIL  runner: no instance has reported (never started, or gone for over 10 minutes)"]


def test_a_reader_is_expected_only_when_tables_are_read() -> None:
    settings = isolated_settings("h")
    assert expected_kinds(Config(path=None, settings=settings, rules=RulesConfig())) == ["streams", "runner"]
    settings.cdc.include = ["shop.*"]
    assert expected_kinds(Config(path=None, settings=settings, rules=RulesConfig())) == ["reader", "streams", "runner"]


def test_a_stuck_faust_event_loop_fails_liveness_and_readiness() -> None:
    import time

    from streams.worker_ops import StreamsOps

    ops = StreamsOps(Config(path=None, settings=isolated_settings("h"), rules=RulesConfig()))
    assert ops._live() == (True, None) and ops._ready()[0] is False  # not started: alive, not ready
    ops.ticked, ops.readiness = True, (True, None)
    ops.last_tick = time.monotonic()
    assert ops._ready() == (True, None)
    ops.last_tick = time.monotonic() - 20  # no tick for 20 s: an agent blocks the loop
    alive, why = ops._live()
    assert not alive and why is not None and why.startswith("event loop has not turned for 2")
    assert ops._ready() == (False, why)


def test_plugin_states_without_a_live_runner_are_shown_as_history() -> None:
    plugins = {"echo": {"state": "serving", "version": "1.0.0", "loaded_at": NOW / 1000 - 60}}

    def plugins_heading(*records: ComponentRecord) -> str:
        views = component_views(list(records), isolated_settings("h"), NOW)
        report = {"generated_at": "now", "problems": [], "components": views, "plugins": plugins}
        text = format_report(report, ["runner"])
        return next(line for line in text.splitlines() if line.startswith("PLUGINS"))

    assert plugins_heading(record("runner", 1)) == "PLUGINS"
    assert plugins_heading(record("runner", 1, age_s=30)) == "PLUGINS (as the last runner left them: no runner is up)"
    assert plugins_heading() == "PLUGINS (as the last runner left them: no runner is up)"


def test_the_streams_line_says_how_large_and_how_slow_its_recent_transactions_were() -> None:
    streams = record("streams", 3)
    streams.details = {
        "assigned": 2,
        "row_changes": {"assigned": 4, "events": 900, "invocations": 900, "duplicates": 0, "batches": 150}
        | {"recent_batch_events": 6.2, "recent_commit_ms": 5.04},
    }
    views = component_views([streams], isolated_settings("h"), NOW)
    text = format_report({"generated_at": "now", "problems": [], "components": views}, ["streams"])
    assert "0 duplicate(s) dropped; last ~20 transactions: 6.2 change(s) each, offsets + commit 5.0 ms" in text
    del streams.details["row_changes"]["recent_commit_ms"]  # the heartbeat of a worker of an earlier version
    views = component_views([streams], isolated_settings("h"), NOW)
    text = format_report({"generated_at": "now", "problems": [], "components": views}, ["streams"])
    assert "0 duplicate(s) dropped\n" in text + "\n" and "transactions" not in text
