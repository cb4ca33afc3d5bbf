"""Sign in with an API token (-> a session cookie) and sign out.

The sign-in form is itself protected against cross-site posts by a double-submit token: a random
value in a short-lived SameSite=Strict cookie that the form must repeat. Sign-ins and sign-outs go
to the audit log with the token's name and id (never its text).
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from console.api.context import ApiContext
from console.web.auth import form_fields, form_with_csrf, local_path
from console.web.render import page
from console.web.session import COOKIE, SESSION_SECONDS

router = APIRouter(include_in_schema=False)
LOGIN_COOKIE = "cdcflow_login"


def _ctx(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def _login_page(request: Request, next_path: str, error: str | None, status: int = 200) -> HTMLResponse:
    nonce = secrets.token_urlsafe(24)
    response = page(request, "login.html", None, "login", status, next_path=next_path, error=error, login_nonce=nonce)
    response.set_cookie(
        LOGIN_COOKIE, nonce, max_age=1800, httponly=True, samesite="strict", secure=_secure(request), path="/login"
    )
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str = "/") -> Response:
    if _ctx(request).sessions.load(request.cookies.get(COOKIE)) is not None:
        return RedirectResponse(local_path(next), status_code=303)
    return _login_page(request, local_path(next), None)


@router.post("/login")
async def login(request: Request) -> Response:
    fields = await form_fields(request)
    next_path = local_path(fields.get("next"))
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not nonce or not hmac.compare_digest(nonce.encode(), fields.get("login_nonce", "").encode()):
        return _login_page(request, next_path, "The sign-in form had expired; please sign in again.", 403)
    ctx = _ctx(request)
    principal = ctx.tokens.authenticate(fields.get("token", "").strip())
    if principal is None:
        ctx.audit.record("anonymous", "POST /login", "/login", 401, "unknown or revoked token")
        return _login_page(request, next_path, "That token is unknown or revoked.", 401)
    session = ctx.sessions.create(principal.token_id)
    ctx.audit.record(f"{principal.name} ({principal.token_id})", "POST /login", "/login", 303, "dashboard sign-in")
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        COOKIE, session.id, max_age=SESSION_SECONDS, httponly=True, samesite="strict", secure=_secure(request), path="/"
    )
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    who, _ = await form_with_csrf(request)
    ctx = _ctx(request)
    ctx.sessions.delete(who.session.id)
    principal = who.principal
    ctx.audit.record(f"{principal.name} ({principal.token_id})", "POST /logout", "/logout", 303, "dashboard sign-out")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response
