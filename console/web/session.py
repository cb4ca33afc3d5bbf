"""Dashboard sessions: a browser signs in once with an API token and then carries only a random id.

A session lives in Redis under `<prefix>:api:session:<id>` (JSON: token id, CSRF token, created and
expiry times; the key expires with it). The cookie holds the id alone, HttpOnly and SameSite=Strict;
the token's text is checked once at sign-in and kept nowhere. On every request the token's record is
read again (as for a Bearer token), so revoking the token ends its sessions at once, and the scopes
are the record's current ones. A mutating request made with the cookie must also carry the session's
CSRF token (header `X-CSRF-Token`, or form field `csrf_token` for the dashboard's own forms).
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import asdict, dataclass
from typing import cast

import orjson
import redis
from starlette.requests import Request

from console.api.problems import ApiProblem
from console.api.tokens import Principal, TokenRecord, TokenStore

COOKIE = "cdcflow_session"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SESSION_SECONDS = 12 * 3600
MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
_ID_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


@dataclass(frozen=True)
class Session:
    id: str
    token_id: str
    csrf: str
    created_at: float
    expires_at: float


@dataclass(frozen=True)
class SignedIn:
    """A live session and who it acts for (the token's current name and scopes)."""

    session: Session
    principal: Principal


class SessionStore:
    def __init__(self, client: redis.Redis, prefix: str, tokens: TokenStore):
        self.client = client
        self.prefix = f"{prefix}:api:session"
        self.tokens = tokens

    def _key(self, session_id: str) -> str:
        return f"{self.prefix}:{session_id}"

    def create(self, token_id: str, seconds: int = SESSION_SECONDS) -> Session:
        now = time.time()
        session = Session(secrets.token_urlsafe(32), token_id, secrets.token_urlsafe(32), now, now + seconds)
        self.client.set(self._key(session.id), orjson.dumps(asdict(session)), ex=seconds)
        return session

    def delete(self, session_id: str) -> None:
        if _plausible(session_id):
            self.client.delete(self._key(session_id))

    def load(self, session_id: str | None) -> SignedIn | None:
        """The session and its principal; None (and the session deleted) if its token is gone or revoked."""
        if not session_id or not _plausible(session_id):
            return None
        raw = cast(bytes | None, self.client.get(self._key(session_id)))
        if raw is None:
            return None
        session = Session(**orjson.loads(raw))
        record = self._token(session.token_id)
        if session.expires_at < time.time() or record is None or record.revoked_at is not None:
            self.delete(session_id)
            return None
        return SignedIn(session, Principal(record.id, record.name, tuple(record.scopes)))

    def _token(self, token_id: str) -> TokenRecord | None:
        configured = next((r for r in self.tokens.configured if r.id == token_id), None)
        return configured or (None if token_id.startswith("config:") else self.tokens.get(token_id))

    def from_request(self, request: Request, form_csrf: str | None = None) -> SignedIn | None:
        """The request's session (by cookie); a mutating request without its CSRF token is refused (403)."""
        signed_in = self.load(request.cookies.get(COOKIE))
        if signed_in is not None and request.method in MUTATING:
            presented = request.headers.get(CSRF_HEADER) or form_csrf or ""
            if not hmac.compare_digest(presented.encode(), signed_in.session.csrf.encode()):
                raise ApiProblem(403, "Forbidden", f"a signed-in browser's {request.method} needs the CSRF token")
        return signed_in


def _plausible(session_id: str) -> bool:
    return 20 <= len(session_id) <= 64 and set(session_id) <= _ID_CHARS
