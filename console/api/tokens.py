"""API tokens: made once by `cdcflow api token create`, kept in Redis by their hash only.

A token reads `cdcf_<id>_<secret>`. The id finds its record in one Redis GET; the sha256 of the
whole text is compared with the stored one in constant time, so neither a timing nor a leaked
Redis dump gives a usable token. Revoking deletes nothing (the record says when): the next request
with it is refused, since records are read on every request and never cached. Tokens can also be
declared in the config file by hash (`api.tokens`), for deployments that provision them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Literal, cast

import orjson
import redis
import redis.asyncio
from pydantic import BaseModel, Field

from schemas.settings import ApiSettings

Scope = Literal["read", "trigger", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "trigger", "admin")
# Each scope includes the ones before it: an admin token may trigger and read.
_RANK = {scope: i for i, scope in enumerate(SCOPES)}
_TOKEN = re.compile(r"^cdcf_([0-9a-f]{12})_[A-Za-z0-9_-]{20,100}$")


class TokenRecord(BaseModel):
    id: str
    name: str
    scopes: list[Scope]
    sha256: str = Field(exclude=True)
    created_at: float
    revoked_at: float | None = None
    source: Literal["redis", "config"] = "redis"


@dataclass(frozen=True)
class Principal:
    """Who made a request: the token's id and name (never its text) and what it may do."""

    token_id: str
    name: str
    scopes: tuple[Scope, ...]

    def may(self, scope: Scope) -> bool:
        return any(_RANK[s] >= _RANK[scope] for s in self.scopes)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, client: redis.Redis, prefix: str, api: ApiSettings):
        self.client = client
        self.prefix = f"{prefix}:api"
        self.configured = [
            TokenRecord(
                id=f"config:{t.name}", name=t.name, scopes=t.scopes, sha256=t.sha256, created_at=0, source="config"
            )
            for t in api.tokens
        ]

    def _key(self, token_id: str) -> str:
        return f"{self.prefix}:token:{token_id}"

    def create(self, name: str, scopes: list[Scope]) -> tuple[str, TokenRecord]:
        """A new token's text (shown once, stored nowhere) and its record."""
        token_id = secrets.token_hex(6)
        text = f"cdcf_{token_id}_{secrets.token_urlsafe(32)}"
        record = TokenRecord(id=token_id, name=name, scopes=scopes, sha256=token_hash(text), created_at=time.time())
        self._save(record)
        self.client.sadd(f"{self.prefix}:tokens", token_id)
        return text, record

    def _save(self, record: TokenRecord) -> None:
        self.client.set(self._key(record.id), orjson.dumps(record.model_dump() | {"sha256": record.sha256}))

    def get(self, token_id: str) -> TokenRecord | None:
        raw = cast(bytes | None, self.client.get(self._key(token_id)))
        return None if raw is None else TokenRecord.model_validate(orjson.loads(raw))

    def list(self) -> list[TokenRecord]:
        members = cast(set[bytes], self.client.smembers(f"{self.prefix}:tokens"))
        ids = sorted(i.decode() for i in members)
        records = [r for r in (self.get(i) for i in ids) if r is not None]
        return sorted(self.configured + records, key=lambda r: (r.created_at, r.id))

    def revoke(self, token_id: str) -> TokenRecord | None:
        record = self.get(token_id)
        if record is None:
            return None
        if record.revoked_at is None:
            record.revoked_at = time.time()
            self._save(record)
        return record

    def authenticate(self, text: str) -> Principal | None:
        """The principal of a presented token, or None if it is unknown, wrong or revoked."""
        match = _TOKEN.match(text)
        return self._judge(text, self.get(match.group(1)) if match else None)

    async def authenticate_async(self, text: str, client: redis.asyncio.Redis) -> Principal | None:
        """As authenticate, with the server's asyncio client: a request waiting for Redis does not
        hold up the event loop (every request authenticates)."""
        match = _TOKEN.match(text)
        raw = cast(bytes | None, await client.get(self._key(match.group(1)))) if match else None
        return self._judge(text, None if raw is None else TokenRecord.model_validate(orjson.loads(raw)))

    def _judge(self, text: str, record: TokenRecord | None) -> Principal | None:
        digest = token_hash(text)
        candidates = ([record] if record else []) + self.configured
        for candidate in candidates:
            if hmac.compare_digest(candidate.sha256, digest) and candidate.revoked_at is None:
                return Principal(candidate.id, candidate.name, tuple(candidate.scopes))
        return None
