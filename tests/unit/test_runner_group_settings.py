"""The runner consumer's group settings: fast failover by default, a heartbeat that fits the session."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import load_config
from schemas.errors import ConfigError


def test_defaults_move_a_dead_runners_partitions_within_the_brokers_minimum_session(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("runners: {group_id: g}\n")
    options = load_config(path).settings.runners.group_options()
    assert options == {
        "group.id": "g",
        "session.timeout.ms": 6000,  # the broker's default group.min.session.timeout.ms
        "heartbeat.interval.ms": 1000,
        "partition.assignment.strategy": "cooperative-sticky",
    }


def test_heartbeat_not_below_the_session_is_refused_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("runners: {session_timeout_ms: 6000, heartbeat_interval_ms: 6000}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "runners" in message and "heartbeat_interval_ms (6000) must be below session_timeout_ms" in message, message


def test_a_longer_session_is_passed_through(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("runners: {session_timeout_ms: 30000, heartbeat_interval_ms: 3000}\n")
    options = load_config(path).settings.runners.group_options()
    assert options["session.timeout.ms"] == 30000 and options["heartbeat.interval.ms"] == 3000


def test_roundrobin_assignment_can_be_chosen_and_others_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("runners: {partition_assignment: roundrobin}\n")
    assert load_config(path).settings.runners.group_options()["partition.assignment.strategy"] == "roundrobin"
    path.write_text("runners: {partition_assignment: range}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "runners.partition_assignment" in str(err.value), str(err.value)


def test_revoke_wait_defaults_to_5_s_and_a_wait_past_a_minute_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("runners: {group_id: g}\n")
    assert load_config(path).settings.runners.revoke_wait_seconds == 5.0
    path.write_text("runners: {revoke_wait_seconds: 600}\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "revoke_wait_seconds" in str(err.value)
