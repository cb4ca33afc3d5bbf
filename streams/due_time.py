"""When a delayed trigger is due: `--delay 30s` / `--at 2026-12-05T22:00:00+08:00` (CLI), `delay_seconds` /
`at` (HTTP API), `delay=` (Python `trigger()`), all read by `due_time` so they refuse the same things
with the same one-line messages.

A time without a UTC offset is refused rather than guessed: the CLI's local zone, the API server's and
UTC can differ by hours, and a trigger fired hours off is worse than a refused one.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

# A delayed trigger waits in Redis; beyond this a schedule is the better tool (and a typo like
# `--delay 30d` for `30s` is caught).
MAX_DELAY = timedelta(days=30)
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


class DueTimeError(ValueError):
    """A delay or time that cannot be used; `field` names what was given (`--delay`, `at`...)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


def parse_delay(text: str, field: str = "--delay") -> float:
    """Seconds of `30s`, `5m`, `1h30m`, `2d`, `250ms` or plain seconds (`45`, `0.5`)."""
    spec = text.strip().lower()
    try:
        return float(spec)
    except ValueError:
        pass
    parts = _PART.findall(spec)
    if not spec or "".join(n + u for n, u in parts) != spec:
        raise DueTimeError(field, f"cannot read {text!r} as a delay (e.g. 30s, 5m, 1h30m, 2d, or seconds)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_at(text: str, field: str = "--at") -> datetime:
    """An ISO-8601 time with a UTC offset (`Z` or `+08:00`)."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise DueTimeError(
            field, f"cannot read {text!r} as an ISO-8601 time (e.g. 2026-12-05T22:00:00+08:00)"
        ) from None
    if at.tzinfo is None:
        raise DueTimeError(field, f"{text!r} has no UTC offset; add one (Z for UTC, or e.g. +08:00)")
    return at.astimezone(UTC)


def due_time(
    delay: str | float | timedelta | None,
    at: str | datetime | None,
    now: datetime,
    fields: tuple[str, str] = ("--delay", "--at"),
) -> datetime | None:
    """The due time (UTC) of a delay or time, or None when neither is given (run now). Refuses both
    at once, a delay that is not positive, a time not in the future, and anything past MAX_DELAY."""
    delay_field, at_field = fields
    if delay is not None and at is not None:
        raise DueTimeError(delay_field, f"give {delay_field} or {at_field}, not both")
    if delay is not None:
        seconds = _seconds(delay, delay_field)
        if not seconds > 0:  # also NaN
            raise DueTimeError(delay_field, f"must be a positive number of seconds, got {delay!r}")
        if seconds > MAX_DELAY.total_seconds():  # before timedelta(), which overflows on huge values
            raise DueTimeError(delay_field, f"more than {MAX_DELAY.days} days ahead; use a schedule for that")
        due, field = now + timedelta(seconds=seconds), delay_field
    elif at is not None:
        due = parse_at(at, at_field) if isinstance(at, str) else _aware(at, at_field)
        if due <= now:
            raise DueTimeError(at_field, f"{due.isoformat()} is in the past (now {now.isoformat(timespec='seconds')})")
        field = at_field
    else:
        return None
    if due - now > MAX_DELAY:
        raise DueTimeError(field, f"more than {MAX_DELAY.days} days ahead; use a schedule for that")
    return due


def _seconds(delay: str | float | timedelta, field: str) -> float:
    if isinstance(delay, str):
        return parse_delay(delay, field)
    return delay.total_seconds() if isinstance(delay, timedelta) else float(delay)


def _aware(at: datetime, field: str) -> datetime:
    if at.tzinfo is None:
        raise DueTimeError(field, f"{at.isoformat()} has no UTC offset; add one (Z for UTC, or e.g. +08:00)")
    return at.astimezone(UTC)
