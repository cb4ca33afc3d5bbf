"""The pure parts of the start-up checks (issue 17, item 4): Redis URL options, SMTP settings, the
reader's table selection, the streams worker's Kafka credentials and Kafka's topic-name rule."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import ValidationError

from cdc.filters import selection_problems
from schemas.runtime.kafka_topics import topic_name_problem
from schemas.runtime.redis_url import redis_url_problem
from schemas.settings import AlertSettings, RedisSettings
from streams.kafka_auth import credential_problems


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis://:pw@127.0.0.1:6380/0?socket_timout=5", "unknown option 'socket_timout' in the URL"),
        ("redis://127.0.0.1:6380/0?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
        ("redis://127.0.0.1:6380/zero", "the path must be a database number (e.g. /0), not /zero"),
        ("http://127.0.0.1:6380/0", "Redis URL must specify one of the following schemes"),
        ("redis://127.0.0.1:99999/0", "Port out of range"),
        ("rediss://h/0?ssl_cert_reqs=maybe", "Invalid SSL Certificate Requirements Flag: maybe"),
        ("redis://h/0?protocol=4", "protocol must be either 2 or 3"),
    ],
)
def test_a_redis_url_redis_py_cannot_use_is_named_without_its_password(url: str, problem: str) -> None:
    found = redis_url_problem(url)
    assert found is not None and problem in found and "pw" not in found
    with pytest.raises(ValidationError, match="url"):
        RedisSettings(url=url)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    ["redis://127.0.0.1:6380/0", "rediss://:pw@h:6380/1?socket_timeout=5", "redis://[::1]:6380", "unix:///tmp/r.sock"],
)
def test_good_redis_urls_pass(url: str) -> None:
    assert redis_url_problem(url) is None


SMTP: dict[str, Any] = {"host": "smtp.example.com", "port": 587, "to": ["oncall@example.com"]}


@pytest.mark.parametrize(
    ("change", "where", "reason"),
    [
        ({"port": 0}, ("smtp", "port"), "greater than or equal to 1"),
        ({"port": 70000}, ("smtp", "port"), "less than or equal to 65535"),
        ({"host": "smtp://mail"}, ("smtp", "host"), "not a host name"),
        ({"host": "mail:587"}, ("smtp", "host"), "give the port as port:"),
        ({"host": ""}, ("smtp", "host"), "not a host name"),
        ({"to": ["oncall"]}, ("smtp", "to", 0), "not an email address"),
        ({"to": ["a@b.c\nBcc: x@y.z"]}, ("smtp", "to", 0), "not an email address"),
        ({"sender": "cdcflow"}, ("smtp", "sender"), "not an email address"),
        ({"ssl": True, "starttls": True}, ("smtp",), "exclude each other"),
        ({"password": "pw"}, ("smtp",), "without a username"),
    ],
)
def test_smtp_settings_are_refused_when_read(change: dict[str, Any], where: tuple[Any, ...], reason: str) -> None:
    with pytest.raises(ValidationError) as err:
        AlertSettings.model_validate({"smtp": {**SMTP, **change}})
    assert any(e["loc"] == where and reason in e["msg"] for e in err.value.errors()), err.value.errors()
    assert "pw" not in str(err.value.errors(include_input=False))


def test_good_smtp_settings_pass() -> None:
    ok = {**SMTP, "host": "::1", "sender": "cdcflow <cdcflow@example.com>", "username": "u", "password": "p"}
    assert AlertSettings.model_validate({"smtp": ok}).smtp is not None


def _cdc(include: list[str] = [], exclude: list[str] = []) -> Any:  # noqa: B006 - read only
    return SimpleNamespace(include=include, exclude=exclude)


def test_the_readers_table_selection() -> None:
    rules = [("shop", "orders")]
    assert selection_problems(rules, _cdc(["shop.*"], ["shop.tmp_*"])) == []
    [(key, why)] = selection_problems(rules, _cdc(exclude=["shop.ord*"]))
    assert key == "cdc.exclude" and "excludes shop.orders, which a rule monitors" in why
    [(key, why)] = selection_problems(rules, _cdc(include=["shop"]))
    assert key == "cdc.include" and "'shop'" in why
    [(key, why)] = selection_problems([], _cdc())
    assert key == "cdc" and "nothing to read" in why
    assert selection_problems([], _cdc(include=["shop.*"])) == []


def test_the_streams_workers_kafka_credentials() -> None:
    assert credential_problems({}) == []
    [(key, why)] = credential_problems({"security.protocol": "SASL_SSL", "sasl.mechanism": "OAUTHBEARER"})
    assert key == "kafka.client_options.sasl.mechanism" and "not supported by the streams worker" in why
    [(key, why)] = credential_problems({"security.protocol": "SSL", "ssl.ca.location": "/no/such/ca.pem"})
    assert key == "kafka.client_options" and "cannot build its TLS context" in why


def test_topic_names_by_kafkas_rule() -> None:
    assert topic_name_problem("cdc.shop.order_items-2") is None
    assert topic_name_problem("x" * 249) is None
    for bad in ("cdc.shop.order$log", "a b", "", ".", "..", "x" * 250, "cdc.shop.café"):
        assert topic_name_problem(bad) is not None, bad
