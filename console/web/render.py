"""Server-rendered pages: one Jinja2 environment over console/web/templates, autoescaped, with the
few filters the templates share (times, ages, durations, JSON), and `page()` which renders a template
with what every page needs (who is signed in, the CSRF token, the navigation)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from console.web.session import CSRF_FIELD, CSRF_HEADER, SignedIn

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
# part of every static URL, so a new release's assets are never taken from a browser's cache
ASSET_VERSION = "1"
NAV = (
    ("overview", "/", "Overview"),
    ("runs", "/runs", "Runs"),
    ("plugins", "/plugins", "Plugins"),
    ("schedules", "/schedules", "Schedules"),
    ("rules", "/rules", "Rules"),
    ("dlq", "/dlq", "Dead letters"),
    ("replays", "/replays", "Replays"),
)


def when(value: Any) -> str:
    """An epoch (s or ms), datetime or ISO text as `YYYY-MM-DD HH:MM:SS` UTC; '-' for nothing."""
    if value in (None, ""):
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value / 1000 if value > 1e11 else value, UTC)
    if not isinstance(value, datetime):
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def ago(seconds: float | None) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s ago" if seconds >= 10 else f"{seconds:.1f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def since_epoch(epoch: float | None) -> str:
    """How long ago an epoch (seconds or milliseconds) was."""
    if not isinstance(epoch, int | float) or not epoch:
        return "-"
    return ago(time.time() - (epoch / 1000 if epoch > 1e11 else epoch))


def duration(ms: float | None) -> str:
    if not isinstance(ms, int | float):
        return "-"
    if ms < 1:
        return f"{ms:.2f} ms"
    return f"{ms:.1f} ms" if ms < 1000 else f"{ms / 1000:.2f} s"


def as_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS, default=str).decode()


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=when, ago=ago, since_epoch=since_epoch, duration=duration, json=as_json)
    env.globals.update(nav=NAV, asset_version=ASSET_VERSION, csrf_field=CSRF_FIELD, csrf_header=CSRF_HEADER)
    return env


ENV = _environment()


def render(name: str, **values: Any) -> str:
    html: str = ENV.get_template(name).render(**values)
    return html


def page(
    request: Request, name: str, who: SignedIn | None, section: str, status: int = 200, **values: Any
) -> HTMLResponse:
    """A whole page: `values` plus who is signed in, the CSRF token and the current section."""
    principal = who.principal if who else None
    html = render(
        name,
        request=request,
        section=section,
        principal=principal,
        csrf=who.session.csrf if who else "",
        is_admin=bool(principal and principal.may("admin")),
        may_trigger=bool(principal and principal.may("trigger")),
        **values,
    )
    return HTMLResponse(html, status_code=status, headers=NO_STORE)


def fragment(name: str, **values: Any) -> HTMLResponse:
    return HTMLResponse(render(name, **values), headers=NO_STORE)


# pages show live data and whom they belong to: no cache may keep them. Every script and style is a
# file of ours (no inline script), so the policy allows only this origin.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
NO_STORE = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": CSP,
}
