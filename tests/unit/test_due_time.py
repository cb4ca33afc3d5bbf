"""Delayed triggers' due times (streams/due_time.py): what `--delay/--at`, the API's `delay_seconds/at`
and `trigger(delay=, at=)` accept, and the one-line refusals of everything else."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from streams.due_time import MAX_DELAY, DueTimeError, due_time, parse_delay

NOW = datetime(2026, 12, 5, 21, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("5m", 300),
        ("1h30m", 5400),
        ("2d", 172800),
        ("250ms", 0.25),
        ("45", 45),
        ("0.5", 0.5),
        (" 1H ", 3600),
    ],
)
def test_delays_read(text: str, seconds: float) -> None:
    assert parse_delay(text) == pytest.approx(seconds)
    assert due_time(text, None, NOW) == NOW + timedelta(seconds=seconds)


def test_delay_as_number_or_timedelta() -> None:
    assert due_time(1.5, None, NOW) == NOW + timedelta(seconds=1.5)
    assert due_time(timedelta(minutes=2), None, NOW) == NOW + timedelta(minutes=2)


def test_at_with_offset_is_converted_to_utc() -> None:
    assert due_time(None, "2026-12-06T06:00:00+08:00", NOW) == datetime(2026, 12, 5, 22, 0, tzinfo=UTC)
    assert due_time(None, "2026-12-05T21:00:01Z", NOW) == NOW + timedelta(seconds=1)
    beijing = timezone(timedelta(hours=8))
    assert due_time(None, datetime(2026, 12, 6, 6, 0, tzinfo=beijing), NOW) == datetime(2026, 12, 5, 22, tzinfo=UTC)


def test_neither_means_now() -> None:
    assert due_time(None, None, NOW) is None


@pytest.mark.parametrize(
    ("delay", "at", "message"),
    [
        ("abc", None, "--delay: cannot read 'abc' as a delay"),
        ("5x", None, "--delay: cannot read '5x'"),
        ("", None, "--delay: cannot read ''"),
        ("0", None, "--delay: must be a positive number of seconds"),
        ("-5", None, "--delay: must be a positive number of seconds"),
        (float("nan"), None, "--delay: must be a positive number of seconds"),
        (float("inf"), None, "--delay: more than 30 days ahead"),
        ("31d", None, "--delay: more than 30 days ahead"),
        ("1e300", None, "--delay: more than 30 days ahead"),
        (None, "2026-12-05T20:59:59Z", "--at: 2026-12-05T20:59:59+00:00 is in the past"),
        (None, "2026-12-05T21:00:00Z", "is in the past"),  # now is not the future
        (None, "2026-12-06T06:00:00", "has no UTC offset"),
        (None, datetime(2026, 12, 6), "has no UTC offset"),
        (None, "tomorrow", "--at: cannot read 'tomorrow' as an ISO-8601 time"),
        (None, "2027-02-01T00:00:00Z", "--at: more than 30 days ahead"),
        ("5s", "2026-12-06T00:00:00Z", "--delay: give --delay or --at, not both"),
    ],
)
def test_refusals_are_one_line_and_name_the_option(delay: object, at: object, message: str) -> None:
    with pytest.raises(DueTimeError) as caught:
        due_time(delay, at, NOW)  # type: ignore[arg-type]
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_api_fields_are_named() -> None:
    with pytest.raises(DueTimeError) as caught:
        due_time(-1.0, None, NOW, ("delay_seconds", "at"))
    assert caught.value.field == "delay_seconds" and str(caught.value).startswith("delay_seconds: ")


def test_longest_delay_is_accepted() -> None:
    assert due_time(MAX_DELAY.total_seconds(), None, NOW) == NOW + MAX_DELAY
