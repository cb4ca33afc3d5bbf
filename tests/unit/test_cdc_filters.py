"""cdc.include / cdc.exclude: which tables are selected (pure logic; the reader and the snapshot on the real
stack are in tests/integration/test_cdc_filters.py)."""

from __future__ import annotations

import pytest

from cdc.filters import FilterError, TableSelection


def test_include_adds_exclude_wins_rule_tables_stay() -> None:
    s = TableSelection([("shop", "orders")], include=["demo.*", "*.audit_?"], exclude=["demo.secret*", "x.audit_1"])
    assert ("shop", "orders") in s
    assert ("demo", "teachers") in s and ("crm", "audit_1") in s
    assert ("demo", "secret_pay") not in s  # exclude beats include
    assert ("x", "audit_1") not in s and ("x", "audit_2") in s
    assert ("shop", "customers") not in s and ("Demo", "teachers") not in s  # case-sensitive, like table names


def test_excluding_a_rule_table_is_an_error_naming_both() -> None:
    with pytest.raises(FilterError, match=r"'shop\.\*' excludes shop\.orders, which a rule monitors"):
        TableSelection([("shop", "orders")], exclude=["shop.*"])


@pytest.mark.parametrize("pattern", ["orders", ".orders", "shop."])
def test_a_pattern_without_db_and_table_is_an_error_naming_it(pattern: str) -> None:
    with pytest.raises(FilterError, match=f"cdc.include: table pattern {pattern!r}: expected 'db.table'"):
        TableSelection([], include=[pattern])
    with pytest.raises(FilterError, match=f"cdc.exclude: table pattern {pattern!r}"):
        TableSelection([], exclude=[pattern])


def test_library_filters_match_schema_and_table_parts() -> None:
    filters = TableSelection([("shop", "orders")], include=["demo.t_*"]).library_filters()
    schemas, tables = filters["only_schemas"], filters["only_tables"]
    assert "shop" in schemas and "demo" in schemas and "crm" not in schemas
    assert "orders" in tables and "t_1" in tables and "users" not in tables
    assert TableSelection([]).library_filters() == {}
