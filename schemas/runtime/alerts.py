"""Alerts: failures, dead letters, long runs, reader lag, components down, schedule slots skipped ->
the configured channels (alert_channels.py: JSON webhook, Slack, DingTalk, Feishu/Lark, email).

Raising an alert only puts it on a bounded in-memory queue (never blocks the runner's hot path; a
full queue drops and counts). One background thread rate-limits and sends. Per (kind, subject),
e.g. (failure, plugin X), the first `max_per_window` alerts of a window go out one by one; the
rest are counted and sent as one summary when the window ends ("37 failures of plugin X in the
last 60 s"). While a storm goes on, each following window sends only its summary.

Webhook URLs are secrets (they often embed a token): never logged, only their host.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from schemas.runtime.alert_channels import Sender, senders_from
from schemas.settings import AlertSettings

log = logging.getLogger("cdcflow.alerts")

AlertKind = Literal["failure", "dead_letter", "long_run", "reader_lag", "component_down", "schedule_skipped"]
QUEUE_SIZE = 10_000

_NOUNS: dict[str, str] = {
    "failure": "failures of plugin {subject}",
    "dead_letter": "dead letters of plugin {subject}",
    "long_run": "long runs of plugin {subject}",
    "reader_lag": "lag alerts of reader {subject}",
    "component_down": "down alerts of {subject}",
    "schedule_skipped": "skipped slots of schedule {subject}",
}


@dataclass
class Alert:
    kind: AlertKind
    subject: str  # the plugin, or the reader's name
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)


@dataclass
class _Window:
    started: float
    budget: int  # individual messages still allowed in this window
    total: int = 0
    suppressed: int = 0
    last: Alert | None = None


class RateLimiter:
    """Pure bookkeeping (no I/O, the clock is passed in), so it is tested without sleeping."""

    def __init__(self, window_seconds: float, max_per_window: int):
        self.window = window_seconds
        self.max_per_window = max_per_window
        self._windows: dict[tuple[str, str], _Window] = {}

    def offer(self, alert: Alert, now: float) -> bool:
        """True: send this alert now; False: it is counted into the window's summary."""
        key = (alert.kind, alert.subject)
        w = self._windows.get(key)
        if w is None:
            w = self._windows[key] = _Window(started=now, budget=self.max_per_window)
        w.total += 1
        w.last = alert
        if w.budget > 0:
            w.budget -= 1
            return True
        w.suppressed += 1
        return False

    def due(self, now: float) -> list[tuple[tuple[str, str], _Window]]:
        """Windows that ended with suppressed alerts (to summarise). A storm's next window starts
        with no individual budget, so an ongoing storm sends one summary per window."""
        out = []
        for key, w in list(self._windows.items()):
            if now - w.started < self.window:
                continue
            if w.suppressed:
                out.append((key, w))
                self._windows[key] = _Window(started=now, budget=0)
            else:
                del self._windows[key]
        return out

    def flush(self) -> list[tuple[tuple[str, str], _Window]]:
        out = [(k, w) for k, w in self._windows.items() if w.suppressed]
        self._windows.clear()
        return out


def summary_payload(key: tuple[str, str], w: _Window, window_seconds: float, component: str) -> dict[str, Any]:
    kind, subject = key
    noun = _NOUNS.get(kind, kind + " alerts of {subject}").format(subject=subject)
    message = f"{w.total} {noun} in the last {window_seconds:g} s"
    if w.last is not None:
        message += f"; latest: {w.last.message}"
    return {
        "kind": kind,
        "subject": subject,
        "summary": True,
        "count": w.total,
        "not_sent_individually": w.suppressed,
        "window_seconds": window_seconds,
        "message": message,
        "component": component,
        "host": socket.gethostname(),
        "at": _iso(time.time()),
        "details": w.last.details if w.last else {},
    }


def alert_payload(alert: Alert, component: str) -> dict[str, Any]:
    return {
        "kind": alert.kind,
        "subject": alert.subject,
        "summary": False,
        "count": 1,
        "message": alert.message,
        "component": component,
        "host": socket.gethostname(),
        "at": _iso(alert.at),
        "details": alert.details,
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


# -- the alerter -----------------------------------------------------------------------------------
class Alerter:
    def __init__(self, settings: AlertSettings, component: str, senders: list[Sender] | None = None):
        self.settings = settings
        self.component = component
        self.senders = senders if senders is not None else senders_from(settings)
        self.limiter = RateLimiter(settings.window_seconds, settings.max_per_window)
        self._queue: queue.Queue[Alert | None] = queue.Queue(QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        self.dropped = 0
        self.sent = 0

    @property
    def enabled(self) -> bool:
        return bool(self.senders)

    def start(self) -> Alerter:
        if self.enabled and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"{self.component}-alerts", daemon=True)
            self._thread.start()
        return self

    def alert(self, kind: AlertKind, subject: str, message: str, **details: Any) -> None:
        """Never blocks: a full queue drops the alert (and counts it)."""
        if self._thread is None:
            return
        try:
            self._queue.put_nowait(Alert(kind, subject, message, details))
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued and the pending summaries, then stop."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        self._thread = None

    def _loop(self) -> None:
        while True:
            try:
                alert = self._queue.get(timeout=0.2)
            except queue.Empty:
                alert = False  # type: ignore[assignment]  # "nothing came": the queue holds alerts and None only
            now = time.monotonic()
            if alert is None:
                for key, w in self.limiter.flush():
                    self._send(summary_payload(key, w, self.settings.window_seconds, self.component))
                return
            if alert and self.limiter.offer(alert, now):
                self._send(alert_payload(alert, self.component))
            for key, w in self.limiter.due(now):
                self._send(summary_payload(key, w, self.settings.window_seconds, self.component))

    def _send(self, payload: dict[str, Any]) -> None:
        for send in self.senders:
            try:
                send(payload)
                self.sent += 1
            except Exception as e:  # an alert channel down must not take the component with it
                log.warning(
                    "alert not delivered by %s: %s: %s",
                    getattr(send, "__name__", "sender"),
                    type(e).__name__,
                    _without_url(str(e)),
                )


def _without_url(text: str) -> str:
    # urllib errors may quote the URL, which may hold a token
    return " ".join("<url>" if "://" in word else word for word in text.split())
