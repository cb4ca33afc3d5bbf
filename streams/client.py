"""`trigger()`: run a plugin from your own Python code (the original design's `trigger_plugin` and,
with `wait=`, `execute_plugin`).

    from streams.client import trigger

    invocation_id = trigger("es_indexer", {"doc_id": "42", "operation": "upsert"})
    result = trigger("data_processor", {"operation": "sync_data"}, wait=60)   # a schemas.result.Result
    later = trigger("echo", {"message": "hi"}, delay=30)                      # or delay="5m", at=...

The same checks and path as `cdcflow trigger` (streams/manual_trigger.py): parameters are checked
against the plugin's plugin.json here, before anything is sent, and a bad one raises TriggerError
naming it. The run itself happens in the runners (`cdcflow run`), not in this process.

One Kafka producer per config is kept for the process (a producer costs milliseconds to start, a
trigger should not pay that each time); it is flushed at exit.
"""

from __future__ import annotations

import atexit
import getpass
import socket
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, overload

from schemas.config import Config, load_config
from schemas.invocation import Priority
from schemas.result import Result
from schemas.settings import Settings
from streams.manual_trigger import TriggerError, TriggerSender, trigger_now_or_later, wait_for_result

__all__ = ["TriggerError", "TriggerTimeout", "trigger"]

ConfigLike = Config | Settings | str | Path | None

_lock = threading.Lock()
_configs: dict[str, Settings] = {}
_senders: dict[int, tuple[Settings, TriggerSender]] = {}  # id(settings) -> (settings, kept alive, its sender)


class TriggerTimeout(TimeoutError):
    """No result within `wait` seconds; the invocation was sent and may still run."""

    def __init__(self, invocation_id: str, wait: float):
        super().__init__(f"no result for invocation {invocation_id} within {wait:g}s (is `cdcflow run` running?)")
        self.invocation_id = invocation_id


@overload
def trigger(
    plugin: str,
    params: Mapping[str, Any] | None = None,
    *,
    wait: None = None,
    delay: float | timedelta | str | None = None,
    at: datetime | str | None = None,
    priority: Priority = "normal",
    key: str | None = None,
    config: ConfigLike = None,
) -> str: ...


@overload
def trigger(
    plugin: str,
    params: Mapping[str, Any] | None = None,
    *,
    wait: float,
    delay: float | timedelta | str | None = None,
    at: datetime | str | None = None,
    priority: Priority = "normal",
    key: str | None = None,
    config: ConfigLike = None,
) -> Result: ...


def trigger(
    plugin: str,
    params: Mapping[str, Any] | None = None,
    *,
    wait: float | None = None,
    delay: float | timedelta | str | None = None,
    at: datetime | str | None = None,
    priority: Priority = "normal",
    key: str | None = None,
    config: ConfigLike = None,
) -> str | Result:
    """Run `plugin` with `params`; return its invocation id, or with `wait` its result.

    wait:     seconds to wait for the result (counted from the due time when delayed); the Result of
              any status is returned (check `.status`, read `.output`); TriggerTimeout if none lands.
    delay:    run it later: seconds, a timedelta or "30s"/"5m"/"1h30m" (at most 30 days).
    at:       run it at this time: an aware datetime or ISO-8601 text with a UTC offset.
    priority: "low", "normal" or "high" (high goes ahead of queued normal ones).
    key:      an idempotency key: the same key gives the same invocation, which runs once.
    config:   a Config, Settings, or config file path; default: $CDCFLOW_CONFIG or ./cdcflow.yaml.

    Raises TriggerError (nothing was sent) for an unknown plugin, refused parameters, a bad delay/at,
    or Kafka/Redis not accepting it.
    """
    settings = _settings(config)
    sent = trigger_now_or_later(
        settings,
        plugin,
        dict(params or {}),
        priority=priority,
        delay=delay,
        at=at,
        idempotency_key=key,
        requested_by=f"python:{getpass.getuser()}@{socket.gethostname()}",
        sender=_sender(settings) if delay is None and at is None else None,  # a delayed one goes to Redis
    )
    if wait is None:
        return sent.invocation_id
    found = wait_for_result(settings, sent.invocation_id, wait + sent.seconds_until_due())
    if found is None or found[1] is None:
        raise TriggerTimeout(sent.invocation_id, wait)
    return found[1]


def _settings(config: ConfigLike) -> Settings:
    if isinstance(config, Settings):
        return config
    if isinstance(config, Config):
        return config.settings
    where = str(config) if config is not None else ""
    with _lock:
        if where not in _configs:
            _configs[where] = load_config(config).settings
        return _configs[where]


def _sender(settings: Settings) -> TriggerSender:
    with _lock:
        kept = _senders.get(id(settings))
        if kept is None:
            try:
                kept = _senders[id(settings)] = (settings, TriggerSender(settings))
            except Exception as e:  # Kafka unreachable: the topic check fails
                raise TriggerError(f"Kafka at {settings.kafka.bootstrap_servers} is not reachable: {e}") from None
        return kept[1]


@atexit.register
def _flush() -> None:
    for _settings_kept, sender in _senders.values():
        sender.close()
