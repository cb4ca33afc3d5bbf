"""Properties of the row-change envelope over arbitrary bytes (issue 17, item 6): what the row-change
loop reads (streams/row_checks.py) is either a change of the shape the matcher relies on or a
BadRowChange saying what is wrong, never another exception; the inexact-number check never raises and
finds exactly the integers past 64 bits; an envelope that validates (schemas/row_change.py) writes
and reads back equal."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.row_change import RowChange
from streams.row_checks import INT64, UINT64, BadRowChange, inexact_number, parse_change
from tests.support.strategies import DEEP, HUGE_INTS, JSON, SCALARS, TEXT, expand, json_values, nested

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
ROW_VALUES = st.one_of(SCALARS, HUGE_INTS, DEEP, json_values(6))
ROWS = st.one_of(st.none(), st.dictionaries(TEXT, ROW_VALUES, max_size=4))


def _maybe(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the right kind of value for a field, sometimes any JSON at all."""
    return st.one_of(good, good, good, JSON)


SOURCES = st.fixed_dictionaries(
    {
        "server_id": _maybe(st.integers(0, 2**32)),
        "db": _maybe(TEXT),
        "table": _maybe(TEXT),
        "ts_ms": _maybe(st.integers(0, 2**45)),
    },
    optional={"file": _maybe(TEXT), "pos": _maybe(st.integers(0, 2**40)), "gtid": _maybe(TEXT), "x": JSON},
)
ENVELOPES = st.fixed_dictionaries(
    {
        "before": _maybe(ROWS),
        "after": _maybe(ROWS),
        "op": _maybe(st.sampled_from(["c", "u", "d", "r"])),
        "ts_ms": _maybe(st.integers(0, 2**45)),
        "source": _maybe(SOURCES),
        "event_id": _maybe(TEXT),
    },
    optional={"extra": JSON},
)


def _raw(doc: Any, how: str) -> bytes:
    """The document as a producer might have written it (json writes NaN and any integer; orjson
    refuses both and nesting past 254 levels, so it falls back to json)."""
    if how == "orjson":
        try:
            return orjson.dumps(doc)
        except orjson.JSONEncodeError:
            pass
    try:
        return json.dumps(doc).encode()
    except (RecursionError, ValueError):
        return b"[" * 2000  # what no encoder could write: nesting past every parser's limit, unclosed


RAWS = st.one_of(
    st.builds(
        lambda doc, how: _raw(expand(doc), how),
        st.one_of(ENVELOPES, ENVELOPES, JSON),
        st.sampled_from(["orjson", "json"]),
    ),
    st.binary(max_size=64),
    st.sampled_from([b"", b"null", b"\xff\xfe", b'{"a":1}{', b"NaN", b'{"op":"c"}' * 2, b"[" * 1100 + b"]" * 1100]),
)


def _exact_ints(raw: bytes) -> list[int]:
    """Every integer in the document, exactly (json.loads recurses: a higher limit for the deep ones)."""
    ints: list[int] = []
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5000))
    try:
        json.loads(raw, parse_int=lambda text: ints.append(int(text)) or 0)
    finally:
        sys.setrecursionlimit(limit)
    return ints


@SETTINGS
@given(RAWS)
def test_a_message_is_a_change_the_matcher_can_read_or_a_bad_row_change(raw: bytes) -> None:
    try:
        change, source, event_id = parse_change(raw)
    except BadRowChange as e:
        assert str(e)
        return
    assert type(change) is dict and change["source"] is source and change.get("event_id", event_id) is event_id
    assert type(source["db"]) is str and type(source["table"]) is str and type(event_id) is str and event_id
    assert change["op"] in ("c", "u", "d", "r")
    assert all(type(change.get(image)) in (dict, type(None)) for image in ("before", "after"))
    why = inexact_number(raw)
    assert (why is not None) == any(not -INT64 <= n < UINT64 for n in _exact_ints(raw)), why


@SETTINGS
@given(ENVELOPES)
def test_an_envelope_that_validates_writes_and_reads_back_equal(doc: dict[str, Any]) -> None:
    doc = expand(doc)
    try:
        change = RowChange.model_validate(doc)
    except ValueError as e:  # pydantic's ValidationError, naming the fields
        assert str(e)
        return
    written = change.model_dump_json()
    assert RowChange.model_validate_json(written) == change
    assert parse_change(written.encode())[0] == orjson.loads(written)


@pytest.mark.parametrize(
    "row",
    [{"v": math.nan}, {"v": math.inf}, {"v": [2**64]}, {"v": {"w": -(2**63) - 1}}, {"v": nested(300)}],
    ids=["nan", "inf", "uint64-plus-one", "int64-minus-one", "nested-300"],
)
def test_an_envelope_refuses_what_json_cannot_carry(row: dict[str, Any]) -> None:
    doc = {"before": None, "after": row, "op": "c", "ts_ms": 1, "event_id": "e", "source": SOURCE}
    with pytest.raises(ValueError, match="after"):
        RowChange.model_validate(doc)


SOURCE = {"server_id": 1, "db": "shop", "table": "orders", "ts_ms": 1}


@pytest.mark.parametrize("value", [2**64 - 1, -(2**63), 2**63, 10**18, 0])
def test_integers_within_64_bits_are_exact(value: int) -> None:
    raw = json.dumps({"before": None, "after": {"v": value}, "op": "c", "event_id": "e", "source": SOURCE}).encode()
    assert inexact_number(raw) is None and parse_change(raw)[0]["after"]["v"] == value


def test_the_inexact_number_check_reads_as_deep_as_the_loop_does() -> None:
    """orjson reads 1,024 levels; json.loads (the exact re-parse) recursed past Python's limit."""
    deep = b"[" * 1020 + b"18446744073709551616" + b"]" * 1020
    raw = b'{"before":null,"op":"c","event_id":"e","source":{"db":"d","table":"t"},"after":{"v":' + deep + b"}}"
    parse_change(raw)
    assert "beyond 64 bits" in (inexact_number(raw) or "")
