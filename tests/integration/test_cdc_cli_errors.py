"""`cdcflow cdc run` against a MySQL it cannot use: one line naming the server and the config section."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from console.cli import cli
from tests.support import isolated_config_data, write_config


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"password": "wrong-s3cret"}, "Access denied for user 'cdcflow_reader'"),
        ({"port": 1}, "Can't connect to MySQL server on '127.0.0.1'"),
    ],
    ids=["wrong-password", "nothing-listening"],
)
def test_unusable_mysql_is_a_clear_error_without_traceback_or_secret(
    stack: None, tmp_path: Path, change: dict, expected: str
) -> None:
    data = isolated_config_data("cdcerr", {"monitored_tables": {"items": {"triggers": ["echo"]}}})
    data["mysql"].update(change)
    config = write_config(tmp_path, data)
    result = CliRunner().invoke(cli, ["-c", str(config.path), "cdc", "run"])
    assert result.exit_code == 1, result.output
    assert f"MySQL at 127.0.0.1:{data['mysql']['port']} as 'cdcflow_reader' (config section mysql)" in result.output
    assert expected in result.output
    assert "Traceback" not in result.output and "wrong-s3cret" not in result.output
