"""`config check`, `rules check` and POST /api/rules/check find what the components refuse or fail on at
start (issue 17, item 4): each bad config below is one the reader, streams worker or runner would not
start with (or an alert setting that would fail at the first alert); the check exits non-zero naming
the place. Plugins are started once in their own venv (the real venvs and worker_main), so an entry
point that imports a package only cdcflow's venv has is found, as the runner would find it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from console.cli import cli
from tests.support import EXAMPLES_DIR, isolated_config_data, remove_test_resources, write_config
from tests.support.api import ApiServer, api_server

RULE = {"monitored_tables": {"shop.orders": {"triggers": ["echo"]}}}


def _plugin(directory: Path, name: str, code: str, entry_point: str = "main.run") -> Path:
    folder = directory / name
    folder.mkdir(parents=True)
    manifest = {"name": name, "version": "1.0.0", "entry_point": entry_point, "parameters": {}}
    (folder / "plugin.json").write_text(json.dumps(manifest), encoding="utf-8")
    (folder / "main.py").write_text(code, encoding="utf-8")
    return folder


def _config_file(tmp_path: Path, change: Callable[[dict[str, Any]], None], name: str = "cdcflow.yaml") -> Path:
    data = isolated_config_data("cchk", RULE)
    change(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _check(path: Path, command: str = "config") -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-c", str(path), command, "check"])
    assert "Traceback" not in result.output
    return result.exit_code, result.output


def _set(*keys: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        node = data
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return change


SMTP = {"host": "smtp.example.com", "port": 587, "to": ["oncall@example.com"]}

CASES: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    (
        "exclude covers a monitored table",
        _set("cdc", "exclude", value=["shop.ord*"]),
        "cdc.exclude: cdc.exclude pattern 'shop.ord*' excludes shop.orders, which a rule monitors",
    ),
    ("include pattern without a table", _set("cdc", "include", value=["shop"]), "cdc.include: table pattern 'shop'"),
    (
        "nothing for the reader to read",
        lambda d: d.pop("monitored_tables"),
        "cdc: no monitored_tables and no cdc.include in the config: nothing to read",
    ),
    (
        "table name Kafka refuses as a topic",
        _set("monitored_tables", value={"shop.order$log": {"triggers": ["echo"]}}),
        "monitored_tables.order$log (rule order$log) (its topic): 'test.",
    ),
    ("topic name", _set("topics", "triggers", value="cdc triggers"), "topics.triggers: 'cdc triggers' is not"),
    ("state dir under a file", _set("streams", "state_dir", value="/etc/hostname/state"), "streams.state_dir: "),
    ("webhook URL not a URL", _set("alerts", "webhook_url", value="hooks.example.com/T0"), "alerts.webhook_url"),
    ("SMTP port", _set("alerts", "smtp", value={**SMTP, "port": 0}), "alerts.smtp.port"),
    ("SMTP host with a scheme", _set("alerts", "smtp", value={**SMTP, "host": "smtp://x"}), "alerts.smtp.host"),
    ("SMTP recipient", _set("alerts", "smtp", value={**SMTP, "to": ["oncall"]}), "alerts.smtp.to[0]"),
    (
        "SMTP ssl and starttls",
        _set("alerts", "smtp", value={**SMTP, "ssl": True, "starttls": True}),
        "alerts.smtp: Value error, starttls and ssl exclude each other",
    ),
    (
        "Redis URL option",
        _set("redis", "url", value="redis://:pw@127.0.0.1:6380/0?socket_timout=5"),
        "redis.url: Value error, unknown option 'socket_timout' in the URL",
    ),
    ("Redis URL database", _set("redis", "url", value="redis://127.0.0.1:6380/zero"), "redis.url"),
    (
        "SASL mechanism the streams worker cannot use",
        _set(
            "kafka",
            "client_options",
            value={"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "OAUTHBEARER"},
        ),
        "kafka.client_options.sasl.mechanism: 'OAUTHBEARER' is not supported by the streams worker",
    ),
]


@pytest.mark.parametrize(("change", "named"), [(c, n) for _, c, n in CASES], ids=[i for i, _, _ in CASES])
def test_a_config_the_components_refuse_fails_the_check_naming_the_place(
    tmp_path: Path, change: Callable[[dict[str, Any]], None], named: str
) -> None:
    code, out = _check(_config_file(tmp_path, change))
    assert code == 1, out
    assert named in out
    assert "pw@" not in out


def test_plugins_are_started_in_their_own_venv(tmp_path: Path) -> None:
    plugins = tmp_path / "plugins"
    missing = _plugin(plugins, "no_function", "def other():\n    return 1\n", "main.run")
    foreign = _plugin(plugins, "foreign_import", "import orjson  # cdcflow's venv has it, this plugin's does not\n")
    _plugin(plugins, "fine", "def run():\n    return 1\n")
    bad_import = _set("runners", "plugin_dirs", value=[str(EXAMPLES_DIR), str(plugins)])
    path = _config_file(tmp_path, bad_import)
    for command in ("config", "rules"):
        code, out = _check(path, command)
        assert code == 1, out
        assert f"plugin no_function ({missing}): cannot start: AttributeError: cannot load main.run from" in out
        assert "has no attribute 'run'" in out
        assert f"plugin foreign_import ({foreign}): cannot start: " in out and "No module named 'orjson'" in out
        assert "plugin fine" not in out and "data_processor" not in out  # its humanize is in its own venv


def test_a_good_config_passes(tmp_path: Path) -> None:
    def good(data: dict[str, Any]) -> None:
        data["cdc"].update(include=["shop.*"], exclude=["shop.tmp_*"])
        data["alerts"] = {"webhook_url": "https://hooks.example.com/T0/B0/x", "smtp": {**SMTP, "starttls": True}}
        data["redis"]["url"] = "redis://127.0.0.1:6380/0?socket_timeout=5"

    code, out = _check(_config_file(tmp_path, good))
    assert code == 0, out
    assert "ok — 1 rule(s), 0 schedule(s)" in out and "data_processor, echo" in out
    code, out = _check(_config_file(tmp_path, good, "again.yaml"), "rules")
    assert code == 0 and "1 rule(s), 0 schedule(s): ok" in out, out


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    directory = tmp_path_factory.mktemp("cchk-api")
    plugins = directory / "plugins"
    _plugin(plugins, "no_function", "def other():\n    return 1\n")
    data = isolated_config_data("cchkapi", RULE)
    data["runners"]["plugin_dirs"] = [str(EXAMPLES_DIR), str(plugins)]
    config = write_config(directory, data)
    try:
        with api_server(config, directory / "api.log") as server:
            yield server
    finally:
        remove_test_resources(config.settings, [])


def test_the_api_check_shares_the_startup_checks(api: ApiServer) -> None:
    text = yaml.safe_dump({**RULE, "cdc": {"exclude": ["shop.*"]}, "mysql": {"host": "elsewhere.example"}})
    with api.client("read") as reader:
        out = reader.post("/api/rules/check", json={"config": text}).json()
    assert out["ok"] is False and out["rules"] == 1, out
    where = {p["where"]: p["problem"] for p in out["problems"]}
    assert "excludes shop.orders, which a rule monitors" in where["cdc.exclude"]
    no_function = next(p for w, p in where.items() if w.startswith("plugin no_function"))
    assert "has no attribute 'run'" in no_function
    # the text's mysql section is not used to connect: the server's own is (columns were read, no note)
    assert not any("elsewhere" in n for n in out["notes"]), out
