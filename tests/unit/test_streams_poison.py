"""What the row-change loop will not act on (pure logic; the loop against raw garbage on a cdc topic:
tests/integration/test_streams_poison.py)."""

from __future__ import annotations

import orjson
import pytest

from streams.row_changes import MAX_MARK_CHARS, binlog_order
from streams.row_checks import BadRowChange, inexact_number, parse_change, too_large_dead_letter

GOOD = {
    "before": None,
    "after": {"id": 1},
    "op": "c",
    "event_id": "1:mysql-bin.000001:4:0",
    "source": {"db": "shop", "table": "orders"},
}


def test_a_well_formed_change_parses() -> None:
    change, source, event_id = parse_change(orjson.dumps(GOOD))
    assert change == GOOD and source == GOOD["source"] and event_id == GOOD["event_id"]


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ([GOOD], "not a JSON object but a list"),
        ({**GOOD, "source": "shop.orders"}, "source is not an object"),
        ({**GOOD, "source": {"db": "shop"}}, "source is not an object naming db and table"),
        ({**GOOD, "source": {"db": ["shop"], "table": "orders"}}, "naming db and table"),
        ({**GOOD, "event_id": 7}, "event_id is not a non-empty string"),
        ({**GOOD, "event_id": ""}, "event_id is not a non-empty string"),
        ({**GOOD, "op": "x"}, "op is 'x', not one of c, u, d, r"),
        ({k: v for k, v in GOOD.items() if k != "op"}, "op is 'None'"),
        ({**GOOD, "after": [1]}, "after is neither an object nor null"),
        ({**GOOD, "before": "x"}, "before is neither an object nor null"),
    ],
)
def test_a_malformed_change_says_what_is_wrong(change: object, why: str) -> None:
    with pytest.raises(BadRowChange, match=why):
        parse_change(orjson.dumps(change))


def test_only_integers_orjson_would_round_are_inexact() -> None:
    row = b'{"after": {"u": 18446744073709551615, "s": -9223372036854775808, "d": "123456789012345678901234.5"}}'
    assert inexact_number(row) is None  # BIGINT UNSIGNED's max, BIGINT's min, a DECIMAL string
    assert "beyond 64 bits" in (inexact_number(b'{"after": {"u": 18446744073709551616}}') or "")
    assert "beyond 64 bits" in (inexact_number(b'{"after": {"s": -9223372036854775809}}') or "")
    assert orjson.loads(b"18446744073709551616") == 1.8446744073709552e19  # why: orjson rounds it silently


def test_an_event_id_too_long_for_offset_metadata_is_no_mark() -> None:
    assert binlog_order("1:" + "f" * (MAX_MARK_CHARS - 6) + ":5:0") is not None
    assert binlog_order("1:" + "f" * MAX_MARK_CHARS + ":5:0") is None


def test_a_too_large_invocation_becomes_a_dead_letter_in_the_runners_shape() -> None:
    invocation = {"invocation_id": "i", "plugin": "echo", "params": {"x": "y"}, "trigger": {"kind": "cdc"}}
    entry = too_large_dead_letter(invocation, 2_000_000, "invoke.echo", 1_000_000, ("cdc.shop.orders", 1, 42))
    assert entry["dlq_id"] == "i" and entry["plugin"] == "echo" and entry["invocation"] is invocation
    assert (
        entry["error"]["message"]
        == "invoke.echo takes messages of up to 1000000 bytes; this invocation is 2000000 bytes"
    )
    assert (entry["source_topic"], entry["source_partition"], entry["source_offset"]) == ("cdc.shop.orders", 1, 42)


def test_a_trigger_request_is_refused_naming_whom_to_tell_when_it_can() -> None:
    from schemas.config import parse_settings
    from schemas.invocation import invocation_id_for
    from schemas.trigger_request import ManualTriggerRequest
    from streams.trigger_checks import Refusal, check_request, too_large
    from tests.support import REPO_ROOT, isolated_config_data

    settings = parse_settings(isolated_config_data("u"), "test settings", REPO_ROOT)
    ok = check_request(settings, b'{"request_id": "r", "plugin": "echo", "requested_by": "me"}', "t[0]@1")
    assert isinstance(ok, ManualTriggerRequest)
    bad_priority = check_request(settings, b'{"request_id": "r", "plugin": "echo", "priority": 1}', "t[0]@2")
    assert isinstance(bad_priority, Refusal) and bad_priority.why.startswith("t[0]@2: ")
    assert bad_priority.invocation_id() == invocation_id_for("manual", "r", "echo")
    huge = check_request(
        settings, b'{"request_id": "r", "plugin": "echo", "requested_by": "me", "params": {"n": 1e999}}', "w"
    )
    assert isinstance(huge, Refusal)  # pydantic reads 1e999 as inf
    assert huge.invocation_id() is not None and "params['n'] is inf" in huge.why
    for nobody in (
        b"[]",
        b'{"plugin": "echo"}',
        b'{"request_id": "r", "plugin": "a/b"}',
        b'{"request_id": " ", "plugin": "echo"}',
    ):
        refusal = check_request(settings, nobody, "w")
        assert isinstance(refusal, Refusal) and refusal.invocation_id() is None, nobody
    long_name = check_request(
        settings, b'{"request_id": "r", "plugin": "' + b"p" * 99 + b'", "requested_by": "me"}', "w"
    )
    assert isinstance(long_name, ManualTriggerRequest)  # a name a plugin can have, and its topics fit Kafka's limit
    invocation = {"invocation_id": "i", "plugin": "echo", "priority": "normal", "params": {"m": "x" * 1_000_000}}
    assert "takes messages of up to 1000000 bytes" in (too_large(settings, invocation) or "")


def test_facts_summaries_and_filters_take_any_message() -> None:
    from streams.event_filter import EventFilter
    from streams.events import facts, summary
    from tests.support.poison import generic, odd_events

    filters = [
        EventFilter(),
        EventFilter.build(statuses=["failed"], plugins=["echo"], rules=["r"], tables=["orders"], ops=["c"]),
        EventFilter.build(where=["after.n>=1", "output~x"]),
    ]
    for poison in generic() + odd_events():
        f = facts(poison.value)
        assert all(isinstance(v, str | None) for v in (f.table, f.op, f.plugin, f.rule, f.status, f.event_id))
        assert isinstance(summary(f, poison.value), str), poison.name
        for flt in filters:
            flt.accepts(f)  # raises on none of them
    assert facts(b'{"op": "c", "source": "shop", "event_id": "e"}').kind == "unknown"  # no row change: source
