"""Pure parts of replay/tail: ranges, times, --where conditions, event kinds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from streams.event_filter import EventFilter, FilterError, parse_where
from streams.events import facts
from streams.replay_range import RangeError, parse_offsets, parse_time

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


def test_offsets_per_partition_or_for_all() -> None:
    assert parse_offsets(("0:100", "1:50,2:0"), "--from-offset") == {0: 100, 1: 50, 2: 0}
    assert parse_offsets(("7",), "--to-offset") == {None: 7}
    with pytest.raises(RangeError, match="--from-offset 'a:b'"):
        parse_offsets(("a:b",), "--from-offset")
    with pytest.raises(RangeError, match="start at 0"):
        parse_offsets(("0:-3",), "--from-offset")


def test_times_iso_or_relative() -> None:
    assert parse_time("2h", "--since", NOW) == NOW - timedelta(hours=2)
    assert parse_time("1d12h30m", "--since", NOW) == NOW - timedelta(days=1, hours=12, minutes=30)
    assert parse_time("2026-11-24T06:00:00Z", "--since", NOW) == datetime(2026, 11, 24, 6, tzinfo=UTC)
    assert parse_time("2026-11-24T06:00:00", "--until", NOW).tzinfo is not None  # naive = local time
    with pytest.raises(RangeError, match="--until 'soon'"):
        parse_time("soon", "--until", NOW)


def test_where_conditions_use_the_rules_language() -> None:
    assert parse_where("after.is_valid=true") == {"after.is_valid": True}
    assert parse_where("amount >= 10.5") == {"amount": {"gte": 10.5}}
    assert parse_where("status!=paid") == {"status": {"ne": "paid"}}
    assert parse_where("deleted_at=null") == {"deleted_at": {"is_null": True}}
    assert parse_where("name~^A") == {"name": {"regex": "^A"}}
    with pytest.raises(FilterError, match="FIELD OP VALUE"):
        parse_where("is_valid")


def _change(op: str, before: dict | None, after: dict | None) -> bytes:
    return orjson.dumps(
        {
            "before": before,
            "after": after,
            "op": op,
            "ts_ms": 1,
            "event_id": "e",
            "source": {"db": "shop", "table": "orders"},
        }
    )


def test_filters_on_row_changes_and_other_events() -> None:
    f = EventFilter.build(tables=["orders"], ops=["UPDATE,d"], where=["amount>=10", "before.status=new"])
    assert f.accepts(facts(_change("u", {"status": "new"}, {"amount": "12.50"})))
    assert not f.accepts(facts(_change("u", {"status": "old"}, {"amount": "12.50"})))
    assert not f.accepts(facts(_change("c", None, {"amount": 99})))  # op
    assert f.accepts(facts(_change("d", {"status": "new", "amount": 10}, None)))  # the row is `before` for a delete
    inv = orjson.dumps(
        {
            "invocation_id": "i",
            "plugin": "echo",
            "params": {"id": 7},
            "trigger": {"kind": "cdc", "rule": "r", "table": "shop.orders", "op": "u", "event_id": "e"},
        }
    )
    assert facts(inv).kind == "invocation"
    assert EventFilter.build(plugins=["echo"], rules=["r"], where=["params.id=7", "trigger.kind=cdc"]).accepts(
        facts(inv)
    )
    assert not EventFilter.build(where=["params.id>7"]).accepts(facts(inv))
    result = orjson.dumps({"invocation_id": "i", "plugin": "echo", "status": "failed"})
    assert facts(result).kind == "result" and EventFilter.build(statuses=["failed"]).accepts(facts(result))
    assert facts(b"not json").kind == "unknown" and not EventFilter.build(plugins=["echo"]).accepts(facts(b"x"))


class FakeMessage:
    """Just what the transformer reads of a confluent_kafka.Message."""

    def __init__(self, value: bytes):
        self._value = value

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return b"k"

    def topic(self) -> str:
        return "t"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 1

    def headers(self) -> None:
        return None


def test_malformed_events_are_counted_and_skipped() -> None:
    from schemas.settings import Settings
    from streams.matcher import Matcher
    from streams.replay import ReplayCounts, ReplaySpec, Transformer, _handle

    settings = Settings()
    spec = ReplaySpec(topic="t", target="pipeline", filter=EventFilter.build(), dry_run=True)
    transformer, counts = Transformer(settings, spec, "rid", Matcher()), ReplayCounts()
    for value in (
        {"op": "c", "source": {}, "event_id": "e"},  # no source.db
        {"invocation_id": "i", "trigger": {}, "plugin": "echo", "priority": "urgent"},
        {"invocation_id": "i", "plugin": "echo", "status": "success"},
    ):  # a result: not re-runnable
        _handle(FakeMessage(orjson.dumps(value)), transformer, spec, counts, None, set(), settings, None)
    reasons = sorted(counts.skipped)
    assert len(reasons) == 3 and counts.selected == 1 and counts.by_topic == {}
    # the row change is refused by the row-change loop's own checks (streams/row_checks.py), which name it
    assert reasons[0].startswith("cannot be re-run") and "priority" in reasons[2]
    assert "BadRowChange: source is not an object naming db and table" in reasons[1]
