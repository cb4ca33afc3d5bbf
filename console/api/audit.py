"""The audit log: every mutating API call (who, what, when, result), in a capped Redis stream.

Stream ids are time-ordered and unique, so they double as the stable cursor of `GET /api/audit`.
"""

from __future__ import annotations

import time
from typing import Any, cast

import redis
import redis.asyncio
from pydantic import BaseModel

AUDIT_KEPT = 100_000


class AuditEntry(BaseModel):
    id: str
    at: float
    token: str
    action: str
    target: str
    status: int
    detail: str = ""


class AuditLog:
    def __init__(self, client: redis.Redis, prefix: str):
        self.client = client
        self.key = f"{prefix}:api:audit"

    def record(self, token: str, action: str, target: str, status: int, detail: str = "") -> None:
        self.client.xadd(self.key, _fields(token, action, target, status, detail), maxlen=AUDIT_KEPT, approximate=True)

    async def record_async(
        self, client: redis.asyncio.Redis, token: str, action: str, target: str, status: int, detail: str = ""
    ) -> None:
        """As record, with the server's asyncio client (written after every mutating request)."""
        fields = _fields(token, action, target, status, detail)
        await client.xadd(self.key, fields, maxlen=AUDIT_KEPT, approximate=True)

    def page(self, limit: int, before: str | None = None) -> list[AuditEntry]:
        """Newest first; `before` is the id of the last entry of the previous page (BadCursor if it is
        not a stream id)."""
        high = "+"
        if before is not None:
            ms, seq = _stream_id(before)
            if ms == seq == 0:
                return []  # nothing is older than the first possible id
            high = f"({ms}-{seq}"
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], self.client.xrevrange(self.key, high, "-", count=limit))
        return [_entry(i, f) for i, f in entries]


def _fields(token: str, action: str, target: str, status: int, detail: str) -> dict[Any, Any]:
    return {
        "at": repr(time.time()),
        "token": token,
        "action": action,
        "target": target,
        "status": status,
        "detail": detail[:500],
    }


class BadCursor(ValueError):
    pass


def _stream_id(text: str) -> tuple[int, int]:
    ms, sep, seq = text.partition("-")
    if not (sep and ms.isdigit() and seq.isdigit() and int(ms) < 2**64 and int(seq) < 2**64):
        raise BadCursor(f"not an audit cursor: {text[:40]!r}")
    return int(ms), int(seq)


def _entry(stream_id: bytes, fields: dict[bytes, bytes]) -> AuditEntry:
    text = {k.decode(): v.decode() for k, v in fields.items()}
    return AuditEntry(
        id=stream_id.decode(),
        at=float(text["at"]),
        token=text["token"],
        action=text["action"],
        target=text["target"],
        status=int(text["status"]),
        detail=text.get("detail", ""),
    )
