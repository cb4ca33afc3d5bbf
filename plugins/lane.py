"""A plugin's lane: its queue of accepted invocations and the threads that feed its worker pool.

One lane per plugin, so a slow plugin only backs up its own queue (the runner pauses that plugin's
partitions when the lane is full) and never delays the others. The queue is a FIFO per priority:
a free worker takes high before normal before low, so a high-priority invocation that reached the
lane overtakes everything queued there. (What has not reached the lane yet is the job of the
separate `.high` topic, see the runner.)

Retries carry a not-before time: such a job waits in the lane's timer heap (not in the queue, so it
neither occupies a worker nor counts as backlog) and joins the queue when it is due. Its offset
stays uncommitted meanwhile, so a crash re-delivers it and the wait is resumed from the header.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from plugins.offsets import Ack
from plugins.pool import PIPELINE_DEPTH, WorkerPool
from plugins.registry import LoadedPlugin
from schemas.invocation import Invocation, Priority

PRIORITY_ORDER: tuple[Priority, ...] = ("high", "normal", "low")

log = logging.getLogger(__name__)

# The lane queues about this many seconds of work (by the measured call duration), within bounds:
# enough that the workers never wait for the consumer's next fetch, little enough that on a
# rebalance or shutdown only a few queued invocations are handed back to Kafka.
TARGET_QUEUE_SECONDS = 5.0
MAX_QUEUED = 2000
INITIAL_CALL_SECONDS = 0.01
MAX_TIMER_WAIT_SECONDS = 3600.0
MAX_CALLS_PER_WRITE = 64  # a fast plugin's queued calls written to its worker at once (WorkerPool.call_many)
MAX_WRITE_SECONDS = 0.002
BATCH_POLL_SECONDS = 0.001  # how often a forming batch looks for more jobs (see _take_more)
WORKER_SECONDS_PER_CALL = 50e-6  # a warm worker's own cost per call: read, parse, answer, write (~40 us measured)


@dataclass
class LaneVersion:
    """One loaded version of the plugin and its warm pool. A hot reload adds a new current version;
    the old one keeps the calls it is running and its pool is closed when the last one returns."""

    plugin: LoadedPlugin
    pool: WorkerPool
    loaded_at: float = field(default_factory=time.time)
    active: int = 0
    retired: bool = False
    closed: bool = False
    # Set when it is retired (or the lane stops): lane threads waiting for a place in its pool give
    # up and wait in the current pool instead, so new work never waits for the old calls to end.
    leaving: threading.Event = field(default_factory=threading.Event)


@dataclass(slots=True)
class Job:
    invocation: Invocation
    ack: Ack
    consumed_at: float


class PluginLane:
    def __init__(
        self,
        plugin: LoadedPlugin,
        pool: WorkerPool,
        handle: Callable[[PluginLane, list[Job], LaneVersion], int],
        topic: str = "",
        high_topic: str = "",
    ):
        self.current = LaneVersion(plugin, pool)
        self._versions = [self.current]  # not yet closed: the current one and any still draining
        self.topic = topic
        self.high_topic = high_topic
        # Runs the jobs (those whose partition is still ours) and says how many it ran.
        self._handle = handle
        self._queues: dict[str, collections.deque[Job]] = {p: collections.deque() for p in PRIORITY_ORDER}
        # One token per submitted job in a C-level SimpleQueue (the fast blocking handoff); the job
        # itself goes to its priority's deque, and whoever takes a token takes the best job there is.
        self._tokens: queue.SimpleQueue[bool] = queue.SimpleQueue()
        self._ready = threading.Lock()  # counters and versions
        self._backlog = 0
        self._high_backlog = 0
        self._avg_call_seconds = INITIAL_CALL_SECONDS
        self._stopping = threading.Event()
        # PIPELINE_DEPTH threads per worker: with a fast plugin, each worker has its next request
        # while it runs the current one (see plugins/pool.py); otherwise the extra threads wait.
        self._threads = [
            threading.Thread(target=self._loop, name=f"lane-{plugin.name}-{i}", daemon=True)
            for i in range(pool.size * PIPELINE_DEPTH)
        ]
        self._delayed: list[tuple[float, int, Job]] = []  # heap by not-before (epoch seconds)
        self._delayed_cond = threading.Condition()
        self._seq = itertools.count()
        self._timer = threading.Thread(target=self._timer_loop, name=f"lane-{plugin.name}-timer", daemon=True)

    @property
    def plugin(self) -> LoadedPlugin:
        return self.current.plugin

    @property
    def pool(self) -> WorkerPool:
        return self.current.pool

    def start(self) -> None:
        for t in self._threads:
            t.start()
        self._timer.start()

    def swap(self, plugin: LoadedPlugin, pool: WorkerPool) -> LaneVersion:
        """Serve new jobs with a new version; running calls finish on the old one, whose pool then closes."""
        new = LaneVersion(plugin, pool)
        with self._ready:
            if self._stopping.is_set():  # the runner is shutting down: the new pool would leak
                new.closed = True
                _close_in_background(new)
                return new
            old, self.current = self.current, new
            old.retired = True
            old.leaving.set()
            self._versions.append(new)
            drained = self._take_drained(old)
            # A larger concurrency needs more lane threads (a smaller one just leaves some waiting on the pool).
            while len(self._threads) < pool.size * PIPELINE_DEPTH and not self._stopping.is_set():
                t = threading.Thread(target=self._loop, name=f"lane-{plugin.name}-{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()
        old.pool.interrupt()  # wake the lane threads waiting for a place in it, so they move to the new pool
        if drained:
            _close_in_background(old)
        return new

    def close_pools(self) -> None:
        """Close every version's pool (at shutdown): calls still running return `aborted`."""
        with self._ready:
            versions = [v for v in self._versions if not v.closed]
            for v in versions:
                v.closed = True
            self._versions.clear()
        for v in versions:
            v.pool.close()

    def cancel_running(self, invocation_id: str) -> bool:
        """Stop the invocation's call if a worker of any version runs it (or is about to)."""
        with self._ready:
            versions = list(self._versions)
        return any([v.pool.cancel(invocation_id) for v in versions])

    def _take_drained(self, v: LaneVersion) -> bool:
        """Under the lock: True (once) when a retired version has no call left, so its pool can close."""
        if v.retired and v.active == 0 and not v.closed:
            v.closed = True
            self._versions.remove(v)
            return True
        return False

    def submit_at(self, job: Job, not_before: float) -> None:
        """Queue the job once time.time() >= not_before."""
        if not_before <= time.time():
            self.submit(job)
            return
        with self._delayed_cond:
            heapq.heappush(self._delayed, (not_before, next(self._seq), job))
            self._delayed_cond.notify()

    @property
    def delayed(self) -> int:
        return len(self._delayed)

    def _timer_loop(self) -> None:
        with self._delayed_cond:
            while not self._stopping.is_set():
                if not self._delayed:
                    self._delayed_cond.wait()
                    continue
                wait = self._delayed[0][0] - time.time()
                if wait > 0:
                    # At most an hour at a time: a wait past the platform's time_t raises in wait()
                    # and would end this thread, and every delayed job of the plugin with it.
                    self._delayed_cond.wait(min(wait, MAX_TIMER_WAIT_SECONDS))
                    continue
                _, _, job = heapq.heappop(self._delayed)
                self.submit(job)

    def submit(self, job: Job) -> None:
        with self._ready:
            self._backlog += 1
            if job.invocation.priority == "high":
                self._high_backlog += 1
        self._queues[job.invocation.priority].append(job)
        self._tokens.put(True)

    def queued_acks(self) -> list[Ack]:
        """The messages of the jobs waiting here (queued or delayed), a snapshot (lane threads take on)."""
        acks = [job.ack for line in self._queues.values() for job in list(line)]
        return acks + [job.ack for _, _, job in list(self._delayed)]

    @property
    def backlog(self) -> int:
        """Queued plus running invocations."""
        return self._backlog

    @property
    def high_backlog(self) -> int:
        """Queued plus running high-priority invocations."""
        return self._high_backlog

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
        with self._delayed_cond:
            self._delayed_cond.notify_all()  # delayed jobs are abandoned uncommitted too
        for _ in self._threads:
            self._tokens.put(False)
        with self._ready:
            versions = list(self._versions)
        for v in versions:
            v.leaving.set()
            v.pool.interrupt()  # threads waiting for room on a worker

    def join(self, timeout: float) -> bool:
        """Wait for running calls; True if all lane threads ended."""
        deadline = time.monotonic() + timeout
        for t in self._threads:
            if t.ident is not None:  # never started (the runner failed before starting lanes)
                t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def _take(self) -> Job | None:
        """The next job, highest priority first; None once stopping."""
        if not self._tokens.get() or self._stopping.is_set():
            return None
        return self._pop()

    def _pop(self) -> Job:
        # There are at least as many queued jobs as tokens taken, so a scan finds one; two threads
        # may race for the last job of a deque, the loser scans again.
        while True:
            for priority in PRIORITY_ORDER:
                try:
                    return self._queues[priority].popleft()
                except IndexError:
                    continue

    def _take_more(self, jobs: list[Job], max_size: int, max_wait_seconds: float) -> None:
        """A batch plugin's call: add queued jobs to `jobs` until it holds max_size or max_wait_seconds
        have passed since the first (jobs already queued are taken at once).

        Polls instead of SimpleQueue.get(timeout=...): in CPython 3.11 a timed get that is woken by a
        put whose item another thread takes first, after its deadline, waits again with a negative
        timeout, i.e. forever (Modules/_queuemodule.c; later versions clamp it at 0). The other lane
        threads wait in _take, so that happened: a drain with a batch plugin stopped with 340 jobs
        held by one lane thread (py-spy: in get(timeout=0.0198) for minutes)."""
        deadline = time.monotonic() + max_wait_seconds
        while len(jobs) < max_size:
            try:
                token = self._tokens.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                time.sleep(min(remaining, BATCH_POLL_SECONDS))
                continue
            if not token or self._stopping.is_set():
                self._tokens.put(False)  # this thread's next _take sees it and ends the loop
                return
            jobs.append(self._pop())

    def _requeue(self, job: Job) -> None:
        """Hand a taken job back, first in its priority's line (it keeps its turn; still counted as backlog)."""
        self._queues[job.invocation.priority].appendleft(job)
        self._tokens.put(True)

    def _loop(self) -> None:
        while True:
            with self._ready:
                reserved_for = self.current
            reserved_in = reserved_for.pool
            # Room on a worker first, then a job: a job is never taken only to wait for a worker
            # (where a high-priority one arriving meanwhile could not overtake it).
            if reserved_in.reserve(stop=reserved_for.leaving) is None:  # stopping, retired or closed (a reload)
                if self._stopping.is_set():
                    return
                with self._ready:
                    unchanged = self.current is reserved_for
                if unchanged:
                    self._stopping.wait(0.1)
                continue
            job = self._take()
            if job is None:
                reserved_in.release()
                return
            with self._ready:
                version = self.current
                if version.pool is reserved_in:
                    version.active += 1
            if version.pool is not reserved_in:
                # Swapped while this thread waited for a job: its place is in the retired pool. It must
                # not run the job without a place in the new one: the other lane threads may hold every
                # place there while they wait for a job, and the call would wait for them forever.
                self._requeue(job)
                reserved_in.release()
                continue
            jobs = [job]
            batch = version.plugin.manifest.batch
            if batch is not None:
                self._take_more(jobs, batch.max_size, batch.max_wait_ms / 1000.0)
            elif version.pool.pipelined:  # a fast plugin: what is queued goes to the worker in one write
                self._take_more(jobs, _calls_per_write(version.pool), 0.0)
            self._run(jobs, version)

    def _run(self, jobs: list[Job], version: LaneVersion) -> None:
        """Run taken jobs on `version`, whose pool holds this thread's place (counted in its `active`)."""
        started = time.monotonic()
        ran = 0
        try:
            ran = self._handle(self, jobs, version)
        except Exception:  # a bug here must not kill the lane; the messages stay uncommitted
            log.exception("unexpected error running %d %s invocation(s)", len(jobs), self.plugin.name)
        finally:
            self._finished(version, jobs, (time.monotonic() - started) / ran if ran else None)

    def _finished(self, version: LaneVersion, jobs: list[Job], seconds_each: float | None) -> None:
        """Book-keeping after a call: the place, the version's count, the backlog, the call duration."""
        version.pool.release()  # unused if the call never reached the pool (e.g. rejected params)
        with self._ready:
            version.active -= 1
            drained = self._take_drained(version)
            self._backlog -= len(jobs)
            self._high_backlog -= sum(1 for job in jobs if job.invocation.priority == "high")
            if seconds_each is not None:
                self._avg_call_seconds += 0.05 * (seconds_each - self._avg_call_seconds)
        if drained:
            _close_in_background(version)


def _calls_per_write(pool: WorkerPool) -> int:
    # Enough calls that a write and a wake-up are shared by many, few enough that the first of them waits
    # at most ~MAX_WRITE_SECONDS for the last to answer before its result is recorded. By the plugin's own
    # call time (as its worker measures it) plus the worker's share: not by this lane's time per job, which
    # includes the runner's bookkeeping and, under contention, waits for the GIL (single calls then looked
    # too slow to group, and a burst of 50 jobs waited 70-90 ms for one-by-one calls).
    per_call = (pool.avg_call_seconds or INITIAL_CALL_SECONDS) + WORKER_SECONDS_PER_CALL
    return max(1, min(MAX_CALLS_PER_WRITE, int(MAX_WRITE_SECONDS / per_call)))


def _close_in_background(version: LaneVersion) -> None:
    # Closing waits for the workers to exit; a lane thread must not stall on that.
    log.info(
        "plugin %s %s (code %s) drained; stopping its workers",
        version.plugin.name,
        version.plugin.version,
        version.plugin.code_hash[:12],
    )
    threading.Thread(target=version.pool.close, name=f"close-{version.plugin.name}", daemon=True).start()
