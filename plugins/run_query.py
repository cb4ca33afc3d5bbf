"""Run history pages: filters and a stable cursor over the Redis indexes of plugins/store.py.

The indexes are sorted sets scored by finish time, newest read first. A cursor is the (score,
member) of the last run of a page; the next page starts just below it (for an equal score, below
the member: Redis orders ties by member, descending in a reverse range). Runs that finish while a
client pages land above the cursor, so no page shifts, repeats or skips. A page reads at most
`MAX_SCANNED` index entries: a rare filter over a long history returns fewer runs and a cursor to
go on from, instead of reading the whole history in one request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

from plugins.store import RunStore
from schemas.result import Result

MAX_SCANNED = 20_000


class BadCursor(ValueError):
    pass


@dataclass(frozen=True)
class RunFilter:
    plugin: str | None = None
    status: str | None = None
    trigger_kind: str | None = None
    rule: str | None = None
    schedule: str | None = None
    since: float | None = None  # epoch seconds, finished at or after
    until: float | None = None  # epoch seconds, finished at or before

    def accepts(self, result: Result) -> bool:
        if self.status is not None and result.status != self.status:
            return False
        if self.plugin is not None and result.plugin != self.plugin:
            return False
        if self.trigger_kind is not None and result.trigger_kind != self.trigger_kind:
            return False
        trigger: dict[str, Any] = result.trigger or {}
        if self.rule is not None and trigger.get("rule") != self.rule:
            return False
        return self.schedule is None or trigger.get("schedule") == self.schedule


@dataclass(frozen=True)
class RunPage:
    runs: list[Result]
    next_cursor: str | None


# score, then the member in hex: every string of this shape is a cursor (no 'valid-looking but refused')
CURSOR_PATTERN = r"^[0-9]{1,20}(\.[0-9]{1,20})?_([0-9a-f]{2}){1,200}$"
_CURSOR = re.compile(CURSOR_PATTERN)


def encode_cursor(score: float, member: bytes) -> str:
    return f"{score!r}_{member.hex()}"


def decode_cursor(cursor: str) -> tuple[float, bytes]:
    if not _CURSOR.match(cursor):
        raise BadCursor(f"not a cursor of this API: {cursor[:40]!r}")
    score, _, member = cursor.partition("_")
    return float(score), bytes.fromhex(member)


def query_runs(store: RunStore, where: RunFilter, limit: int, cursor: str | None = None) -> RunPage:
    """Newest first: up to `limit` runs that pass `where`, after `cursor`, and the next page's cursor."""
    index = store.index_key(plugin=where.plugin) if where.plugin else store.index_key(status=where.status)
    high, after = where.until, None
    if cursor:
        high, after = decode_cursor(cursor)
    top = "+inf" if high is None else repr(high)
    low = "-inf" if where.since is None else repr(where.since)
    runs: list[Result] = []
    scanned, offset, page = 0, 0, max(limit * 2, 100)
    last: tuple[float, bytes] | None = None
    while scanned < MAX_SCANNED:
        entries = cast(
            list[tuple[bytes, float]],
            store.client.zrevrangebyscore(index, top, low, start=offset, num=page, withscores=True),
        )
        if not entries:
            return RunPage(runs, None)
        offset += len(entries)
        # an equal score below the cursor's member was shown on an earlier page
        fresh = [(s, m) for m, s in entries if after is None or s != high or m < after]
        keys = [store.run_key(m.decode()) for _, m in fresh]
        raws = cast(list[bytes | None], store.client.mget(keys) if keys else [])
        for (score, member), raw in zip(fresh, raws, strict=True):
            scanned += 1
            last = (score, member)
            result = None if raw is None else Result.model_validate_json(raw)  # None: expired meanwhile
            if result is not None and where.accepts(result):
                runs.append(result)
                if len(runs) == limit:
                    return RunPage(runs, encode_cursor(score, member))
    return RunPage(runs, encode_cursor(*last) if last else None)
