"""A plugin's lane: its queue of accepted invocations and the threads that feed its worker pool.

One lane per plugin, so a slow plugin only backs up its own queue (the runner pauses that plugin's
partitions when the lane is full) and never delays the others. The queue is the place where
priorities will slot in later (a priority queue instead of a FIFO).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from plugins.offsets import Ack
from plugins.pool import WorkerPool
from plugins.registry import LoadedPlugin
from schemas.invocation import Invocation

log = logging.getLogger(__name__)

# The lane queues about this many seconds of work (by the measured call duration), within bounds:
# enough that the workers never wait for the consumer's next fetch, little enough that on a
# rebalance or shutdown only a few queued invocations are handed back to Kafka.
TARGET_QUEUE_SECONDS = 5.0
MAX_QUEUED = 2000
INITIAL_CALL_SECONDS = 0.01


@dataclass(slots=True)
class Job:
    invocation: Invocation
    ack: Ack
    consumed_at: float


class PluginLane:
    def __init__(self, plugin: LoadedPlugin, pool: WorkerPool, handle: Callable[["PluginLane", Job], None],
                 topic: str = "", is_current: Callable[[Ack], bool] | None = None):
        self.plugin = plugin
        self.pool = pool
        self.topic = topic
        self._handle = handle
        # False for a job whose partition was revoked while it waited: another runner owns it now.
        self._is_current = is_current or (lambda ack: True)
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._backlog = 0
        self._avg_call_seconds = INITIAL_CALL_SECONDS
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.paused = False  # owned by the runner's flow control
        self._threads = [threading.Thread(target=self._loop, name=f"lane-{plugin.name}-{i}", daemon=True)
                         for i in range(pool.size)]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def submit(self, job: Job) -> None:
        with self._lock:
            self._backlog += 1
        self._queue.put(job)

    @property
    def backlog(self) -> int:
        """Queued plus running invocations."""
        return self._backlog

    @property
    def high_water(self) -> int:
        per_second = self.pool.size / max(self._avg_call_seconds, 1e-5)
        return int(min(MAX_QUEUED, max(4 * self.pool.size, per_second * TARGET_QUEUE_SECONDS)))

    @property
    def low_water(self) -> int:
        return self.high_water // 2

    def stop(self) -> None:
        """Stop taking queued jobs (they stay uncommitted and will be redelivered); running ones go on."""
        self._stopping.set()
        for _ in self._threads:
            self._queue.put(None)

    def join(self, timeout: float) -> bool:
        """Wait for running calls; True if all lane threads ended."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.ident is not None:  # never started (the runner failed before starting lanes)
                t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None or self._stopping.is_set():
                return
            started = time.monotonic()
            ran = False
            try:
                if self._is_current(job.ack):
                    ran = True
                    self._handle(self, job)
            except Exception:  # a bug here must not kill the lane; the message stays uncommitted
                log.exception("unexpected error running %s invocation %s", self.plugin.name, job.invocation.invocation_id)
            finally:
                elapsed = time.monotonic() - started
                with self._lock:
                    self._backlog -= 1
                    if ran:
                        self._avg_call_seconds += 0.05 * (elapsed - self._avg_call_seconds)
