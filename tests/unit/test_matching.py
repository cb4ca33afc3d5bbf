"""Unit tests of params mapping and rule matching (pure logic)."""

from __future__ import annotations

import pytest

from schemas.config import parse_rules
from schemas.errors import ConfigError
from streams.mapping import MappingError, compile_params
from streams.matcher import Matcher

EVENT = {
    "before": {"id": 5, "status": "new"},
    "after": {"id": 5, "status": "paid"},
    "op": "u",
    "ts_ms": 1,
    "event_id": "1:mysql-bin.000001:400:0",
    "source": {"db": "shop", "table": "orders"},
}


def test_mapping_keeps_types_for_whole_placeholders() -> None:
    build = compile_params(
        {
            "order_id": "{after.id}",
            "old": "{before.status}",
            "what": "{operation} of {table} #{row.id}",
            "fixed": 3,
            "event": "{event_id}",
            "db": "{db}",
        }
    )
    assert build(EVENT) == {
        "order_id": 5,
        "old": "new",
        "what": "UPDATE of orders #5",
        "fixed": 3,
        "event": "1:mysql-bin.000001:400:0",
        "db": "shop",
    }


def test_mapping_rejects_unknown_placeholders() -> None:
    with pytest.raises(MappingError, match="params.x"):
        compile_params({"x": "{nope.id}"})


def rules(spec: dict):
    return parse_rules({"monitored_tables": spec}, "test.yaml", "shop")


def test_match_filters_by_operation_and_condition_and_fans_out() -> None:
    matcher = Matcher.compile(
        rules(
            {
                "orders": [
                    {
                        "name": "paid",
                        "triggers": ["mail", "index"],
                        "operations": ["UPDATE"],
                        "conditions": {"status": {"changed": True}, "after.status": "paid"},
                        "params": {"id": "{after.id}"},
                    },
                    {"name": "inserts", "triggers": ["mail"], "operations": ["INSERT"]},
                ],
            }
        )
    )
    planned = matcher.match(EVENT)
    assert [(p.plugin, p.invocation["trigger"]["rule"]) for p in planned] == [("mail", "paid"), ("index", "paid")]
    assert planned[0].invocation["params"] == {"id": 5}
    assert planned[0].invocation["invocation_id"] != planned[1].invocation["invocation_id"]
    # the same change matched again yields the same ids: downstream de-duplication works
    assert [p.invocation["invocation_id"] for p in matcher.match(EVENT)] == [
        p.invocation["invocation_id"] for p in planned
    ]
    assert matcher.match({**EVENT, "source": {"db": "shop", "table": "other"}}) == []


def test_bad_rule_conditions_are_reported_with_rule_and_key() -> None:
    with pytest.raises(ConfigError) as err:
        Matcher.compile(rules({"orders": {"triggers": ["a"], "conditions": {"x": {"bogus": 1}}}}), "rules.yaml")
    assert "rules.yaml" in str(err.value) and "rule orders" in str(err.value) and "conditions.x" in str(err.value)
