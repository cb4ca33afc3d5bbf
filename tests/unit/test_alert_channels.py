"""Alert channels: each chat tool's documented webhook format, checked at a real local receiver,
signatures recomputed the way DingTalk and Feishu check them, and config errors that name the place."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from pydantic import ValidationError

from schemas.runtime.alerts import Alerter
from schemas.settings import AlertSettings
from tests.support.receivers import SmtpReceiver, WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver()
    yield r
    r.close()


def send_one(channels: list[dict[str, Any]], receiver: WebhookReceiver | None = None) -> Alerter:
    alerter = Alerter(AlertSettings.model_validate({"channels": channels}), "runner").start()
    alerter.alert("failure", "etl", "plugin etl invocation inv-1 failed: Boom", invocation_id="inv-1")
    alerter.close()  # sends what is queued before it returns
    if receiver is not None:
        assert len(receiver.bodies) == 1, receiver.bodies
    return alerter


def test_slack_gets_text_and_blocks(receiver: WebhookReceiver) -> None:
    send_one([{"type": "slack", "webhook_url": receiver.url}], receiver)
    (body,) = receiver.bodies
    assert set(body) == {"text", "blocks"}
    assert body["text"].startswith("[cdcflow] failure: etl\nplugin etl invocation inv-1 failed")
    section, context = body["blocks"]
    assert section["type"] == "section" and section["text"]["type"] == "mrkdwn"
    assert "*[cdcflow] failure: etl*" in section["text"]["text"]
    assert context["type"] == "context" and "runner on " in context["elements"][0]["text"]


def test_dingtalk_markdown_signed_in_the_query(receiver: WebhookReceiver) -> None:
    secret = "SECabc123"
    send_one([{"type": "dingtalk", "webhook_url": receiver.url + "?access_token=tok", "secret": secret}], receiver)
    (body,) = receiver.bodies
    assert body["msgtype"] == "markdown"
    assert body["markdown"]["title"] == "[cdcflow] failure: etl"
    assert "plugin etl invocation inv-1 failed" in body["markdown"]["text"]
    query = parse_qs(urlsplit(receiver.paths[0]).query)
    assert query["access_token"] == ["tok"]
    timestamp = query["timestamp"][0]
    expected = base64.b64encode(hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest())
    assert query["sign"][0] == expected.decode()  # parse_qs undid the URL encoding


def test_feishu_post_signed_in_the_body(receiver: WebhookReceiver) -> None:
    secret = "feishu-secret"
    send_one([{"type": "feishu", "webhook_url": receiver.url, "secret": secret}], receiver)
    (body,) = receiver.bodies
    assert body["msg_type"] == "post"
    post = body["content"]["post"]["zh_cn"]
    assert post["title"] == "[cdcflow] failure: etl"
    assert post["content"][0] == [{"tag": "text", "text": "plugin etl invocation inv-1 failed: Boom"}]
    key = f"{body['timestamp']}\n{secret}".encode()
    assert body["sign"] == base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()


def test_unsigned_chat_channels_carry_no_signature(receiver: WebhookReceiver) -> None:
    send_one([{"type": "lark", "webhook_url": receiver.url}], receiver)
    assert "sign" not in receiver.bodies[0] and "timestamp" not in receiver.bodies[0]


def test_generic_webhook_gets_the_alert_itself(receiver: WebhookReceiver) -> None:
    send_one([{"type": "webhook", "url": receiver.url}], receiver)
    (body,) = receiver.bodies
    assert body["kind"] == "failure" and body["subject"] == "etl" and body["details"] == {"invocation_id": "inv-1"}


def test_every_channel_gets_each_alert_email_included(receiver: WebhookReceiver) -> None:
    smtp = SmtpReceiver()
    try:
        channels = [
            {"type": "slack", "webhook_url": receiver.url},
            {"type": "webhook", "url": receiver.url},
            {"type": "email", "host": "127.0.0.1", "port": smtp.port, "to": ["oncall@test"]},
        ]
        alerter = send_one(channels)
        assert alerter.sent == 3 and len(receiver.bodies) == 2 and len(smtp.messages) == 1
    finally:
        smtp.close()


def test_a_failing_channel_logs_its_type_and_host_never_its_url_or_secret(caplog: pytest.LogCaptureFixture) -> None:
    url = "http://127.0.0.1:9/robot/send?access_token=t0ken-s3cr3t"  # port 9: connection refused
    with caplog.at_level(logging.WARNING, logger="cdcflow.alerts"):
        send_one([{"type": "dingtalk", "webhook_url": url, "secret": "SECsigning"}])
    assert "alert not delivered by dingtalk webhook to 127.0.0.1" in caplog.text
    assert "t0ken" not in caplog.text and "SECsigning" not in caplog.text


@pytest.mark.parametrize(
    ("channel", "where"),
    [
        ({"type": "slack", "webhook_url": "hooks.slack.com/x"}, "channels.0.slack.webhook_url"),
        ({"type": "teams", "webhook_url": "https://x"}, "channels.0"),
        ({"type": "dingtalk"}, "channels.0.dingtalk.webhook_url"),
        ({"type": "email", "host": "smtp"}, "channels.0.email.to"),
    ],
)
def test_bad_channels_are_refused_naming_the_field(channel: dict[str, Any], where: str) -> None:
    with pytest.raises(ValidationError) as caught:
        AlertSettings.model_validate({"channels": [channel]})
    locations = [".".join(str(p) for p in e["loc"]) for e in caught.value.errors()]
    assert where in locations, locations
    assert "hooks.slack.com" not in str([e["msg"] for e in caught.value.errors()])
