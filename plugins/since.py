"""`--since` values: an ISO time, or a duration ago such as 90s, 30m, 2h, 1d or 1h30m."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?[smhdw])+$")
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """The moment `value` names, timezone-aware; ValueError with the accepted forms otherwise."""
    text = value.strip().lower()
    now = now or datetime.now(UTC)
    if _DURATION.match(text):
        try:
            return now - timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in _PART.findall(text)))
        except OverflowError:  # before year 1 (99999999d)
            raise ValueError(f"{value!r} reaches back before the year 1") from None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{value!r} is neither a duration (90s, 30m, 2h, 1d, 1h30m) nor an ISO time "
            "(2026-11-24T08:00:00, 2026-11-24 08:00+01:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
