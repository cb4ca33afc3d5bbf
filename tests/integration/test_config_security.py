"""Secrets kept out of the logs of components failing to connect, and TLS settings reaching the connection,
on the real stack."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from console.cli import cli
from tests.support import isolated_config_data
from tests.support.secrets import SECRETS, write_yaml_config


def test_components_failing_to_connect_never_log_their_password(
    stack: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Redis with a password, on a port where nothing listens: the runner gives up with an error.
    data = isolated_config_data("seclog")
    data["redis"]["url"] = f"redis://:{SECRETS['redis']}@127.0.0.1:1/0"
    runner_cfg = write_yaml_config(tmp_path, data, "runner.yaml")
    result = CliRunner().invoke(cli, ["-c", str(runner_cfg), "runners", "run", "--no-watch"])
    assert result.exit_code == 1
    assert "cannot reach Redis" in caplog.text

    # The real Redis, with a user and password from the URL: they reach the server, which refuses them.
    data["redis"]["url"] = f"redis://svc:{SECRETS['redis']}@127.0.0.1:6380/0"
    auth_cfg = write_yaml_config(tmp_path, data, "auth.yaml")
    result = CliRunner().invoke(cli, ["-c", str(auth_cfg), "runners", "run", "--no-watch"])
    assert result.exit_code == 1
    assert "invalid username-password pair" in caplog.text

    # MySQL with a wrong password: the reader stops with the server's refusal, in one line.
    data = isolated_config_data("seclog", {"monitored_tables": {"orders": {"triggers": ["echo"]}}})
    data["mysql"]["password"] = SECRETS["mysql"]
    reader_cfg = write_yaml_config(tmp_path, data, "reader.yaml")
    result = CliRunner().invoke(cli, ["-c", str(reader_cfg), "cdc", "run"])
    assert result.exit_code == 1 and "Access denied" in result.output, result.output
    assert SECRETS["mysql"] not in str(result.exception) and SECRETS["mysql"] not in result.output

    # The last line of defence: any log line or traceback of this process that quotes a loaded secret.
    log = logging.getLogger("cdcflow.test")
    log.error("connecting to redis://:%s@somewhere fails", SECRETS["redis"])
    try:
        raise ConnectionError(f"refused with password {SECRETS['mysql']}")
    except ConnectionError:
        log.exception("reader failed")
    assert caplog.text.count("****") >= 2 and "refused with password ****" in caplog.text
    for secret in SECRETS.values():
        assert secret not in caplog.text
        assert all(secret not in r.getMessage() for r in caplog.records)


def test_mysql_tls_settings_reach_the_connection(stack: None, tmp_path: Path) -> None:
    # The local MariaDB has no TLS: with mysql.ssl set, the reader refuses to go on in plaintext.
    data = isolated_config_data("tls", {"monitored_tables": {"orders": {"triggers": ["echo"]}}})
    data["mysql"]["ssl"] = {"verify_cert": False}
    path = write_yaml_config(tmp_path, data)
    result = CliRunner().invoke(cli, ["-c", str(path), "cdc", "run"])
    assert result.exit_code == 1
    assert "SSL is required but the server doesn't support it" in result.output, result.output
