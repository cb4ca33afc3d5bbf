"""Rules checked against plugin.json, `rules check`, and `rules explain` (why a rule does not match)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from schemas.config import parse_rules
from schemas.errors import ConfigError
from streams.conditions import compile_conditions
from streams.conditions import explain as explain_conditions
from streams.matcher import Matcher, explain
from streams.validation import check_against_plugins, discover_manifests, validated_matcher
from tests.support import EXAMPLES_DIR, REPO_ROOT, isolated_config_data, write_config

MANIFESTS, _ = discover_manifests([EXAMPLES_DIR])

EVENT = {
    "before": {"id": 5, "status": "new", "amount": "10.00"},
    "after": {"id": 5, "status": "paid", "amount": "99.50"},
    "op": "u",
    "ts_ms": 1,
    "event_id": "1:mysql-bin.000001:400:0",
    "source": {"db": "shop", "table": "orders"},
}


def rules(data: dict):
    return parse_rules(data, "rules.yaml", "shop")


def test_unknown_plugin_undeclared_and_missing_params_are_named() -> None:
    problems = dict(
        check_against_plugins(
            rules(
                {
                    "monitored_tables": {
                        "orders": [
                            {
                                "name": "ok",
                                "triggers": ["data_processor"],
                                "params": {"operation": "x", "teacher_id": "{after.id}"},
                            },
                            {"name": "typo", "triggers": ["echo", "nosuch"], "params": {"mesage": "{after.id}"}},
                            # params given: all required ones must be (none given would bind them by name)
                            {
                                "name": "unmapped",
                                "triggers": ["data_processor"],
                                "params": {"teacher_id": "{after.id}"},
                            },
                        ]
                    },
                    "schedules": {
                        "nightly": {
                            "plugin": "data_processor",
                            "cron": "0 2 * * *",
                            "params": {"operation": "report", "lessons": "x"},
                        },
                        "ghost": {"plugin": "ghost", "interval_seconds": 5},
                    },
                }
            ),
            MANIFESTS,
        )
    )
    assert set(problems) == {
        "monitored_tables.orders (rule typo).triggers[1]",
        "monitored_tables.orders (rule typo).params.mesage",
        "monitored_tables.orders (rule unmapped).params",
        "schedules.nightly.params.lessons",
        "schedules.ghost.plugin",
    }
    assert "unknown plugin 'nosuch'" in problems["monitored_tables.orders (rule typo).triggers[1]"]
    assert "declared: data, message, mode, seconds" in problems["monitored_tables.orders (rule typo).params.mesage"]
    assert "'operation'" in problems["monitored_tables.orders (rule unmapped).params"]
    assert "expected integer" in problems["schedules.nightly.params.lessons"]


def test_validated_matcher_reports_conditions_and_plugin_problems_together(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        isolated_config_data(
            "val", {"monitored_tables": {"orders": {"triggers": ["nosuch"], "conditions": {"x": {"bogus": 1}}}}}
        ),
    )
    with pytest.raises(ConfigError) as err:
        validated_matcher(config)
    text = str(err.value)
    assert str(config.path) in text and "rule orders" in text and "conditions.x" in text and "'nosuch'" in text


def test_rules_check_cli_names_file_rule_and_key(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        isolated_config_data("val", {"monitored_tables": {"orders": {"triggers": ["echo"], "params": {"nope": 1}}}}),
    )
    out = subprocess.run(
        [sys.executable, "-m", "console.cli", "--config", str(config.path), "rules", "check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert (
        f"{config.path}: monitored_tables.orders (rule orders).params.nope: plugin echo does not declare" in out.stderr
    )


def test_explain_conditions_names_the_failing_key_and_value() -> None:
    before, after = EVENT["before"], EVENT["after"]
    assert explain_conditions({"status": "paid", "amount": {"gt": 50}}, before, after) is None
    assert (
        explain_conditions({"amount": {"gt": 100}}, before, after)
        == "conditions.amount.gt: expected gt 100, row.amount is '99.50'"
    )
    assert (
        explain_conditions({"id": {"changed": True}}, before, after)
        == "conditions.id.changed: expected True, id was 5, is 5"
    )
    assert explain_conditions({"any": [{"status": "x"}, {"before.status": {"in": ["a"]}}]}, before, after) == (
        "conditions.any: none holds (conditions.any[0].status.eq: expected eq 'x', row.status is 'paid'; "
        "conditions.any[1].before.status.in: expected in ['a'], before.status is 'new')"
    )
    assert (
        explain_conditions({"not": {"status": "paid"}}, before, after) == "conditions.not: the negated condition holds"
    )
    assert (
        explain_conditions({"all": [{"id": 5}, {"vip": True}]}, before, after)
        == "conditions.all[1].vip.eq: expected eq True, row.vip is (missing)"
    )


@pytest.mark.parametrize(
    "spec",
    [
        {"status": "paid"},
        {"amount": {"gte": 99.5, "lt": 100}},
        {"any": [{"status": "x"}, {"id": 5}]},
        {"not": {"status": "new"}},
        {"before.status": {"ne": "new"}},
        {"status": {"like": "p%"}},
        {"x": {"is_null": True}},
    ],
)
def test_explain_agrees_with_the_compiled_predicate(spec: dict) -> None:
    holds = compile_conditions(spec)(EVENT["before"], EVENT["after"])
    assert (explain_conditions(spec, EVENT["before"], EVENT["after"]) is None) == holds


def test_explain_rules_for_an_event() -> None:
    config = rules(
        {
            "monitored_tables": {
                "orders": [
                    {
                        "name": "paid",
                        "triggers": ["mail"],
                        "operations": ["UPDATE"],
                        "conditions": {"status": "paid"},
                        "params": {"id": "{after.id}"},
                    },
                    {"name": "big", "triggers": ["mail"], "conditions": {"amount": {"gt": 100}}},
                    {"name": "inserts", "triggers": ["mail"], "operations": ["INSERT"]},
                    {"name": "off", "triggers": ["mail"], "enabled": False},
                ],
                "other": {"triggers": ["mail"]},
            }
        }
    )
    out = {e.rule: e for e in explain(Matcher.compile(config), config, EVENT)}
    assert set(out) == {"paid", "big", "inserts", "off"}
    assert out["paid"].matched and "{'id': 5}" in out["paid"].reason
    assert not out["big"].matched and "conditions.amount.gt" in out["big"].reason
    assert out["inserts"].reason == "operation UPDATE not in INSERT"
    assert out["off"].reason == "rule is disabled"


def test_rules_explain_cli(tmp_path: Path) -> None:
    config = write_config(
        tmp_path,
        isolated_config_data(
            "val",
            {
                "monitored_tables": {
                    "shop.orders": [
                        {"name": "paid", "triggers": ["echo"], "conditions": {"status": "paid"}},
                        {"name": "big", "triggers": ["echo"], "conditions": {"amount": {"gt": 100}}},
                    ]
                }
            },
        ),
    )
    event = tmp_path / "event.json"
    event.write_bytes(orjson.dumps(EVENT))
    out = subprocess.run(
        [sys.executable, "-m", "console.cli", "--config", str(config.path), "rules", "explain", str(event)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("MATCH  paid: -> echo")
    assert lines[1] == "no     big: conditions.amount.gt: expected gt 100, row.amount is '99.50'"
