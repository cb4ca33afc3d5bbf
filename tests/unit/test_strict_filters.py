"""Filters and ranges of replay, tail and runs list parse strictly (issue 17, item 5): what cannot be
read one way only is refused naming the option, never read another way than meant."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner

from console.cli import cli
from streams.event_filter import STATUSES, EventFilter, FilterError, parse_where
from streams.replay_range import RangeError, check_order, parse_offsets, resolve_range

NOW = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text",
    [
        "after.id => 1",  # the example: was read as after.id = "> 1"
        "after.id =>1",
        "after.id <> 1",
        "after.id === 1",
        "after.name =~ ^A",
        "after.name ~= ^A",
        "after.id >> 1",
        "after.id =! 1",
        "after.id = ~",
        "after.id != !x",
    ],
)
def test_a_value_that_starts_with_an_operator_is_an_unknown_operator(text: str) -> None:
    with pytest.raises(FilterError, match=r"--where .*unknown operator .*expected FIELD OP VALUE"):
        parse_where(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("after.id", "expected FIELD OP VALUE"),
        ("after.id like x", "expected FIELD OP VALUE"),
        ("after.id in 1", "expected FIELD OP VALUE"),
        ("after.id =", "value is missing"),
        ("after.note = 'open", "cannot be read"),
        ("after.ids = [1, 2]", "reads as a list"),
        ("after.note = a: b", "reads as a dict"),
        ("after.n = #7", "reads as nothing"),
        ("after.ratio = .nan", "not a finite number"),
        ("after.ratio > .inf", "not a finite number"),
    ],
)
def test_values_that_are_not_one_plain_value_are_refused(text: str, reason: str) -> None:
    with pytest.raises(FilterError, match=reason):
        parse_where(text)


def test_good_conditions_keep_their_meaning() -> None:
    assert parse_where("after.id >= 1") == {"after.id": {"gte": 1}}
    assert parse_where("after.note = '> 1'") == {"after.note": "> 1"}  # quoted: the text
    assert parse_where("after.day >= 2026-11-24") == {"after.day": {"gte": "2026-11-24"}}  # ISO text, not a date
    assert parse_where("after.n = NULL") == {"after.n": {"is_null": True}}
    assert parse_where("after.n != null") == {"after.n": {"is_null": False}}
    assert parse_where("after.empty = ''") == {"after.empty": ""}
    assert parse_where("after.name ~ ^A[=<]") == {"after.name": {"regex": "^A[=<]"}}


def test_tail_names_its_own_option() -> None:
    with pytest.raises(FilterError, match=r"^--filter 'after.id => 1': unknown operator '=>'"):
        EventFilter.build(where=["after.id => 1"], where_option="--filter")


def test_statuses_are_checked_against_their_list() -> None:
    assert {"success", "failed", "timeout", "rejected", "skipped", "pending"} <= set(STATUSES)
    assert len(STATUSES) == len(set(STATUSES))
    assert EventFilter.build(statuses=["failed,pending", "success"]).statuses == {"failed", "pending", "success"}
    with pytest.raises(FilterError, match=r"--status 'exploded': expected one of .*success, failed"):
        EventFilter.build(statuses=["failed,exploded"])
    with pytest.raises(FilterError, match=r"--op 'MERGE'"):
        EventFilter.build(ops=["insert,MERGE"])


def test_a_partition_or_every_partition_is_given_once() -> None:
    with pytest.raises(RangeError, match=r"--from-offset '0:200': partition 0 is given twice"):
        parse_offsets(("0:100", "0:200"), "--from-offset")
    with pytest.raises(RangeError, match="every partition is given twice"):
        parse_offsets(("5,6",), "--to-offset")
    with pytest.raises(RangeError, match="start at 0"):
        parse_offsets(("-1:5",), "--to-offset")


def test_reversed_ranges_are_refused() -> None:
    with pytest.raises(
        RangeError, match=r"--from-offset 200 is after --to-offset 100 \(end exclusive\) for partition 0"
    ):
        check_order({0: 200}, {0: 100})
    with pytest.raises(RangeError, match="for every partition"):
        check_order({None: 9}, {None: 3})
    with pytest.raises(RangeError, match="for partition 1"):  # a bare start against a partition's end
        check_order({None: 50}, {0: 60, 1: 40})
    with pytest.raises(RangeError, match="--since .* is after --until"):
        check_order({}, {}, NOW, NOW - timedelta(hours=1))
    check_order({0: 100}, {0: 100})  # empty, not reversed
    check_order({0: 100, 1: 500}, {0: 200}, NOW - timedelta(hours=1), NOW)


@dataclass
class _Meta:
    partitions: dict[int, Any]
    error: Any = None


@dataclass
class _Topics:
    topics: dict[str, _Meta]


class _FakeConsumer:
    """A topic of three partitions, offsets 0..1000 each (the logic under test reads only these)."""

    def list_topics(self, topic: str, timeout: float) -> _Topics:
        return _Topics({topic: _Meta({0: None, 1: None, 2: None})})

    def get_watermark_offsets(self, tp: Any, timeout: float) -> tuple[int, int]:
        return 0, 1000


def test_a_range_that_names_partitions_covers_only_those() -> None:
    consumer: Any = _FakeConsumer()
    only_0 = resolve_range(consumer, "t", {0: 100}, {0: 200})
    assert [(r.partition, r.start, r.end) for r in only_0] == [(0, 100, 200)]
    named = resolve_range(consumer, "t", {0: 100, None: 10}, {2: 300})
    assert [(r.partition, r.start, r.end) for r in named] == [(0, 100, 1000), (2, 10, 300)]
    every = resolve_range(consumer, "t", {None: 10}, {None: 20})
    assert [(r.partition, r.start, r.end) for r in every] == [(0, 10, 20), (1, 10, 20), (2, 10, 20)]
    with pytest.raises(RangeError, match="has no partition 5"):
        resolve_range(consumer, "t", {5: 1}, {})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["tail", "results", "--filter", "after.id => 1"], "--filter 'after.id => 1': unknown operator '=>'"),
        (["tail", "results", "--status", "exploded"], "--status 'exploded': expected one of"),
        (["replay", "results", "--print", "--where", "id =< 1"], "--where 'id =< 1': unknown operator '=<'"),
        (["replay", "results", "--print", "--op", "upsert"], "--op 'upsert'"),
        (["runs", "list", "--status", "exploded"], "'exploded' is not one of"),
        (["runs", "list", "--trigger-kind", "cron"], "'cron' is not one of"),
    ],
)
def test_the_commands_refuse_them_in_one_line(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["-c", "stack/cdcflow.yaml", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
