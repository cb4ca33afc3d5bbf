"""Alert channels: one alert payload (alerts.alert_payload/summary_payload) rendered in each chat
tool's documented webhook format, and sent.

- webhook: the payload itself, as JSON (for a team's own receiver).
- Slack incoming webhook: `text` (shown in notifications) and `blocks` (a section and a context line).
- DingTalk custom robot: `msgtype: markdown`; with a signing secret, `timestamp` (ms) and `sign`
  (base64 HMAC-SHA256 of "timestamp\\nsecret" keyed by the secret) are added to the URL's query.
- Feishu/Lark custom bot: `msg_type: post`; with a signing secret, the body carries `timestamp` (s)
  and `sign` (base64 HMAC-SHA256 keyed by "timestamp\\nsecret" over nothing), as their docs say.
- email: the payload as indented JSON, the message as the subject.

Webhook URLs and secrets are secrets: a sender's name (what a failed delivery logs) shows only the
channel type and host.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import smtplib
import time
import urllib.request
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote_plus, urlsplit

from schemas.settings import (
    AlertSettings,
    DingTalkChannel,
    EmailChannel,
    FeishuChannel,
    SlackChannel,
    WebhookChannel,
)

Sender = Callable[[dict[str, Any]], None]
Channel = WebhookChannel | SlackChannel | DingTalkChannel | FeishuChannel | EmailChannel


def title(payload: dict[str, Any]) -> str:
    kind = str(payload["kind"]).replace("_", " ")
    return f"[cdcflow] {kind}: {payload['subject']}" + (" (summary)" if payload.get("summary") else "")


def context_line(payload: dict[str, Any]) -> str:
    return f"{payload['component']} on {payload['host']} at {payload['at']}"


def slack_body(payload: dict[str, Any]) -> dict[str, Any]:
    text = f"{title(payload)}\n{payload['message']}"
    return {
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{title(payload)}*\n{payload['message']}"}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": context_line(payload)}]},
        ],
    }


def dingtalk_body(payload: dict[str, Any]) -> dict[str, Any]:
    text = f"#### {title(payload)}\n\n{payload['message']}\n\n> {context_line(payload)}"
    return {"msgtype": "markdown", "markdown": {"title": title(payload), "text": text}}


def dingtalk_signed_url(url: str, secret: str, timestamp_ms: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    separator = "&" if urlsplit(url).query else "?"
    return f"{url}{separator}timestamp={timestamp_ms}&sign={quote_plus(base64.b64encode(digest).decode())}"


def feishu_body(payload: dict[str, Any], secret: str | None, timestamp_s: int) -> dict[str, Any]:
    lines = [[{"tag": "text", "text": payload["message"]}], [{"tag": "text", "text": context_line(payload)}]]
    post = {"zh_cn": {"title": title(payload), "content": lines}}
    body: dict[str, Any] = {"msg_type": "post", "content": {"post": post}}
    if secret:
        key = f"{timestamp_s}\n{secret}".encode()
        body["timestamp"] = str(timestamp_s)
        body["sign"] = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    return body


def post_json(url: str, body: dict[str, Any], timeout: float) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(body, default=str, ensure_ascii=False).encode(),
        method="POST",
        headers={"Content-Type": "application/json; charset=utf-8", "User-Agent": "cdcflow-alerts"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (URL from config)
        response.read()


def webhook_sender(channel: Channel, timeout: float) -> Sender:
    assert not isinstance(channel, EmailChannel)
    url = (channel.url if isinstance(channel, WebhookChannel) else channel.webhook_url).get_secret_value()
    secret = getattr(channel, "secret", None)
    secret_text = secret.get_secret_value() if secret is not None else None

    def send(payload: dict[str, Any]) -> None:
        if isinstance(channel, SlackChannel):
            post_json(url, slack_body(payload), timeout)
        elif isinstance(channel, DingTalkChannel):
            target = dingtalk_signed_url(url, secret_text, int(time.time() * 1000)) if secret_text else url
            post_json(target, dingtalk_body(payload), timeout)
        elif isinstance(channel, FeishuChannel):
            post_json(url, feishu_body(payload, secret_text, int(time.time())), timeout)
        else:
            post_json(url, payload, timeout)

    kind = "" if isinstance(channel, WebhookChannel) else f"{channel.type} "
    send.__name__ = f"{kind}webhook to {urlsplit(url).hostname or '?'}"  # what a failure log may name
    return send


def email_sender(channel: EmailChannel, timeout: float) -> Sender:
    def send(payload: dict[str, Any]) -> None:
        msg = EmailMessage()
        msg["Subject"] = f"[cdcflow] {payload['message'][:150]}"
        msg["From"] = channel.sender
        msg["To"] = ", ".join(channel.to)
        msg.set_content(json.dumps(payload, indent=2, default=str, ensure_ascii=False))
        client_cls = smtplib.SMTP_SSL if channel.ssl else smtplib.SMTP
        with client_cls(channel.host, channel.port, timeout=timeout) as client:
            if channel.starttls:
                client.starttls()
            if channel.username:
                client.login(channel.username, channel.password.get_secret_value() if channel.password else "")
            client.send_message(msg)

    send.__name__ = f"email via {channel.host}:{channel.port}"
    return send


def senders_from(settings: AlertSettings) -> list[Sender]:
    return [
        email_sender(c, settings.timeout_seconds)
        if isinstance(c, EmailChannel)
        else webhook_sender(c, settings.timeout_seconds)
        for c in settings.all_channels()
    ]
