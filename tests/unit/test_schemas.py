"""Unit tests of the contracts: config and manifest errors name the place, params coerce, events round-trip."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.config import load_config
from schemas.errors import ConfigError
from schemas.export import EXPORTED, export_schemas
from schemas.invocation import CdcTrigger, Invocation, invocation_id_for
from schemas.manifest import ParamError, load_manifest
from schemas.row_change import RowChange


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_config_defaults_rules_and_relative_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "c.yaml",
        """
runners: {plugin_dirs: [plugins]}
monitored_tables:
  teachers: {triggers: [a, b], conditions: {is_valid: true}, operations: [insert, update]}
  shop.orders:
    - {name: paid, triggers: [a], conditions: {status: {eq: paid}}}
    - {triggers: [b], operations: [DELETE]}
schedules:
  nightly: {plugin: a, cron: "0 2 * * *", timezone: Asia/Shanghai}
""",
    )
    config = load_config(path)
    assert config.settings.runners.plugin_dirs == [tmp_path / "plugins"]
    rules = {r.name: r for r in config.rules.rules}
    assert set(rules) == {"teachers", "paid", "orders#1"}
    assert rules["teachers"].db == "cdcflow_demo" and rules["teachers"].operations == ["INSERT", "UPDATE"]
    assert rules["paid"].qualified_table == "shop.orders"
    assert config.rules.tables() == [("cdcflow_demo", "teachers"), ("shop", "orders")]
    assert config.rules.schedules[0].name == "nightly"


@pytest.mark.parametrize(
    "text, key, reason",
    [
        ("monitored_tables:\n  t: {triggers: []}\n", "monitored_tables.t.triggers", "at least 1"),
        (
            "monitored_tables:\n  t: {triggers: [a], operations: [UPSERT]}\n",
            "monitored_tables.t.operations[0]",
            "INSERT",
        ),
        ("monitored_tables:\n  t: {triggers: [a], colour: red}\n", "monitored_tables.t.colour", "Extra inputs"),
        ("schedules:\n  s: {plugin: a, cron: 'not cron'}\n", "schedules.s", "invalid cron"),
        ("schedules:\n  s: {plugin: a}\n", "schedules.s", "exactly one of"),
        ("schedules:\n  s: {plugin: a, interval_seconds: 5, timezone: Mars/Base}\n", "schedules.s", "unknown timezone"),
        ("kafka: {partitions: zero}\n", "kafka.partitions", "integer"),
        ("kafak: {}\n", "kafak", "unknown section"),
        ("monitored_tables: [1, 2]\n", "monitored_tables", "mapping"),
        ("a: [\n", "line", "invalid YAML"),
    ],
)
def test_config_errors_name_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and key in message and reason in message, message


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "c.yaml", "kafka: {bootstrap_servers: 'file:9092'}\nmysql: {port: 3307}\n")
    monkeypatch.setenv("CDCFLOW_KAFKA__BOOTSTRAP_SERVERS", "env:9092")
    config = load_config(path)
    assert config.settings.kafka.bootstrap_servers == "env:9092"
    assert config.settings.mysql.port == 3307


MANIFEST = {
    "name": "crawler",
    "version": "1.2.0",
    "entry_point": "main.crawl",
    "parameters": {
        "url": {"type": "string", "required": True},
        "pages": {"type": "integer", "default": 10},
        "deep": {"type": "boolean"},
        "ratio": {"type": "number"},
        "tags": {"type": "array"},
    },
    "dependencies": ["requests>=2"],
}


def test_manifest_params_are_coerced_and_defaulted(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, "plugin.json", json.dumps(MANIFEST)))
    assert manifest.module == "main" and manifest.function == "crawl"
    params = manifest.validate_params({"url": "http://x", "pages": "5", "deep": "yes", "ratio": "0.5", "tags": '["a"]'})
    assert params == {"url": "http://x", "pages": 5, "deep": True, "ratio": 0.5, "tags": ["a"]}
    assert manifest.validate_params({"url": "u"}) == {"url": "u", "pages": 10}


def test_bad_params_list_every_problem(tmp_path: Path) -> None:
    manifest = load_manifest(write(tmp_path, "plugin.json", json.dumps(MANIFEST)))
    with pytest.raises(ParamError) as err:
        manifest.validate_params({"pages": "many", "deep": "perhaps", "colour": "red"})
    message = str(err.value)
    assert "url: required parameter is missing" in message
    assert "pages: expected integer" in message
    assert "deep: expected boolean" in message
    assert "colour: unknown parameter" in message


@pytest.mark.parametrize(
    "patch, key",
    [
        ({"entry_point": "main"}, "entry_point"),
        ({"name": "bad name!"}, "name"),
        ({"parameters": {"n": {"type": "int"}}}, "parameters.n.type"),
        ({"parameters": {"n": {"type": "integer", "default": "x"}}}, "parameters.n.default"),
        ({"timeout_seconds": 0}, "timeout_seconds"),
        ({"dependencies": ["--index-url=http://evil"]}, "dependencies"),
        ({"retries": {"max_retries": -1}}, "retries.max_retries"),
    ],
)
def test_manifest_errors_name_file_and_key(tmp_path: Path, patch: dict, key: str) -> None:
    path = write(tmp_path, "plugin.json", json.dumps({**MANIFEST, **patch}))
    with pytest.raises(ConfigError) as err:
        load_manifest(path)
    assert str(path) in str(err.value) and key in str(err.value), str(err.value)


def test_manifest_invalid_json_names_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line 1 column \d+: invalid JSON"):
        load_manifest(write(tmp_path, "plugin.json", "{'name': 1}"))


def test_invocation_round_trip_and_deterministic_ids() -> None:
    assert invocation_id_for("cdc", "r", "p", "1:f:4:0") == invocation_id_for("cdc", "r", "p", "1:f:4:0")
    assert invocation_id_for("cdc", "r", "p", "1:f:4:0") != invocation_id_for("cdc", "r", "p", "1:f:4:1")
    inv = Invocation(
        invocation_id="i",
        plugin="p",
        params={"a": 1},
        trigger=CdcTrigger(rule="r", event_id="e", table="db.t", op="c"),
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    again = Invocation.model_validate_json(inv.model_dump_json())
    assert again == inv and again.trigger.kind == "cdc"


def test_row_change_reads_a_debezium_style_envelope() -> None:
    change = RowChange.model_validate(
        {
            "before": None,
            "after": {"id": 1},
            "op": "c",
            "ts_ms": 1,
            "event_id": "1:f:4:0",
            "source": {
                "connector": "mariadb",
                "name": "x",
                "server_id": 1,
                "db": "d",
                "table": "t",
                "file": "f",
                "pos": 4,
                "row": 0,
                "gtid": "0-1-1",
                "ts_ms": 1,
                "snapshot": False,
            },
        }
    )
    assert change.row == {"id": 1}


def test_export_writes_a_json_schema_per_contract(tmp_path: Path) -> None:
    written = export_schemas(tmp_path)
    assert len(written) == len(EXPORTED)
    invocation = json.loads((tmp_path / "invocation.schema.json").read_text())
    assert "invocation_id" in invocation["properties"]
