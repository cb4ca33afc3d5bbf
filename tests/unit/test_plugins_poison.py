"""What the runner makes of values no good producer writes (pure logic; the runner against raw garbage on
its topic: tests/integration/test_plugins_poison.py)."""

from __future__ import annotations

import json
import math

import orjson
import pytest

from plugins.execution import rejected_result
from plugins.offsets import Ack
from plugins.retries import NOT_BEFORE_HEADER, dead_letter, not_before, slim_dead_letter, start_at
from plugins.sink import SLIM_FIELD_MAX_BYTES, slim_payload
from schemas.manifest import UINT64, RetryPolicy, json_unsafe
from schemas.result import Result
from tests.support.plugins import new_invocation


@pytest.mark.parametrize(
    ("header", "expected"),
    [(b"1000.5", 1000.5), (b"nan", None), (b"inf", None), (b"-inf", None), (b"soon", None), (b"\xff", None)],
)
def test_a_not_before_header_is_a_finite_time_or_nothing(header: bytes, expected: float | None) -> None:
    assert not_before([(NOT_BEFORE_HEADER, header)]) == expected


def test_a_retry_never_waits_longer_than_its_policy_allows() -> None:
    policy = RetryPolicy(max_retries=3, max_delay=60)
    assert start_at(1030.0, 1000.0, policy) == 1030.0
    assert start_at(1e300, 1000.0, policy) == 1060.0


def test_json_unsafe_takes_unsigned_64_bit_row_values_when_asked() -> None:
    assert json_unsafe({"id": 2**64 - 1}) is not None  # a parameter: refused
    assert json_unsafe({"id": 2**64 - 1}, max_int=UINT64) is None  # a BIGINT UNSIGNED row value: carried
    assert json_unsafe({"id": 2**64}, max_int=UINT64) is not None
    assert json_unsafe({"x": [math.nan]}, max_int=UINT64) == "['x'][0] is nan, which JSON cannot represent"


def test_a_rejected_result_always_encodes() -> None:
    result = rejected_result(
        "i",
        "echo",
        "1",
        "InvalidInvocation",
        "m" * 10_000,
        attempt=2**70,
        params={"n": 10**40, "x": math.inf},
        trigger={"kind": "cdc", "after": {"x": math.nan}},
    )
    assert (result.params, result.trigger, result.attempt) == (None, None, 1)
    assert result.error is not None and len(result.error.message) < 4100
    orjson.dumps(result.model_dump(mode="json"))  # raises if anything cannot be written
    kept = rejected_result("i", "echo", "1", "ParamError", "m", params={"n": 1}, trigger={"after": {"id": 2**64 - 1}})
    assert kept.params == {"n": 1} and kept.trigger == {"after": {"id": 2**64 - 1}}


def test_slim_payload_fits_whatever_the_result_holds_and_slims_again_alike() -> None:
    full = Result.model_validate(
        {
            "invocation_id": "i",
            "plugin": "echo",
            "plugin_version": "1",
            "status": "failed",
            "started_at": "2026-01-01T00:00:00Z",
            "finished_at": "2026-01-01T00:00:01Z",
            "duration_ms": 1.0,
            "output": "o" * 900_000,
            "error": {"type": "ValueError", "message": "m" * 900_000, "traceback": "t" * 900_000},
            "params": {"message": "p" * 900_000},
            "trigger": {"kind": "manual", "requested_by": "r" * 10},
        }
    ).model_dump_json()
    slim = slim_payload(full.encode())
    assert len(slim) < 2 * SLIM_FIELD_MAX_BYTES
    data = json.loads(slim)
    assert data["output"] is None and data["params"] is None and data["params_truncated"]["bytes"] > 900_000
    assert data["trigger"] == {"kind": "manual", "requested_by": "r" * 10} and data["status"] == "failed"
    assert data["output_truncated"]["bytes"] > 900_000
    assert json.loads(slim_payload(slim)) == data  # a second slimming (a broker refusal) changes nothing


def test_a_slimmed_dead_letter_names_where_its_params_are() -> None:
    inv = new_invocation("echo", {"message": "x" * 100_000})
    failed = rejected_result(inv.invocation_id, "echo", "1", "ValueError", "e" * 3000).model_copy(
        update={"status": "failed"}
    )
    entry = dead_letter(inv, failed, [{"attempt": 1, "error": {"message": "a" * 50_000}}], "t", Ack("t", 3, 42, 1))
    assert (entry["source_topic"], entry["source_partition"], entry["source_offset"]) == ("t", 3, 42)
    slim = slim_dead_letter(entry)
    assert slim["invocation"]["params"] == {} and "t[3]@42" in slim["params_omitted"]
    assert slim["invocation"]["invocation_id"] == inv.invocation_id and slim["error"]["type"] == "ValueError"
    assert len(orjson.dumps(slim)) < 20_000
