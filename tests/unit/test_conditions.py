"""Unit tests of rule conditions (pure logic): every operator and combinator, on before and after."""

from __future__ import annotations

import pytest

from streams.conditions import ConditionError, compile_conditions

ROW = {"id": 7, "status": "paid", "is_valid": 1, "price": "12.50", "email": "ann@example.com", "deleted_at": None}


def holds(spec: dict, after: dict | None = ROW, before: dict | None = None) -> bool:
    return compile_conditions(spec)(before, after)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ({}, True),
        ({"is_valid": True}, True),  # TINYINT 1 equals true, as in the original design
        ({"is_valid": False}, False),
        ({"price": 12.5}, True),  # DECIMAL string compared numerically
        ({"status": "paid"}, True),
        ({"missing": None}, False),
        ({"status": {"eq": "paid"}}, True),
        ({"status": {"ne": "paid"}}, False),
        ({"status": {"ne": "new"}}, True),
        ({"status": {"in": ["paid", "shipped"]}}, True),
        ({"status": {"not_in": ["paid"]}}, False),
        ({"id": {"gt": 6}}, True),
        ({"id": {"gt": 7}}, False),
        ({"id": {"gte": 7, "lte": 7}}, True),
        ({"price": {"lt": "100"}}, True),
        ({"price": {"gt": 20}}, False),
        ({"deleted_at": {"is_null": True}}, True),
        ({"email": {"is_null": False}}, True),
        ({"email": {"like": "%@example.com"}}, True),
        ({"email": {"like": "ann@%.org"}}, False),
        ({"email": {"like": "a_n@%"}}, True),
        ({"email": {"regex": "^ann@"}}, True),
        ({"email": {"regex": "bob"}}, False),
        ({"any": [{"status": "new"}, {"id": 7}]}, True),
        ({"any": [{"status": "new"}, {"id": 8}]}, False),
        ({"all": [{"status": "paid"}, {"id": 7}]}, True),
        ({"all": [{"status": "paid"}, {"id": 8}]}, False),
        ({"not": {"status": "paid"}}, False),
        ({"status": "paid", "id": 8}, False),
    ],
)
def test_operators_and_combinators(spec: dict, expected: bool) -> None:
    assert holds(spec) is expected


def test_before_after_and_changed() -> None:
    before = {**ROW, "status": "new"}
    assert holds({"before.status": "new", "after.status": "paid"}, ROW, before)
    assert holds({"status": {"changed": True}}, ROW, before)
    assert not holds({"price": {"changed": True}}, ROW, before)
    assert holds({"price": {"changed": False}}, ROW, before)
    # insert: no before image, so every column counts as changed; before.* conditions fail
    assert holds({"status": {"changed": True}}, ROW, None)
    assert not holds({"before.status": "new"}, ROW, None)


def test_bare_column_uses_before_image_on_delete() -> None:
    assert holds({"status": "paid"}, after=None, before=ROW)
    assert not holds({"after.status": "paid"}, after=None, before=ROW)


@pytest.mark.parametrize(
    "spec, key",
    [
        ({"status": {"equals": 1}}, "conditions.status"),
        ({"id": {"gt": [1]}}, "conditions.id.gt"),
        ({"id": {"in": 3}}, "conditions.id.in"),
        ({"email": {"regex": "("}}, "conditions.email.regex"),
        ({"any": []}, "conditions.any"),
        ({"any": [{"x": {"is_null": "yes"}}]}, "conditions.any[0].x.is_null"),
        ({"before.": 1}, "conditions.before."),
    ],
)
def test_bad_conditions_name_the_key(spec: dict, key: str) -> None:
    with pytest.raises(ConditionError) as err:
        compile_conditions(spec)
    assert err.value.key == key, str(err.value)
