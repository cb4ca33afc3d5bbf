"""Alerts: rate limiting (pure logic) and delivery to a real local webhook; JSON log lines."""

from __future__ import annotations

import email
import email.policy
import io
import json
import logging
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr

from schemas.runtime.alerts import Alert, Alerter, RateLimiter, summary_payload
from schemas.runtime.log_format import JsonFormatter
from schemas.settings import AlertSettings
from tests.support import wait_for
from tests.support.receivers import SmtpReceiver, WebhookReceiver
from tests.support.results import a_result


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


def test_rate_limiter_sends_a_few_then_one_summary_per_window_while_the_storm_lasts() -> None:
    limiter = RateLimiter(window_seconds=60, max_per_window=2)
    sent = [limiter.offer(Alert("failure", "x", f"m{i}"), now=float(i) / 10) for i in range(37)]
    assert sent[:2] == [True, True] and not any(sent[2:])
    assert limiter.due(now=59.0) == []  # window not over
    ((key, window),) = limiter.due(now=60.5)
    summary = summary_payload(key, window, 60, "runner")
    assert summary["count"] == 37 and summary["not_sent_individually"] == 35
    assert summary["message"].startswith("37 failures of plugin x in the last 60 s")
    # the storm goes on: the next window sends nothing individually, only its summary
    assert limiter.offer(Alert("failure", "x", "again"), now=61.0) is False
    ((_, window2),) = limiter.due(now=121.0)
    assert window2.total == 1
    # another subject has its own budget
    assert limiter.offer(Alert("failure", "y", "other"), now=61.0) is True
    # a quiet window ends the storm: the next alert is sent individually again
    assert limiter.due(now=182.0) == [] and limiter.offer(Alert("failure", "x", "later"), now=183.0) is True


def test_a_failure_storm_reaches_the_webhook_as_two_alerts_and_one_summary(receiver: WebhookReceiver) -> None:
    settings = AlertSettings(webhook_url=SecretStr(receiver.url), window_seconds=1.5, max_per_window=2)
    alerter = Alerter(settings, "runner").start()
    for i in range(37):
        alerter.alert("failure", "etl", f"etl invocation inv-{i} failed: ValueError: boom", invocation_id=f"inv-{i}")
    summaries = wait_for(lambda: [b for b in receiver.bodies if b["summary"]], 10, what="the summary")
    alerter.close()
    singles = [b for b in receiver.bodies if not b["summary"]]
    assert [b["details"]["invocation_id"] for b in singles] == ["inv-0", "inv-1"]
    assert len(summaries) == 1 and summaries[0]["count"] == 37
    assert summaries[0]["message"].startswith("37 failures of plugin etl in the last 1.5 s")
    assert summaries[0]["kind"] == "failure" and summaries[0]["subject"] == "etl"


def test_an_unreachable_webhook_is_logged_without_its_secret_url(caplog: pytest.LogCaptureFixture) -> None:
    url = "http://127.0.0.1:9/hook/s3cr3t-token"  # port 9 (discard): connection refused
    alerter = Alerter(AlertSettings(webhook_url=SecretStr(url), timeout_seconds=1), "runner").start()
    with caplog.at_level(logging.WARNING, logger="cdcflow.alerts"):
        alerter.alert("dead_letter", "etl", "dead")
        alerter.close()
    assert "alert not delivered by webhook to 127.0.0.1" in caplog.text
    assert "s3cr3t" not in caplog.text
    assert "s3cr3t" not in repr(AlertSettings(webhook_url=SecretStr(url)))


def test_alerting_without_a_destination_does_nothing() -> None:
    alerter = Alerter(AlertSettings(), "runner").start()
    alerter.alert("failure", "x", "m")  # no thread, no queue growth, no error
    assert not alerter.enabled and alerter._queue.qsize() == 0
    alerter.close()


def test_json_log_lines_carry_component_and_extra_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter("runner"))
    logger = logging.getLogger("test.jsonlog")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("echo %s failed", "inv-1", extra={"plugin": "echo", "invocation_id": "inv-1"})
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            logger.exception("crashed")
    finally:
        logger.removeHandler(handler)
    first, second = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert first["message"] == "echo inv-1 failed" and first["level"] == "WARNING"
    assert first["component"] == "runner" and first["logger"] == "test.jsonlog"
    assert first["plugin"] == "echo" and first["invocation_id"] == "inv-1" and first["time"].endswith("+00:00")
    assert "ValueError: boom" in second["exc_info"] and "plugin" not in second


def test_reader_lag_above_the_threshold_raises_one_alert() -> None:
    from cdc.reader import ReaderStats
    from cdc.reader_ops import ReaderOps
    from tests.support import isolated_settings

    settings = isolated_settings("lag")
    settings.alerts = AlertSettings(reader_lag_ms=1000)
    reader = SimpleNamespace(settings=settings, stats=ReaderStats(), state="running", status=None)
    ops = ReaderOps(reader)  # type: ignore[arg-type]
    got: list[dict[str, Any]] = []
    ops.alerter = Alerter(settings.alerts, "reader", senders=[got.append]).start()
    now = int(time.time() * 1000)
    reader.stats.last_event_ts_ms, reader.stats.last_event_seen_ms = now - 5000, now  # 5 s behind
    ops._check_lag()
    reader.stats.caught_up_at_ms = now + 1  # a heartbeat after the last event: caught up, lag 0
    ops._check_lag()
    ops.alerter.close()
    assert len(got) == 1 and got[0]["kind"] == "reader_lag" and got[0]["subject"] == settings.cdc.name
    assert got[0]["details"]["lag_ms"] >= 5000 and "threshold 1000 ms" in got[0]["message"]


def test_a_run_longer_than_the_threshold_raises_a_long_run_alert() -> None:
    from plugins.runner_ops import RunnerOps
    from tests.support import isolated_settings

    settings = isolated_settings("long")
    settings.alerts = AlertSettings(long_run_seconds=0.5)
    ops = RunnerOps(SimpleNamespace(settings=settings, lanes={}, paused_topics=set(), stop=threading.Event()))  # type: ignore[arg-type]
    got: list[dict[str, Any]] = []
    ops.alerter = Alerter(settings.alerts, "runner", senders=[got.append]).start()
    for iid, ms in (("quick", 100.0), ("slow", 800.0)):
        ops.on_result(a_result(iid, plugin="etl", duration_ms=ms))
    ops.alerter.close()
    assert [(b["kind"], b["details"]["invocation_id"]) for b in got] == [("long_run", "slow")]
    assert "ran 0.8 s (threshold 0.5 s)" in got[0]["message"]
    assert ops.invocations.labels("etl", "success")._value.get() == 2


def test_alerts_go_out_by_email_too() -> None:
    smtp = SmtpReceiver()
    try:
        settings = AlertSettings.model_validate(
            {"smtp": {"host": "127.0.0.1", "port": smtp.port, "sender": "cdcflow@test", "to": ["oncall@test"]}}
        )
        alerter = Alerter(settings, "runner").start()
        alerter.alert(
            "dead_letter", "etl", "plugin etl invocation inv-9 dead-lettered after 3 attempt(s)", invocation_id="inv-9"
        )
        alerter.close()
        assert len(smtp.messages) == 1 and alerter.sent == 1
        mail = email.message_from_string(smtp.messages[0], policy=email.policy.default)
        assert mail["Subject"].strip() == "[cdcflow] plugin etl invocation inv-9 dead-lettered after 3 attempt(s)"
        assert mail["To"] == "oncall@test" and mail["From"] == "cdcflow@test"
        assert json.loads(mail.get_content())["details"] == {"invocation_id": "inv-9"}
    finally:
        smtp.close()
