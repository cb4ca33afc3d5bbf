"""Seed 000's rules: parameters bound by name, per-trigger settings, whole values and nested templates."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from schemas.config import parse_rules
from schemas.errors import ConfigError
from schemas.manifest import PluginManifest
from schemas.rules import RulesConfig
from streams import mapping
from streams.mapping import MappingError, compile_params
from streams.matcher import Matcher
from streams.validation import check_against_plugins, discover_manifests
from tests.support import EXAMPLES_DIR

MANIFESTS, _ = discover_manifests([EXAMPLES_DIR])
TABLE = "derived_intl_teacher_data"
COLUMNS = frozenset({"id", "teacher_id", "name", "country", "kind", "lessons", "is_valid"})

# Seed 000's monitored_tables example (a Python dict there), written as YAML.
SEED_000 = f"""
monitored_tables:
  {TABLE}:
    triggers: [data_processor, es_indexer]
    conditions: {{is_valid: true}}
    operations: [INSERT, UPDATE]
"""


def event(op: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "before": before,
        "after": after,
        "op": op,
        "ts_ms": 1700000000000,
        "event_id": "1:mysql-bin.000001:400:0",
        "source": {"db": "school", "table": TABLE},
    }


def rules(data: dict[str, Any] | str) -> RulesConfig:
    return parse_rules(yaml.safe_load(data) if isinstance(data, str) else data, "rules.yaml", "school")


def params_by_plugin(matcher: Matcher, ev: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p.plugin: p.invocation["params"] for p in matcher.match(ev)}


ROW = {"id": 7, "teacher_id": "T-7", "name": "Ann", "country": "DE", "kind": "a", "lessons": 1200, "is_valid": 1}


def test_seed_000_verbatim_is_accepted_and_binds_each_plugins_parameters_by_name() -> None:
    config = rules(SEED_000)
    assert check_against_plugins(config, MANIFESTS, columns=lambda db, table: COLUMNS) == []
    matcher = Matcher.compile(config, manifests=MANIFESTS)
    got = params_by_plugin(matcher, event("c", None, ROW))
    assert got == {
        # declared: operation, teacher_id, is_valid, lessons; `operation` is the change's (no such column)
        "data_processor": {"teacher_id": "T-7", "is_valid": 1, "lessons": 1200, "operation": "INSERT"},
        # declared: ..., row, operation, table, event_id: the change's; no column is named like
        # doc_id/document/op/index/..., so the runner applies their defaults
        "es_indexer": {"row": ROW, "operation": "INSERT", "table": TABLE, "event_id": "1:mysql-bin.000001:400:0"},
    }
    update = params_by_plugin(matcher, event("u", ROW, {**ROW, "lessons": 7}))
    assert update["data_processor"]["operation"] == "UPDATE" and update["data_processor"]["lessons"] == 7
    assert matcher.match(event("c", None, {**ROW, "is_valid": 0})) == []  # is_valid false: nothing runs
    assert matcher.match(event("d", ROW, None)) == []  # DELETE is not among the rule's operations


def test_binding_reads_a_delete_from_before_and_a_column_wins_over_a_change_value() -> None:
    declared = {
        "id": {},
        "operation": {},
        "db": {},
        "table": {},
        "event_id": {},
        "ts_ms": {},
        "data": {},
        "before": {},
        "after": {},
        "changes": {},
        "absent": {"default": 3},
    }
    manifest = PluginManifest.model_validate({"name": "p", "entry_point": "m.f", "parameters": declared})
    matcher = Matcher.compile(rules({"monitored_tables": {TABLE: {"triggers": ["p"]}}}), manifests={"p": manifest})
    ((deleted,),) = [[p.invocation["params"] for p in matcher.match(event("d", ROW, None))]]
    assert deleted == {
        "id": 7,
        "operation": "DELETE",
        "db": "school",
        "table": TABLE,
        "event_id": "1:mysql-bin.000001:400:0",
        "ts_ms": 1700000000000,
        "data": ROW,
        "before": ROW,
        "after": None,
        "changes": {col: [value, None] for col, value in ROW.items()},
    }  # `absent` binds nothing: the runner applies its default
    with_column = {**ROW, "operation": "archive", "table": "t2"}
    ((inserted,),) = [[p.invocation["params"] for p in matcher.match(event("c", None, with_column))]]
    assert inserted["operation"] == "archive" and inserted["table"] == "t2"  # columns first
    ((updated,),) = [[p.invocation["params"] for p in matcher.match(event("u", ROW, {**ROW, "lessons": 8}))]]
    assert updated["changes"] == {"lessons": [1200, 8]}


def test_a_required_parameter_nothing_can_bind_is_an_error_naming_rule_plugin_and_parameter() -> None:
    manifest = PluginManifest.model_validate(
        {
            "name": "mailer",
            "entry_point": "m.f",
            "parameters": {"address": {"required": True}, "operation": {"required": True}, "cc": {"default": "x"}},
        }
    )
    config = rules({"monitored_tables": {TABLE: {"name": "notify", "triggers": ["echo", "mailer"]}}})
    manifests = {**MANIFESTS, "mailer": manifest}
    problems = check_against_plugins(config, manifests, columns=lambda db, table: COLUMNS)
    assert problems == [
        (
            f"monitored_tables.{TABLE} (rule notify).triggers[1]",
            "plugin mailer requires parameter 'address', which the rule does not give and which is neither a column "
            f"of school.{TABLE} nor one of after, before, changes, data, db, event_id, operation, row, table, ts_ms: "
            "give it in params",
        )
    ]
    assert check_against_plugins(config, manifests, columns=lambda db, table: COLUMNS | {"address"}) == []
    # the table's columns unknown (no server, no table yet): it may be a column, nothing to say
    assert check_against_plugins(config, manifests, columns=lambda db, table: None) == []
    assert check_against_plugins(config, manifests) == []


def test_trigger_settings_override_the_rules_params_and_priority() -> None:
    config = rules(
        f"""
monitored_tables:
  {TABLE}:
    name: teachers
    triggers:
      - echo
      - plugin: es_indexer
        params: {{index: teachers_v2, document: {{id: "{{after.id}}", tags: ["{{table}}", "{{after.kind}}"]}}}}
        priority: high
    params: {{doc_id: "{{after.teacher_id}}", index: teachers}}
    priority: low
"""
    )
    problems = dict(check_against_plugins(config, MANIFESTS, columns=lambda db, table: COLUMNS))
    # the rule's params apply to echo too, which declares neither
    assert set(problems) == {f"monitored_tables.{TABLE} (rule teachers).params.{p}" for p in ("doc_id", "index")}
    assert (
        "plugin echo does not declare parameter 'doc_id'"
        in problems[f"monitored_tables.{TABLE} (rule teachers).params.doc_id"]
    )

    matcher = Matcher.compile(config, manifests=MANIFESTS)
    planned = {p.plugin: p.invocation for p in matcher.match(event("c", None, ROW))}
    assert planned["es_indexer"]["params"] == {
        "doc_id": "T-7",
        "index": "teachers_v2",
        "document": {"id": 7, "tags": [TABLE, "a"]},
    }
    assert planned["es_indexer"]["priority"] == "high"
    assert planned["echo"]["params"] == {"doc_id": "T-7", "index": "teachers"} and planned["echo"]["priority"] == "low"


def test_a_triggers_undeclared_parameter_names_the_trigger() -> None:
    config = rules({"monitored_tables": {TABLE: {"triggers": ["echo", {"plugin": "es_indexer", "params": {"x": 1}}]}}})
    problems = dict(check_against_plugins(config, MANIFESTS))
    assert list(problems) == [f"monitored_tables.{TABLE} (rule {TABLE}).triggers[1].params.x"]


@pytest.mark.parametrize(
    ("triggers", "reason"),
    [
        (["echo", {"plugin": "echo"}], "[1]: plugin 'echo' is listed twice"),
        (["echo", {"plugin": "es_indexer", "parms": {}}], "[1].parms: Extra inputs are not permitted"),
        (["echo", {"plugin": "es_indexer", "priority": "urgent"}], "[1].priority: Input should be"),
        (["echo", 3], "[1]: a plugin name or a mapping {plugin, params, priority}"),
    ],
)
def test_bad_trigger_entries_name_the_entry(triggers: list[Any], reason: str) -> None:
    with pytest.raises(ConfigError) as err:
        rules({"monitored_tables": {TABLE: {"triggers": triggers}}})
    assert f"rules.yaml: monitored_tables.{TABLE}.triggers: {reason}" in str(err.value)


def test_old_configs_keep_their_meaning() -> None:
    config = rules({"monitored_tables": {TABLE: {"triggers": ["a", "b"], "params": {"id": "{after.id}"}}}})
    assert config.rules[0].triggers == ["a", "b"] and config.rules[0].trigger_settings == {}
    planned = Matcher.compile(config, manifests=MANIFESTS).match(event("c", None, ROW))
    assert [(p.plugin, p.invocation["params"], p.invocation["priority"]) for p in planned] == [
        ("a", {"id": 7}, "normal"),
        ("b", {"id": 7}, "normal"),
    ]
    assert planned[0].invocation["params"] is planned[1].invocation["params"]  # built once per change


UPDATE = event("u", {"id": 7, "kind": "a", "tags": ["x"]}, {"id": 7, "kind": "b", "tags": ["x"]})


def test_whole_values_keep_their_type_and_nested_templates_are_filled() -> None:
    build = compile_params(
        {
            "after": "{after}",
            "before": "{before}",
            "row": "{row}",
            "changes": "{changes}",
            "changed_kind": "{changes.kind}",
            "document": {"id": "{after.id}", "tags": ["{table}", "{after.kind}", 3], "fixed": {"a": [1]}},
            "text": "row {after}",
            "json_literal": '{"a": 1}',
            "constant": {"a": ["{", "}"]},
        }
    )
    assert build(UPDATE) == {
        "after": UPDATE["after"],
        "before": UPDATE["before"],
        "row": UPDATE["after"],
        "changes": {"kind": ["a", "b"]},
        "changed_kind": ["a", "b"],
        "document": {"id": 7, "tags": [TABLE, "b", 3], "fixed": {"a": [1]}},
        "text": 'row {"id":7,"kind":"b","tags":["x"]}',
        "json_literal": '{"a": 1}',
        "constant": {"a": ["{", "}"]},
    }
    assert compile_params({"a": "{row}"})(event("d", {"id": 1}, None)) == {"a": {"id": 1}}
    assert compile_params({"a": "{after}"})(event("d", {"id": 1}, None)) == {"a": None}


@pytest.mark.parametrize(
    ("template", "where", "why"),
    [
        ("{after.id", "params.x", "unclosed placeholder '{after.id'"),
        ("id={after.id and {table}", "params.x", "unclosed placeholder '{after.id and '"),
        ({"doc": ["ok", "{row.id"]}, "params.x.doc[1]", "unclosed placeholder"),
        ("{after id}", "params.x", "not a placeholder: '{after id}'"),
        ("{nope}", "params.x", "unknown placeholder {nope}"),
        ("{after.}", "params.x", "not a placeholder"),
    ],
)
def test_malformed_placeholders_are_errors_naming_the_key(template: Any, where: str, why: str) -> None:
    with pytest.raises(MappingError) as err:
        compile_params({"x": template})
    assert err.value.key == where and why in str(err.value)
    with pytest.raises(ConfigError) as cerr:
        Matcher.compile(rules({"monitored_tables": {TABLE: {"triggers": ["echo"], "params": {"x": template}}}}))
    assert f"monitored_tables.{TABLE} (rule {TABLE}): {where}: " in str(cerr.value)


def test_placeholders_must_name_columns_of_the_table_when_it_exists() -> None:
    config = rules(
        {
            "monitored_tables": {
                TABLE: {
                    "triggers": ["echo", {"plugin": "es_indexer", "params": {"document": {"n": ["{before.nmae}"]}}}],
                    "params": {"message": "{after.nme} {row.id}"},
                }
            }
        }
    )
    problems = check_against_plugins(config, MANIFESTS, columns=lambda db, table: COLUMNS)
    columns = ", ".join(sorted(COLUMNS))
    where = f"monitored_tables.{TABLE} (rule {TABLE})"
    assert (f"{where}.params.message", f"no column 'nme' in school.{TABLE} (columns: {columns})") in problems
    assert (
        f"{where}.triggers[1].params.document.n[0]",
        f"no column 'nmae' in school.{TABLE} (columns: {columns})",
    ) in problems
    assert not [p for p in check_against_plugins(config, MANIFESTS, columns=lambda db, t: None) if "no column" in p[1]]


def test_templates_are_compiled_once_per_rule_not_per_change(monkeypatch: pytest.MonkeyPatch) -> None:
    config = rules(
        {
            "monitored_tables": {
                TABLE: [
                    {
                        "name": "a",
                        "triggers": ["echo"],
                        "params": {"message": "{after.name} of {table}", "data": ["{row}"]},
                    },
                    {"name": "b", "triggers": ["data_processor", "es_indexer"]},
                ]
            }
        }
    )
    matcher = Matcher.compile(config, manifests=MANIFESTS)

    def no_parsing(*args: Any) -> Any:
        raise AssertionError("a template was parsed while matching")

    monkeypatch.setattr(mapping, "_pieces", no_parsing)
    monkeypatch.setattr(mapping, "_resolver", no_parsing)
    planned = matcher.match(event("c", None, ROW))
    assert [p.plugin for p in planned] == ["echo", "data_processor", "es_indexer"]
    assert planned[0].invocation["params"] == {"message": f"Ann of {TABLE}", "data": [ROW]}


def test_explain_shows_each_plugins_params_bound_by_name() -> None:
    from streams.matcher import explain

    config = rules(SEED_000)
    (verdict,) = explain(Matcher.compile(config, manifests=MANIFESTS), config, event("c", None, ROW))
    assert verdict.matched
    assert (
        "data_processor with params {'teacher_id': 'T-7', 'is_valid': 1, 'lessons': 1200, 'operation': 'INSERT'}"
        in (verdict.reason)
    )
    assert "; es_indexer with params {'row': {" in verdict.reason
