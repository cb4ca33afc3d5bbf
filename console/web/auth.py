"""Who is looking at a page: the `Who` dependency of every dashboard route (a live session, else the
browser is sent to the sign-in page), and the reading of the dashboard's own url-encoded forms."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl, quote

from fastapi import Depends, Request
from starlette.responses import RedirectResponse, Response

from console.api.context import ApiContext
from console.web.session import CSRF_FIELD, SignedIn

FORM_LIMIT = 64 * 1024


class LoginRequired(Exception):
    def __init__(self, next_path: str):
        super().__init__(next_path)
        self.next_path = next_path


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def signed_in(request: Request) -> SignedIn:
    """The request's session; LoginRequired (a redirect to /login) without a live one."""
    who = _ctx(request).sessions.from_request(request, request.headers.get("X-CSRF-Token"))
    if who is None:
        raise LoginRequired(local_path(request.url.path + (f"?{request.url.query}" if request.url.query else "")))
    request.state.principal = who.principal
    return who


Who = Annotated[SignedIn, Depends(signed_in)]


async def on_login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    target = f"/login?next={quote(exc.next_path, safe='')}"
    if request.headers.get("HX-Request"):  # an htmx fragment: the whole page goes to the sign-in
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def local_path(path: str | None) -> str:
    """`path` if it is a path on this server, else `/` (a sign-in never sends a browser elsewhere)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


async def form_fields(request: Request) -> dict[str, str]:
    """An application/x-www-form-urlencoded body (the last value of each field); {} for anything else."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = await request.body()
    return dict(parse_qsl(body[:FORM_LIMIT].decode("utf-8", "replace"), keep_blank_values=True))


async def form_with_csrf(request: Request) -> tuple[SignedIn, dict[str, str]]:
    """A dashboard form post: its fields and the session, whose CSRF token the form must carry (else 403)."""
    fields = await form_fields(request)
    who = _ctx(request).sessions.from_request(request, fields.get(CSRF_FIELD))
    if who is None:
        raise LoginRequired("/")
    return who, fields
