"""`cdcflow config show|check`, secrets kept out of output and errors, TLS/SASL settings passed through
(logs of components failing to connect: tests/integration/test_config_security.py)."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import pytest
import yaml
from click.testing import CliRunner

from console.cli import cli
from schemas.runtime.secrets import mask_url
from schemas.settings import Settings
from streams.kafka_auth import KafkaAuthError, faust_credentials
from tests.support import isolated_config_data
from tests.support.secrets import SECRETS, write_yaml_config


def _secret_config(tmp_path: Path) -> dict:
    data = isolated_config_data(
        "sec",
        {
            "monitored_tables": {"orders": {"triggers": ["echo"], "params": {"message": "{after.id}"}}},
            "schedules": {
                "nightly": {
                    "plugin": "echo",
                    "interval_seconds": 3600,
                    "params": {"message": "hi", "data": {"api_key": SECRETS["apikey"]}},
                }
            },
        },
    )
    data["mysql"]["password"] = SECRETS["mysql"]
    data["mysql"]["ssl"] = {"verify_cert": False, "key_password": SECRETS["tlskey"]}
    data["kafka"]["client_options"] = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": SECRETS["sasl"],
        "ssl.key.password": SECRETS["sslkey"],
    }
    data["redis"]["url"] = f"rediss://default:{SECRETS['redis']}@redis.internal:6380/0"
    data["alerts"] = {
        "webhook_url": f"https://hooks.example.com/services/T01/B02/{SECRETS['webhook']}?token={SECRETS['webhook']}"
    }
    return data


def test_config_show_prints_the_effective_config_with_every_secret_masked(tmp_path: Path) -> None:
    path = write_yaml_config(tmp_path, _secret_config(tmp_path))
    env = {"CDCFLOW_MYSQL__PASSWORD": SECRETS["env"], "CDCFLOW_MYSQL__HOST": "db.from-env.example"}
    result = CliRunner().invoke(cli, ["-c", str(path), "config", "show"], env=env)
    assert result.exit_code == 0, result.output
    out = result.output
    for name, secret in SECRETS.items():
        assert secret not in out, f"{name} secret shown"
    shown = yaml.safe_load(out)
    assert shown["config_file"] == str(path)
    assert shown["mysql"]["host"] == "db.from-env.example"  # environment beats the file
    assert shown["mysql"]["password"] == "****" and shown["mysql"]["ssl"]["key_password"] == "****"
    assert shown["mysql"]["ssl"]["verify_cert"] is False
    options = shown["kafka"]["client_options"]
    assert options["sasl.password"] == "****" and options["ssl.key.password"] == "****"
    assert options["sasl.username"] == "svc" and options["security.protocol"] == "SASL_SSL"
    assert shown["redis"]["url"] == "rediss://default:****@redis.internal:6380/0"
    assert shown["alerts"]["webhook_url"] == "https://hooks.example.com/services/T01/B02/****?token=****"
    assert shown["schedules"][0]["params"]["data"]["api_key"] == "****"
    assert shown["monitored_tables"][0]["table"] == "orders" and shown["topics"]["results"].endswith(".results")


def test_a_bad_config_is_named_without_its_passwords(tmp_path: Path) -> None:
    data = _secret_config(tmp_path)
    data["mysql"]["port"] = "not-a-port"
    data["kafka"]["client_options"]["sasl.password"] = [SECRETS["sasl"]]
    data["mysql"]["ssl"]["verify"] = SECRETS["tlskey"]
    path = write_yaml_config(tmp_path, data)
    result = CliRunner().invoke(
        cli, ["-c", str(path), "config", "show"], env={"CDCFLOW_REDIS__URL": f"redis://:{SECRETS['env']}@x:1/0"}
    )
    assert result.exit_code == 1
    assert "mysql.port: Input should be a valid integer" in result.output
    assert "kafka.client_options.sasl.password" in result.output and "mysql.ssl.verify: Extra inputs" in result.output
    for secret in SECRETS.values():
        assert secret not in result.output

    broken = tmp_path / "broken.yaml"
    broken.write_text(f"mysql:\n  password: {SECRETS['mysql']}\n  port: [3307\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["-c", str(broken), "config", "check"])
    assert result.exit_code == 1 and "invalid YAML" in result.output and SECRETS["mysql"] not in result.output


def test_config_check_validates_config_rules_and_plugins(tmp_path: Path) -> None:
    good = write_yaml_config(
        tmp_path, isolated_config_data("chk", {"monitored_tables": {"orders": {"triggers": ["echo"]}}})
    )
    result = CliRunner().invoke(cli, ["-c", str(good), "config", "check"])
    assert result.exit_code == 0, result.output
    assert "ok — 1 rule(s), 0 schedule(s)" in result.output and "echo" in result.output

    data = _secret_config(tmp_path)
    data["monitored_tables"]["orders"]["triggers"] = ["echo", "no_such_plugin"]
    data["kafka"]["client_options"]["bogus.property"] = "1"
    data["mysql"]["ssl"]["ca"] = str(tmp_path / "missing-ca.pem")
    data["runners"]["plugin_dirs"].append(str(tmp_path / "no-plugins-here"))
    bad = write_yaml_config(tmp_path, data, "bad.yaml")
    result = CliRunner().invoke(cli, ["-c", str(bad), "config", "check"])
    assert result.exit_code == 1
    out = result.output
    assert "monitored_tables.orders (rule orders).triggers[1]: unknown plugin 'no_such_plugin'" in out
    assert "kafka.client_options:" in out and "bogus.property" in out
    assert f"mysql.ssl.ca: no such file: {tmp_path / 'missing-ca.pem'}" in out
    assert "runners.plugin_dirs[1]: no such directory" in out
    for secret in SECRETS.values():
        assert secret not in out


def test_kafka_sasl_and_ssl_options_become_faust_credentials(tmp_path: Path) -> None:
    assert faust_credentials({}) is None
    sasl = faust_credentials(
        {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": "SCRAM-SHA-256",
            "sasl.username": "svc",
            "sasl.password": "pw",
            "ssl.endpoint.identification.algorithm": "none",
        }
    )
    assert isinstance(sasl, faust.SASLCredentials)
    assert (sasl.username, sasl.password, sasl.mechanism.value, sasl.protocol.value) == (
        "svc",
        "pw",
        "SCRAM-SHA-256",
        "SASL_SSL",
    )
    assert isinstance(sasl.ssl_context, ssl.SSLContext) and sasl.ssl_context.check_hostname is False
    plain = faust_credentials(
        {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN", "sasl.username": "u", "sasl.password": "p"}
    )
    assert plain.protocol.value == "SASL_PLAINTEXT" and plain.ssl_context is None
    tls = faust_credentials({"security.protocol": "SSL"})
    assert isinstance(tls, faust.SSLCredentials)
    with pytest.raises(KafkaAuthError, match="security.protocol"):
        faust_credentials({"security.protocol": "KERBEROS"})
    with pytest.raises(KafkaAuthError, match="sasl.mechanism"):
        faust_credentials({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"})
    # the same block every confluent-kafka client gets
    s = Settings(kafka={"client_options": {"security.protocol": "SASL_SSL", "sasl.password": "pw"}})
    assert s.kafka_config()["sasl.password"] == "pw"


@pytest.mark.parametrize(
    "url, masked",
    [
        ("redis://:pw-secret@h:6380/0", "redis://:****@h:6380/0"),
        ("rediss://user:pw-secret@h/1?ssl_cert_reqs=none", "rediss://user:****@h/1?ssl_cert_reqs=none"),
        ("redis://127.0.0.1:6380/0", "redis://127.0.0.1:6380/0"),
        (
            "https://hooks.slack.com/services/T000/B000/abcdefghij1234567890XY",
            "https://hooks.slack.com/services/T000/B000/****",
        ),
        ("https://example.com/hook?token=abc&x=1", "https://example.com/hook?token=****&x=1"),
    ],
)
def test_urls_keep_their_host_and_lose_their_secrets(url: str, masked: str) -> None:
    assert mask_url(url) == masked
