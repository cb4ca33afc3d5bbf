"""Releases delayed triggers when they are due, on the leader worker only (as the schedule timer).

`cdcflow trigger --delay/--at`, the API and `trigger(delay=...)` check the request and keep it in
Redis (plugins/delayed_store.py) under the invocation id it will have. This loop, on whichever worker
leads the group:
- sleeps until the earliest due time (at most `max_sleep`, so a trigger added meanwhile, or a new
  leadership, is noticed within that),
- publishes the due requests (up to BATCH together) onto the triggers topic, where each takes the
  path of every manual trigger (checks, a rejected result if it cannot run, the plugin's topic),
  and waits for Kafka's acks,
- *then* removes them from Redis.
A crash between the two publishes the same request again after the restart, and two workers that
both believe they lead (during a rebalance) both publish it: the invocation id is derived from the
request id, so the runners run it once. Nothing is lost while no worker runs: the trigger waits in
Redis and is released late (by the first leader) rather than never.

A cancelled trigger (`cdcflow runs cancel`) is dropped here, never published.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import faust

from plugins.cancel import Cancels
from plugins.delayed_store import DelayedStore, Waiting
from schemas.settings import Settings
from schemas.trigger_request import ManualTriggerRequest
from streams.faust_app import raw_topic

log = logging.getLogger("cdcflow.streams.delayed")

Publish = Callable[[ManualTriggerRequest], Awaitable[None]]
BATCH = 500  # due triggers read, published and removed together


def triggers_publisher(app: faust.App, settings: Settings) -> Publish:
    """Publish a request onto the triggers topic through Faust's producer, returning once Kafka acked it."""
    topic = raw_topic(app, settings.topics.triggers)

    async def publish(request: ManualTriggerRequest) -> None:
        sent = await topic.send(key=request.request_id.encode(), value=request.model_dump_json().encode())
        await sent

    return publish


class DelayedRelease:
    def __init__(
        self,
        store: DelayedStore,
        publish: Publish,
        is_leader: Callable[[], bool] = lambda: True,
        cancelled: Callable[[list[str]], set[str]] = lambda _invocation_ids: set(),
        max_sleep: float = 0.2,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.publish = publish
        self.is_leader = is_leader
        self.cancelled = cancelled
        self.max_sleep = max_sleep
        self.clock = clock
        self.lateness_ms: list[float] = []  # Kafka's ack - due time, per release

    async def tick(self) -> float:
        """Release every due trigger; return seconds until the next one is due (at most max_sleep)."""
        while batch := self.store.due(int(self.clock() * 1000), BATCH):
            await self._release(batch)
        next_ms = self.store.next_due_ms()
        if next_ms is None:
            return self.max_sleep
        return max(0.0, min(self.max_sleep, next_ms / 1000 - self.clock()))

    async def _release(self, batch: list[Waiting]) -> None:
        """Publish the batch's triggers together (one after the other, each waiting for its ack, took
        14 ms apiece: 300 due at once went out over 4.3 s), then remove them all. A failed publish
        raises before anything is removed: the whole batch goes out again (once more for some)."""
        ids = [w.invocation_id for w in batch]
        cancelled = self.cancelled(ids)
        going = [w for w in batch if w.request is not None and w.invocation_id not in cancelled]
        await asyncio.gather(*(self.publish(w.request) for w in going if w.request is not None))
        acked = self.clock() * 1000
        self.store.remove_many(ids)
        for w in batch:
            if w.request is None:
                log.error("delayed trigger %s: its request is missing or unreadable in Redis; dropped", w.invocation_id)
            elif w.invocation_id in cancelled:
                log.info("delayed trigger %s for %s was cancelled; dropped", w.invocation_id, w.request.plugin)
            else:
                self.lateness_ms.append(acked - w.due_ms)
                log.info(
                    "delayed trigger %s released -> %s (invocation %s, %.1f ms after its time)",
                    w.request.request_id,
                    w.request.plugin,
                    w.invocation_id,
                    acked - w.due_ms,
                    extra={"plugin": w.request.plugin, "invocation_id": w.invocation_id},
                )

    async def run(self) -> None:
        """Forever: release what is due while leader. Never raises (but lets cancellation through)."""
        while True:
            try:
                if not self.is_leader():
                    await asyncio.sleep(self.max_sleep)
                    continue
                wait = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Redis or Kafka away: the triggers stay in Redis and go out once they are back.
                log.exception("delayed triggers: release failed; retrying")
                wait = 1.0
            await asyncio.sleep(wait)


def delayed_release(app: faust.App, settings: Settings) -> DelayedRelease:
    """The worker's release loop: leader only, publishing onto the triggers topic, asking
    plugins/cancel.py whether `cdcflow runs cancel` cancelled a trigger before releasing it."""
    return DelayedRelease(
        DelayedStore(settings),
        triggers_publisher(app, settings),
        is_leader=app.is_leader,
        cancelled=Cancels.from_settings(settings).cancelled,
    )
