"""Fake secrets, each distinct, that must never show up in output, errors or logs, and a config
file written as is (not loaded, so a broken one can be written too)."""

from __future__ import annotations

from pathlib import Path

import yaml

SECRETS = {
    "mysql": "MyPw-4711-secret",
    "sasl": "SaslPw-0815-secret",
    "sslkey": "KeyPw-2222-secret",
    "redis": "RedisPw-3333-secret",
    "webhook": "XyZ123abcDEF456ghiJKL789",
    "tlskey": "TlsKeyPw-5555-secret",
    "apikey": "ApiKey-6666-secret",
    "env": "EnvMyPw-7777-secret",
}


def write_yaml_config(tmp_path: Path, data: dict, name: str = "cdcflow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
