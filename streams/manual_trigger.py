"""`cdcflow trigger`, the logic: check the parameters against the plugin's manifest, publish the
request to the triggers topic (the Faust app turns it into an invocation), wait for its result.
A delayed one (`--delay/--at`) is kept in Redis instead and released when due by the worker's
leader (plugins/delayed_store.py, streams/delayed_release.py). The CLI, the HTTP API and the
Python `trigger()` (streams/client.py) share these functions."""

from __future__ import annotations

import getpass
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from confluent_kafka import KafkaError, Producer

from plugins.delayed_store import DelayedStore
from plugins.registry import discover
from plugins.store import RunStore
from schemas.invocation import invocation_id_for
from schemas.manifest import ParamError, PluginManifest
from schemas.result import Result
from schemas.runtime.kafka_topics import ensure_topics
from schemas.settings import Settings
from schemas.trigger_request import ManualTriggerRequest
from streams.due_time import DueTimeError, due_time

SEND_TIMEOUT = 30.0
IDEMPOTENCY_NAMESPACE = uuid.UUID("5c3b7e52-8d0e-4f0a-a0c1-6f1d2e9b4a77")


class TriggerError(RuntimeError):
    """Nothing was sent (unknown plugin, refused parameters, Kafka did not accept); the message says why."""


def plugin_manifest(settings: Settings, plugin: str) -> PluginManifest:
    found = discover(settings.runners.plugin_dirs)
    if plugin not in found.plugins:
        known = ", ".join(sorted(found.plugins)) or "none"
        why = "".join(f"\n{problem}" for problem in found.problems_of(plugin))  # e.g. its plugin.json is broken
        raise TriggerError(
            f"unknown plugin {plugin!r} (plugins in {', '.join(map(str, settings.runners.plugin_dirs))}: {known}){why}"
        )
    return found.plugins[plugin].manifest


def trigger_request(
    plugin: str,
    manifest: PluginManifest,
    params: dict[str, Any],
    priority: str,
    requested_by: str,
    idempotency_key: str | None = None,
    due_at: datetime | None = None,
) -> ManualTriggerRequest:
    """The request, its parameters validated (and coerced) by the manifest, its priority by the model.

    With an idempotency key the request id (and so the invocation id) is derived from it: sending the
    same key twice gives the same invocation, which the runners run once. With `due_at` (streams/due_time.py)
    it is a delayed trigger, for `submit` to keep until then."""
    try:
        checked = manifest.validate_params(params)
    except ParamError as e:
        raise TriggerError(f"refused, nothing was sent:\n{e}") from None
    return ManualTriggerRequest.model_validate(
        {
            "request_id": str(uuid.uuid5(IDEMPOTENCY_NAMESPACE, idempotency_key) if idempotency_key else uuid.uuid4()),
            "plugin": plugin,
            "params": checked,
            "priority": priority,
            "requested_by": requested_by,
            "due_at": due_at,
        }
    )


class TriggerSender:
    """Publishes trigger requests; one per process (the API server keeps one: a producer and the
    topic check cost milliseconds, a request should not pay them)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        ensure_topics(settings, [settings.topics.triggers])
        self.producer = Producer(settings.kafka_config(**{"acks": "all", "enable.idempotence": True, "linger.ms": 0}))
        self._lock = threading.Lock()

    def send(self, request: ManualTriggerRequest) -> str:
        """Publish the request (acknowledged by every in-sync replica); returns the invocation id it becomes."""
        settings = self.settings
        delivered: list[KafkaError | None] = []
        self.producer.produce(
            settings.topics.triggers,
            key=request.request_id.encode(),
            value=request.model_dump_json().encode(),
            on_delivery=lambda error, _msg: delivered.append(error),
        )
        deadline = time.monotonic() + SEND_TIMEOUT
        while not delivered and time.monotonic() < deadline:
            with self._lock:  # one thread serves the delivery callbacks (its own and the others')
                if not delivered:  # served meanwhile by the thread that held the lock
                    self.producer.poll(0.005)
        if not delivered or delivered[0] is not None:
            why = delivered[0] if delivered else f"no answer within {SEND_TIMEOUT:.0f}s"
            raise TriggerError(f"Kafka at {settings.kafka.bootstrap_servers} did not accept the trigger: {why}")
        return invocation_id_for("manual", request.request_id, request.plugin)

    def close(self) -> None:
        self.producer.flush(5)


def send_trigger(settings: Settings, request: ManualTriggerRequest) -> str:
    """Publish one request with a sender made for it (the CLI's case)."""
    sender = TriggerSender(settings)
    try:
        return sender.send(request)
    finally:
        sender.close()


def submit(settings: Settings, request: ManualTriggerRequest, sender: TriggerSender | None = None) -> str:
    """Send the request now, or keep it until its due_at (a delayed trigger, released by the worker's
    leader: streams/delayed_release.py); returns the invocation id either way. The CLI, the API and
    `trigger()` all come through here."""
    if request.due_at is None:
        return sender.send(request) if sender is not None else send_trigger(settings, request)
    store = DelayedStore(settings)
    try:
        return store.add(request)
    except redis.RedisError as e:
        raise TriggerError(f"Redis did not accept the delayed trigger, nothing was kept: {e}") from None
    finally:
        store.close()


@dataclass(frozen=True)
class Sent:
    """What a trigger became: its invocation id, and its due time when delayed."""

    invocation_id: str
    due_at: datetime | None = None

    def seconds_until_due(self) -> float:
        return max(0.0, (self.due_at - datetime.now(UTC)).total_seconds()) if self.due_at else 0.0


def trigger_now_or_later(
    settings: Settings,
    plugin: str,
    params: dict[str, Any],
    *,
    priority: str = "normal",
    delay: str | float | timedelta | None = None,
    at: str | datetime | None = None,
    idempotency_key: str | None = None,
    requested_by: str | None = None,
    sender: TriggerSender | None = None,
) -> Sent:
    """`cdcflow trigger` and `trigger()`: check plugin, parameters and due time (streams/due_time.py),
    then send now or keep until due. TriggerError names what was refused, and nothing was sent."""
    manifest = plugin_manifest(settings, plugin)
    try:
        due = due_time(delay, at, datetime.now(UTC))
    except DueTimeError as e:
        raise TriggerError(f"refused, nothing was sent: {e}") from None
    who = requested_by or f"{getpass.getuser()}@{socket.gethostname()}"
    request = trigger_request(plugin, manifest, params, priority, who, idempotency_key, due)
    return Sent(submit(settings, request, sender), due)


def wait_for_result(settings: Settings, invocation_id: str, timeout: float) -> tuple[bytes, Result | None] | None:
    """The run's final result (raw, and parsed) once there is one; None after `timeout` seconds.

    Final: with its done marker set (plugins/store.py). A failed attempt whose retry is on its way is
    recorded too, but is not what `--wait` and `trigger(wait=)` ask for."""
    store = RunStore(settings)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done, raw = store.client.mget([store.done_key(invocation_id), store.run_key(invocation_id)])
            if done is not None and raw is not None:
                data = raw if isinstance(raw, bytes) else str(raw).encode()
                return data, Result.model_validate_json(data)
            time.sleep(0.1)
        return None
    finally:
        store.close()
