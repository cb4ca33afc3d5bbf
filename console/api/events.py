"""The live event stream behind `GET /api/events`: one background thread per server follows the
results topic (from its end, group-less, so it moves nobody's offsets) and polls the components'
heartbeats and the schedules' last fires in Redis once a second; each change goes to every
connected client's queue. A slow client's full queue drops events for that client only."""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from confluent_kafka import Consumer
from starlette.requests import Request

from console.status_report import schedule_views
from schemas.config import Config
from schemas.runtime.components import now_ms, read_records_once

log = logging.getLogger(__name__)
QUEUE_SIZE = 1000
KEEPALIVE_SECONDS = 15.0


class EventHub:
    def __init__(self, config: Config):
        self.config = config
        self._clients: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[bytes]]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="api-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def publish(self, kind: str, data: dict[str, Any]) -> None:
        frame = b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data, default=str) + b"\n\n"
        with self._lock:
            clients = list(self._clients)
        for loop, queue in clients:
            loop.call_soon_threadsafe(_offer, queue, frame)

    async def stream(self, request: Request) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_SIZE)
        client = (asyncio.get_running_loop(), queue)
        with self._lock:
            self._clients.add(client)
        try:
            yield b": connected\n\n"
            while not await request.is_disconnected():
                try:
                    yield await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield b": keep-alive\n\n"
        finally:
            with self._lock:
                self._clients.discard(client)

    def _run(self) -> None:
        settings = self.config.settings
        consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": f"cdcflow-api-events-{uuid.uuid4().hex}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "latest",
                }
            )
        )
        consumer.subscribe([settings.topics.results])
        watcher = _RedisWatcher(self)
        try:
            while not self._stop.is_set():
                message = consumer.poll(0.5)
                if message is not None and message.error() is None:
                    self._on_result(message.value())
                watcher.maybe_poll()
        finally:
            consumer.close()

    def _on_result(self, raw: bytes | None) -> None:
        try:
            result = orjson.loads(raw or b"")
        except orjson.JSONDecodeError:
            return
        if isinstance(result, dict):
            keep = ("invocation_id", "plugin", "status", "attempt", "finished_at", "duration_ms", "trigger_kind")
            self.publish("result", {k: result.get(k) for k in keep})


def _offer(queue: asyncio.Queue[bytes], frame: bytes) -> None:
    if not queue.full():
        queue.put_nowait(frame)


class _RedisWatcher:
    """Component liveness and schedule last-fire changes, read from Redis once a second."""

    def __init__(self, hub: EventHub):
        self.hub = hub
        self.next_at = 0
        self.liveness: dict[str, str] = {}
        self.seeded = False  # the components' first poll done
        self.fires: dict[str, str | None] = {}

    def maybe_poll(self) -> None:
        if now_ms() < self.next_at:
            return
        self.next_at = now_ms() + 1000
        try:
            self._components()
            self._schedules()
        except Exception as e:  # Redis down: the stream goes on, and says so once per poll
            log.warning("api events: cannot read Redis: %s", type(e).__name__)

    def _components(self) -> None:
        settings = self.hub.config.settings
        records = read_records_once(settings)
        at, stale = now_ms(), settings.observability.stale_after_seconds
        for r in records:
            state, key = r.liveness(at, stale), r.instance + r.kind
            # a component first seen after the first poll has just started: that is an `up` too
            # (the first poll only learns what was already there, not news to anyone)
            if (key in self.liveness or self.seeded) and self.liveness.get(key) != state:
                self.hub.publish("component", {"kind": r.kind, "instance": r.instance, "liveness": state})
            self.liveness[key] = state
        self.seeded = True

    def _schedules(self) -> None:
        for view in schedule_views(self.hub.config):
            name, last = view["name"], view["last_fire"]
            if name in self.fires and self.fires[name] != last:
                self.hub.publish("schedule", {"name": name, "fired_at": last, "next_fire": view["next_fire"]})
            self.fires[name] = last
