"""Properties of rule conditions and the matcher over arbitrary data (issue 17, item 6): a condition
either compiles or raises ConditionError naming its place; a compiled condition evaluates to a bool
on any row (NaN, integers past 64 bits, deep nesting, wrong types) and `explain` agrees with it; the
matcher's indexes never change what matches, and a rules file whose conditions do not compile is a
ConfigError, never another exception."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.config import parse_rules
from schemas.errors import ConfigError
from streams.conditions import OPERATORS, ConditionError, compile_conditions, explain
from streams.event_filter import FilterError, compile_where
from streams.matcher import Matcher
from tests.support.strategies import DEEP, FLOATS, HUGE_INTS, INTS, JSON, SCALARS, TEXT, expand, json_values

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
COLUMN_NAMES = ["status", "amount", "x"]
COLUMNS = st.one_of(
    st.sampled_from([*COLUMN_NAMES, "after.status", "before.amount", "after.x", "row.x"]),
    st.sampled_from([*COLUMN_NAMES, "before.status", "after.amount"]),
    st.sampled_from(["before.", "after", ""]),
    TEXT,
)
# Rows mostly over the columns the conditions name, so that conditions meet the values they test.
ROW_VALUES = st.one_of(SCALARS, HUGE_INTS, DEEP, json_values(6))
ROWS = st.one_of(
    st.none(),
    st.builds(
        lambda known, other: {**other, **known},
        st.fixed_dictionaries({}, optional=dict.fromkeys(COLUMN_NAMES, ROW_VALUES)),
        st.dictionaries(TEXT, ROW_VALUES, max_size=2),
    ),
)
ARGS = st.one_of(SCALARS, HUGE_INTS, DEEP, json_values(4))


def _op_and_arg(op: str) -> st.SearchStrategy[tuple[str, Any]]:
    return st.tuples(st.just(op), st.one_of(OPERATOR_ARGS[op], ARGS) if op in ("gt", "is_null") else OPERATOR_ARGS[op])


NUMBERS = st.one_of(INTS, FLOATS, st.sampled_from(["12", "1e400", "nan", "2026-01-01", "paid"]))
# Each operator with arguments of the type it takes (and a chance of any), so most conditions compile.
OPERATOR_ARGS: dict[str, st.SearchStrategy[Any]] = {
    "eq": ARGS,
    "ne": ARGS,
    "in": st.lists(ARGS, max_size=3),
    "not_in": st.lists(ARGS, max_size=3),
    **dict.fromkeys(["gt", "gte", "lt", "lte"], NUMBERS),
    "is_null": st.booleans(),
    "changed": st.booleans(),
    "like": st.one_of(TEXT, st.sampled_from(["%", "a_%", "\\%x", "\\"])),
    "regex": st.one_of(TEXT, st.sampled_from(["^a", "(", "[", "a{2,}", "(?P<x>.)"])),
}
TESTS = st.one_of(
    ARGS,
    st.builds(dict, st.lists(st.sampled_from(sorted(OPERATORS)).flatmap(_op_and_arg), min_size=1, max_size=3)),
    st.dictionaries(st.one_of(st.sampled_from(sorted(OPERATORS)), TEXT), ARGS, min_size=1, max_size=2),
)


def leaf_conditions() -> st.SearchStrategy[dict[str, Any]]:
    """Column conditions: a bare value (equality) or operators with arguments."""
    return st.dictionaries(COLUMNS, TESTS, min_size=1, max_size=3)


def condition_specs() -> st.SearchStrategy[Any]:
    """Mostly well-shaped specs with combinators, sometimes any JSON at all."""
    shaped = st.recursive(
        leaf_conditions(),
        lambda inner: st.one_of(
            st.builds(lambda v: {"not": v}, inner),
            st.builds(lambda k, v: {k: v}, st.sampled_from(["all", "any"]), st.lists(inner, min_size=1, max_size=3)),
            st.builds(lambda a, b: {**a, **b}, inner, inner),
        ),
        max_leaves=6,
    )
    return st.one_of(shaped, shaped, shaped, JSON)


def _compiled(spec: Any) -> Any:
    try:
        return compile_conditions(spec)
    except ConditionError as e:
        assert str(e).startswith("conditions") and e.reason
        return None


@SETTINGS
@given(condition_specs(), ROWS, ROWS)
def test_a_condition_compiles_or_names_its_place_and_evaluates_on_any_row(spec: Any, before: Any, after: Any) -> None:
    spec, before, after = expand((spec, before, after))
    predicate = _compiled(spec)
    if predicate is None:
        return
    holds = predicate(before, after)
    assert type(holds) is bool
    reason = explain(spec, before, after)
    assert (reason is None) == holds, (reason, holds)
    assert reason is None or reason.startswith("conditions")


@SETTINGS
@given(condition_specs(), st.lists(st.tuples(ROWS, ROWS), min_size=1, max_size=4))
def test_the_matcher_matches_what_evaluating_every_rule_matches(spec: Any, rows: list[tuple[Any, Any]]) -> None:
    spec, rows = expand((spec, rows))
    data = {"monitored_tables": {"shop.orders": [{"name": "r0", "conditions": spec, "triggers": ["p"]}, ALWAYS]}}
    try:
        rules = parse_rules(data, "rules.yaml", "shop")
        matcher = Matcher.compile(rules, "rules.yaml")
    except ConfigError as e:
        assert str(e).startswith("rules.yaml: ")
        return
    brute = compile_conditions(spec)
    for before, after in rows:
        event = {"op": "u", "before": before, "after": after, "event_id": "1:f:4:0", "source": SOURCE}
        matched = [p.invocation["trigger"]["rule"] for p in matcher.match(event)]
        assert matched == (["r0"] if brute(before, after) else []) + ["always"]


ALWAYS = {"name": "always", "triggers": ["p"]}
SOURCE = {"db": "shop", "table": "orders"}


@pytest.mark.parametrize(
    "spec",
    [
        {"amount": {"gt": 10**400}},  # YAML reads any integer: float() of it overflows
        {"amount": {"lte": -(10**400), "gte": 1}},
        {"amount": 10**400},
        {"amount": {"in": [10**400, 2**64]}},
        {"any": [{"amount": {"lt": 10**5000}}]},
    ],
)
def test_huge_integers_in_a_condition_compile_and_evaluate(spec: dict[str, Any]) -> None:
    data = {"monitored_tables": {"shop.orders": {"conditions": spec, "triggers": ["p"]}}}
    matcher = Matcher.compile(parse_rules(data, "rules.yaml", "shop"))
    for value in (1, 10**400, -(10**400), 1e308, "1e400", float("nan"), "12"):
        event = {"op": "u", "before": None, "after": {"amount": value}, "event_id": "e", "source": SOURCE}
        assert len(matcher.match(event)) == int(compile_conditions(spec)(None, {"amount": value}))


WHERE_TEXTS = st.one_of(
    TEXT,
    st.builds(
        lambda field, op, value: f"{field}{op}{value}",
        st.sampled_from(["after.status", "amount", "before.x", "params.n", "x"]),
        st.sampled_from(["=", "==", "!=", ">", ">=", "<", "<=", "~", "=>", " = ", "=<"]),
        st.one_of(
            TEXT,
            st.sampled_from(["[" * 1100, "{a: " * 400, "9" * 5000, "2026-13-45", "nan", ".inf", "'x'", "&a", "*a"]),
        ),
    ),
)


@SETTINGS
@given(st.lists(WHERE_TEXTS, min_size=1, max_size=3), ROWS, ROWS)
def test_a_where_filter_compiles_or_is_a_filter_error_and_evaluates_on_any_row(
    texts: list[str], before: Any, after: Any
) -> None:
    before, after = expand((before, after))
    try:
        predicate = compile_where(texts)
    except FilterError as e:
        assert str(e).startswith("--where") and "\n" not in str(e).strip()
        return
    assert predicate is not None and type(predicate(before, after)) is bool
