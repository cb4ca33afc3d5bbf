"""`--since` of the run history: durations and ISO times (the history itself in the real Redis:
tests/integration/test_plugins_store.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest


def test_parse_since_durations_and_iso_times():
    from plugins.since import parse_since

    now = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("1h30m", now) == now - timedelta(minutes=90)
    assert parse_since("45s", now) == now - timedelta(seconds=45)
    assert parse_since("1d", now) == now - timedelta(days=1)
    assert parse_since("2026-01-02T10:00:00", now) == datetime(2026, 1, 2, 10, tzinfo=UTC)
    assert parse_since("2026-01-02T10:00:00+02:00", now) == datetime(2026, 1, 2, 8, tzinfo=UTC)
    for bad in ("yesterday", "2x", "-2h", ""):
        with pytest.raises(ValueError, match="neither a duration"):
            parse_since(bad, now)
