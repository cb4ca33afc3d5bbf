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
from dataclasses import dataclass, replace
from typing import Any, cast

import orjson

from plugins.store import RunStore
from schemas.result import IN_PROGRESS, Result

MAX_SCANNED = 20_000


class BadCursor(ValueError):
    pass


_FILTERED_FIELDS = {"status", "plugin", "trigger_kind", "trigger"}


@dataclass(frozen=True)
class RunFilter:
    plugin: str | None = None
    status: str | None = None
    trigger_kind: str | None = None
    rule: str | None = None
    schedule: str | None = None
    since: float | None = None  # epoch seconds, finished at or after
    until: float | None = None  # epoch seconds, finished at or before
    # Runs of these plugins only (None: any): those whose plugin.json has a category or tag asked for
    # (plugins/listing.py labelled_plugins), so a run is judged by its plugin's current labels.
    plugins: frozenset[str] | None = None

    @property
    def needs_reading(self) -> bool:
        """Whether a run must be read to judge it; else the index chosen already did the filtering."""
        return bool(
            (self.plugin and self.status)
            or self.trigger_kind
            or self.rule
            or self.schedule
            or (self.plugins is not None and not self.plugin)
        )

    def accepts(self, run: Result | dict[str, Any]) -> bool:
        """`run`: a Result, or a stored one as plain JSON data (parsed with orjson: a page is sent on as is)."""
        result = run if isinstance(run, dict) else run.model_dump(include=_FILTERED_FIELDS)
        if self.status is not None and result.get("status") != self.status:
            return False
        if self.plugin is not None and result.get("plugin") != self.plugin:
            return False
        if self.plugins is not None and result.get("plugin") not in self.plugins:
            return False
        if self.trigger_kind is not None and result.get("trigger_kind") != self.trigger_kind:
            return False
        trigger: dict[str, Any] = result.get("trigger") or {}
        if self.rule is not None and trigger.get("rule") != self.rule:
            return False
        return self.schedule is None or trigger.get("schedule") == self.schedule


@dataclass(frozen=True)
class RunPage:
    raw: list[bytes]  # each run's stored JSON, as it is in Redis
    next_cursor: str | None

    @property
    def runs(self) -> list[Result]:
        return [Result.model_validate_json(r) for r in self.raw]

    def json(self) -> bytes:
        """`{"runs": [...], "next_cursor": ...}` without parsing the runs again."""
        return b'{"runs":[' + b",".join(self.raw) + b'],"next_cursor":' + orjson.dumps(self.next_cursor) + b"}"


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
    if where.plugins is not None and not where.plugin:
        if not where.plugins:  # no plugin has the label: nothing to read
            return RunPage([], None)
        if len(where.plugins) == 1:  # one plugin's index holds exactly its runs
            where = replace(where, plugin=next(iter(where.plugins)))
    # Runs in progress have their own index by status (scored by when the state began) and state keys.
    in_progress = where.status in IN_PROGRESS
    by_status = in_progress or not where.plugin
    index = store.index_key(status=where.status) if by_status else store.index_key(plugin=where.plugin)
    key_of = store.state_key if in_progress else store.run_key
    high, after = where.until, None
    if cursor:
        high, after = decode_cursor(cursor)
    top = "+inf" if high is None else repr(high)
    low = "-inf" if where.since is None else repr(where.since)
    runs: list[bytes] = []
    scanned, offset = 0, 0
    page = max(limit * 2, 100) if where.needs_reading else limit + 1
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
        keys = [key_of(m.decode()) for _, m in fresh]
        raws = cast(list[bytes | None], store.client.mget(keys) if keys else [])
        for (score, member), raw in zip(fresh, raws, strict=True):
            scanned += 1
            last = (score, member)
            if raw is None:  # expired between the index read and now
                continue
            if not where.needs_reading or where.accepts(orjson.loads(raw)):
                runs.append(raw)
                if len(runs) == limit:
                    return RunPage(runs, encode_cursor(score, member))
    return RunPage(runs, encode_cursor(*last) if last else None)
