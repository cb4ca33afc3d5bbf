"""Pure parts of the HTTP API: scopes, the rate limiter, run cursors, the audit cursor, problem field
names, and that a token's hash is masked like a secret."""

from __future__ import annotations

import pytest

from console.api.audit import BadCursor as BadAuditCursor
from console.api.audit import _stream_id
from console.api.problems import _field_name
from console.api.rate_limit import RateLimiter
from console.api.tokens import Principal, token_hash
from plugins.run_query import BadCursor, RunFilter, decode_cursor, encode_cursor
from schemas.runtime.secrets import masked_settings
from schemas.settings import ApiToken, Settings


def test_scopes_include_the_narrower_ones() -> None:
    admin, trigger, read = (Principal("i", "n", (s,)) for s in ("admin", "trigger", "read"))  # type: ignore[arg-type]
    assert admin.may("read") and admin.may("trigger") and admin.may("admin")
    assert trigger.may("read") and trigger.may("trigger") and not trigger.may("admin")
    assert read.may("read") and not read.may("trigger")


def test_rate_limiter_allows_the_burst_then_the_rate() -> None:
    limiter = RateLimiter(per_second=2, burst=3)
    assert [limiter.take("t", now=0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("t", now=0.0) == pytest.approx(0.5)
    assert limiter.take("t", now=0.5) == 0.0  # one token back after half a second
    assert limiter.take("other", now=0.5) == 0.0  # buckets are per token


def test_run_cursor_round_trips_and_refuses_other_text() -> None:
    member = "inv-7:ü".encode()
    assert decode_cursor(encode_cursor(1764950000.125, member)) == (1764950000.125, member)
    for bad in ("", "abc", "1.5_", "1.5_zz", "1.5_abc", "-1_00"):
        with pytest.raises(BadCursor):
            decode_cursor(bad)


def test_audit_cursor_is_a_stream_id_within_64_bits() -> None:
    assert _stream_id("1700000000000-3") == (1700000000000, 3)
    for bad in ("1-", "-1", "a-1", "18446744073709551616-0"):
        with pytest.raises(BadAuditCursor):
            _stream_id(bad)


def test_run_filter_reads_results_and_stored_json_alike() -> None:
    where = RunFilter(rule="paid_orders", trigger_kind="cdc")
    stored = {"status": "success", "plugin": "echo", "trigger_kind": "cdc", "trigger": {"rule": "paid_orders"}}
    assert where.needs_reading and where.accepts(stored)
    assert not where.accepts({**stored, "trigger": {"rule": "other"}})
    assert not RunFilter(plugin="echo").needs_reading  # its index already filters


def test_problem_fields_are_named_without_the_location() -> None:
    assert _field_name(("body", "params", "n")) == "params.n"
    assert _field_name(("query", "limit")) == "limit"
    assert _field_name(("body",)) == "body"


def test_config_tokens_are_masked_in_config_show() -> None:
    digest = token_hash("cdcf_0123456789ab_" + "x" * 43)
    settings = Settings(api={"tokens": [ApiToken(name="ci", scopes=["read"], sha256=digest)]})  # type: ignore[arg-type]
    shown = masked_settings(settings)
    assert digest not in str(shown)
    assert shown["api"]["tokens"][0]["name"] == "ci"
