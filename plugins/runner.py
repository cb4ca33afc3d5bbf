"""The runner process: Kafka invocations in, isolated plugin calls, results out.

    cdcflow.invoke.<plugin> --consumer--> parse, drop done ids --> plugin lane --> worker pool
         ^ commit (in order per partition)                                          |
         +---- delivery report <-- cdcflow.results <-- Redis run history <-- Result +

Threads: the main thread owns the Consumer (poll, dispatch, commit, pause/resume); each plugin
lane has one thread per worker; the result sink has a writer and a delivery-report thread.
An offset is committed only after its result is in Redis and acknowledged by Kafka, so a crash
anywhere re-delivers (and the done marker stops a finished invocation from running twice).
"""

from __future__ import annotations

import functools
import logging
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import redis
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import ValidationError

from plugins.cancel import Cancelled, Cancels, cancelled_result
from plugins.cancel_watch import CancelWatcher
from plugins.execution import RUNNER_ID, execute_many, rejected_result
from plugins.followups import FollowupPublisher, Unpublishable
from plugins.lane import Job, LaneVersion, PluginLane
from plugins.offsets import Ack, Earlier, OffsetTracker
from plugins.pool import WorkerPool, WorkerSpec
from plugins.registry import LoadedPlugin, discover, worker_target
from plugins.reloader import HotReloader
from plugins.retries import (
    NOT_BEFORE_HEADER,
    dead_letter,
    is_dead,
    not_before,
    retry_of,
    slim_dead_letter,
    start_at,
    wants_retry,
)
from plugins.run_states import iso, state_payload
from plugins.runner_ops import RunnerOps
from plugins.sink import ResultSink
from plugins.state import PluginStates
from plugins.store import RunStore, attempt_summary
from plugins.venvs import VenvError, ensure_venv, venv_python
from schemas.config import Config
from schemas.errors import from_validation_error
from schemas.invocation import Invocation
from schemas.manifest import UINT64, RetryPolicy, json_unsafe
from schemas.result import Result
from schemas.runtime.kafka_topics import DLQ_MAX_MESSAGE_BYTES, ensure_topics
from schemas.settings import Settings

log = logging.getLogger("cdcflow.runner")

POLL_TIMEOUT_SECONDS = 0.1
# While a lane is full its partitions are paused, and the loop must see it drain to resume them before
# it runs dry: the check comes this often then (a lane drains ~1,000 fast jobs in 100 ms).
PAUSED_POLL_TIMEOUT_SECONDS = 0.01
# A pause drops librdkafka's prefetched messages, and the fetch that brings them back after the resume
# waits behind the one outstanding to the broker: a long poll on the idle partitions (the .high topics)
# held up to fetch.wait.max.ms (500 by default). Measured: 55-100+ ms after each resume with the default,
# the lane ran dry; 15-27 ms with this. A new message still ends a long poll at once, so idle latency is
# unchanged; the cost is ~50 empty fetches a second per idle runner.
FETCH_WAIT_MAX_MS = 20
MAX_POLL_BATCH = 500
REDIS_RETRY_SECONDS = 1.0
MAX_INVOCATION_ID_CHARS = 256  # ids are uuids or derived from them; see _usable_id
# RunStore.accept's answers for a consumed invocation (0: to run)
ACCEPT_DONE, ACCEPT_RETRIED, ACCEPT_CANCELLED = 1, 2, 3


class _Stopping(Exception):
    """Raised out of a Redis wait when a stop was requested."""


@dataclass
class RunnerOptions:
    only: set[str] | None = None  # run just these plugins (e.g. a dedicated runner for a heavy one)
    shutdown_grace: float = 10.0  # how long running calls may finish after a stop request
    startup_timeout: float = 60.0  # per pool: interpreter start + plugin import
    watch: bool = True  # hot reload: watch the plugin folders and reload requests
    watch_interval: float = 1.0


@dataclass
class _Dispatch:
    lane: PluginLane
    invocation: Invocation
    ack: Ack
    not_before: float | None = None  # a retry's earliest start (epoch seconds)


def start_pool(
    settings: Settings, plugin: LoadedPlugin, options: RunnerOptions, size: int | None = None
) -> tuple[WorkerPool | None, str | None]:
    """The plugin's venv (built if missing) and a started warm pool of `size` workers (default: the
    plugin's concurrency), or (None, why it cannot start). `config check` starts one worker with it
    (plugins/start_check.py), so it finds what stops a plugin here."""
    try:
        venv = ensure_venv(settings.runners.venv_dir, plugin.manifest.dependencies)
    except VenvError as e:
        return None, f"its venv could not be built: {e}"
    spec = WorkerSpec(
        plugin=plugin.name,
        python=venv_python(venv),
        plugin_dir=plugin.path,
        entry_point=worker_target(plugin.manifest),
        memory_limit_mb=plugin.manifest.memory_limit_mb,
    )
    pool = WorkerPool(spec, size or plugin.manifest.concurrency, startup_timeout=options.startup_timeout)
    pool.start()
    if pool.startup_error is not None:
        err = pool.startup_error
        pool.close()
        return None, f"{err.get('type')}: {err.get('message')}\n{err.get('traceback') or ''}".rstrip()
    return pool, None


def make_lane(settings: Settings, plugin: LoadedPlugin, pool: WorkerPool, handle: Any) -> PluginLane:
    return PluginLane(
        plugin,
        pool,
        handle,
        topic=settings.topics.invoke(plugin.name),
        high_topic=settings.topics.invoke(plugin.name, "high"),
    )


def start_lanes(
    settings: Settings,
    plugins: Iterable[LoadedPlugin],
    options: RunnerOptions,
    handle: Any,
    on_error: Any = None,
) -> dict[str, PluginLane]:
    """Venv + warm pool for each plugin; a plugin that cannot start is logged and left out.

    Its topic is then not consumed: its invocations wait in Kafka until the plugin is fixed,
    rather than being turned into a stream of failed results.
    """
    lanes: dict[str, PluginLane] = {}
    for plugin in plugins:
        pool, error = start_pool(settings, plugin, options)
        if pool is None:
            log.error("plugin %s disabled: %s", plugin.name, error)
            if on_error is not None:
                on_error(plugin, error)
            continue
        lane = make_lane(settings, plugin, pool, handle)
        lanes[lane.topic] = lane
        log.info(
            "plugin %s %s ready: %d worker(s), code %s, topic %s",
            plugin.name,
            plugin.version,
            pool.size,
            plugin.code_hash[:12],
            lane.topic,
        )
    return lanes


class Runner:
    def __init__(self, settings: Settings, stop: threading.Event, options: RunnerOptions | None = None):
        self.settings = settings
        self.stop = stop
        self.options = options or RunnerOptions()
        self.store = RunStore(settings)
        self.tracker = OffsetTracker()
        self.completions: queue.SimpleQueue[Ack] = queue.SimpleQueue()
        self.dropped: queue.SimpleQueue[Ack] = queue.SimpleQueue()  # revoked while queued: ended unrun here
        self._closing = False
        self.lanes: dict[str, PluginLane] = {}  # by the plugin's (normal) topic
        self.by_topic: dict[str, PluginLane] = {}  # by every topic consumed: normal and high
        self.assigned: set[tuple[str, int]] = set()
        self._reapply_pauses = False
        self.paused_topics: set[str] = set()
        self.consumer: Consumer | None = None
        self.sink: ResultSink | None = None
        self.followups: FollowupPublisher | None = None
        self.states = PluginStates(self.store.client, settings.redis.key_prefix)
        self.reloader: HotReloader | None = None
        self.ops = RunnerOps(self)  # /metrics, probes, heartbeat, alerts (plugins/runner_ops.py)
        self.cancels = Cancels(self.store.client, self.store.prefix, self.store.ttl)
        self.cancel_watch = CancelWatcher(self.cancels, self._cancel_running, stop)

    # -- lifecycle ---------------------------------------------------------------------------
    def run(self, ready: threading.Event | None = None) -> int:
        try:
            self.store.ping()
        except redis.RedisError as e:
            log.error("cannot reach Redis at %s: %s", _redacted(self.settings.redis.url.get_secret_value()), e)
            return 1
        self.ops.start()
        self._start_plugins()
        if not self.lanes and not self.options.watch:
            log.error("no plugin could be started; nothing to run")
            self.store.close()
            self.ops.stop()
            return 2
        if not self.lanes:
            log.warning("no plugin could be started yet; waiting for one to appear or be fixed")
        try:
            self._start_consuming(ready)
            self._loop()
        except KafkaException as e:
            log.error("Kafka error at %s: %s", self.settings.kafka.bootstrap_servers, e)
            return 1
        finally:
            self._shutdown()
        return 0

    def _start_plugins(self) -> None:
        """The plugins found (or those of --plugin) started in their lanes, and the hot reloader to follow them."""
        found = discover(self.settings.runners.plugin_dirs)
        for problem in found.problems:
            log.error("plugin skipped: %s", problem)
        plugins = list(found.plugins.values())
        if self.options.only is not None:
            for missing in sorted(self.options.only - set(found.plugins)):
                log.error("plugin %s not found in %s", missing, ", ".join(map(str, self.settings.runners.plugin_dirs)))
            plugins = [p for p in plugins if p.name in self.options.only]
        reloader = self.reloader = HotReloader(
            self.settings,
            self.states,
            lambda: list(self.lanes.values()),
            start_pool=lambda plugin: start_pool(self.settings, plugin, self.options),
            build_lane=self._build_lane,
            stop=self.stop,
            only=self.options.only,
            interval=self.options.watch_interval,
        )
        self.lanes = start_lanes(
            self.settings,
            plugins,
            self.options,
            self._handle,
            on_error=lambda p, e: reloader.record_error(p.name, e, serving=False, code_hash=p.code_hash),
        )
        for problem in found.problems:
            reloader.record_error(problem.path.name, problem.message, serving=False)
        for lane in self.lanes.values():
            reloader.record_serving(lane.plugin, lane.current.loaded_at, lane.pool.unhealthy_reason())

    def _start_consuming(self, ready: threading.Event | None) -> None:
        """Topics, result sink, lane threads and the subscribed consumer; then the runner is ready."""
        assert self.reloader is not None
        # Each plugin has a normal and a high-priority topic. Both feed one lane, which runs high
        # first; the normal topic is paused when the lane is full, the high one only when the
        # lane is full of high work, so a high invocation never waits behind a Kafka backlog.
        self.by_topic = {t: lane for lane in self.lanes.values() for t in (lane.topic, lane.high_topic)}
        topics = sorted(self.by_topic)
        ensure_topics(self.settings, [*topics, self.settings.topics.results, self.settings.topics.dlq])
        if self.options.watch:
            self.reloader.start()
        producer = Producer(
            self.settings.kafka_config(
                **{
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 2,
                    "client.id": f"cdcflow-runner-{RUNNER_ID}",
                    # Dead letters may be larger than the invocations they hold (the DLQ topic takes them);
                    # a result too large for its topic is refused by the broker and slimmed (plugins/sink.py).
                    "message.max.bytes": DLQ_MAX_MESSAGE_BYTES,
                }
            )
        )
        self.sink = ResultSink(self.store, producer, self.settings.topics.results, self.completions.put)
        self.sink.start()
        self.followups = FollowupPublisher(producer, self.stop)
        self.cancel_watch.start()
        for lane in self.lanes.values():
            lane.start()
        self.consumer = Consumer(
            self.settings.kafka_config(
                **{
                    **self.settings.runners.group_options(),  # group, session, heartbeat, assignment
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "fetch.wait.max.ms": FETCH_WAIT_MAX_MS,
                    "client.id": f"cdcflow-runner-{RUNNER_ID}",
                    "on_commit": self._on_commit,
                }
            )
        )
        self._subscribe()
        log.info("runner %s consuming %s (group %s)", RUNNER_ID, ", ".join(topics), self.settings.runners.group_id)
        if ready is not None:
            ready.set()
        self.ops.mark_ready()

    def _loop(self) -> None:
        consumer = self.consumer
        assert consumer is not None
        while not self.stop.is_set():
            msg = consumer.poll(PAUSED_POLL_TIMEOUT_SECONDS if self.paused_topics else POLL_TIMEOUT_SECONDS)
            if msg is not None:
                # What is already fetched, in one call (a poll(0) per message measured no faster).
                batch = [msg, *consumer.consume(MAX_POLL_BATCH - 1, 0)]
                try:
                    self._dispatch(batch)
                except _Stopping:  # undispatched messages stay uncommitted
                    break
            try:
                self._drain_completions()
                self._admit_released()
            except _Stopping:
                break
            self._commit()
            self._flow_control()
            self._adopt_new_lanes()

    def _subscribe(self) -> None:
        assert self.consumer is not None
        topics = sorted(self.by_topic)
        if topics:  # an empty subscription is an error in librdkafka; wait for a first plugin instead
            self.consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)

    def _build_lane(self, plugin: LoadedPlugin, pool: WorkerPool) -> PluginLane:
        # Called by the reloader's thread: create the topics there, so the consumer thread never waits on it.
        lane = make_lane(self.settings, plugin, pool, self._handle)
        ensure_topics(self.settings, [lane.topic, lane.high_topic])
        return lane

    def _adopt_new_lanes(self) -> None:
        """Start lanes of plugins that appeared (or were fixed) while running, and consume their topics."""
        if self.reloader is None:
            return
        added = False
        while True:
            try:
                lane = self.reloader.new_lanes.get_nowait()
            except queue.Empty:
                break
            if lane.topic in self.lanes:  # cannot happen (one reload per folder at a time); never leak a pool
                lane.close_pools()
                continue
            lane.start()
            self.lanes[lane.topic] = lane
            self.by_topic[lane.topic] = self.by_topic[lane.high_topic] = lane
            added = True
            log.info("plugin %s %s added: consuming %s", lane.plugin.name, lane.plugin.version, lane.topic)
        if added:
            self._subscribe()

    def _shutdown(self) -> None:
        log.info("runner stopping")
        self._closing = True  # also after an error, when stop is not set: no revoke waits for closed lanes
        if self.reloader is not None:
            self.reloader.join(2.0)
            while True:  # lanes built but never adopted
                try:
                    self.reloader.new_lanes.get_nowait().close_pools()
                except queue.Empty:
                    break
        for lane in self.lanes.values():
            lane.stop()  # queued invocations are abandoned uncommitted: redelivered after restart
        deadline = time.monotonic() + self.options.shutdown_grace
        for lane in self.lanes.values():
            if not lane.join(max(0.0, deadline - time.monotonic())):
                log.warning(
                    "plugin %s: abandoning running call(s) after %.1fs grace; they stay uncommitted",
                    lane.plugin.name,
                    self.options.shutdown_grace,
                )
        for lane in self.lanes.values():
            lane.close_pools()  # a call still running returns `aborted` and is not recorded
        for lane in self.lanes.values():
            lane.join(2.0)
        if self.sink is not None:
            self.sink.close()
        if self.consumer is not None:
            self._drain_completions()
            self._commit(sync=True)
            self.consumer.close()
        self.store.close()
        self.ops.stop()
        log.info("runner stopped")

    # -- consuming ---------------------------------------------------------------------------
    def _dispatch(self, batch: list[Message]) -> None:
        consumed_at = time.time()
        accepted: list[_Dispatch] = []
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.error("consumer error: %s%s", err, _session_hint(err, self.settings))
                continue
            # The stubs make every getter optional; a consumed message without error() has all three.
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            ack = self.tracker.start(topic, partition, offset)  # type: ignore[arg-type]  # set on every message
            if ack is None:  # its partition was taken away by the rebalance consume() ran after fetching it
                continue
            lane = self.by_topic.get(topic)  # type: ignore[arg-type]  # never None here
            if lane is None:  # not subscribed any more (cannot happen today; hot reload will)
                self.completions.put(ack)
                continue
            invocation = self._parse(msg, lane, ack)
            if invocation is not None:
                accepted.append(_Dispatch(lane, invocation, ack, _not_before_of(msg, lane, consumed_at)))
        if accepted:
            self._admit(accepted, consumed_at)

    def _admit(self, dispatched: list[_Dispatch], consumed_at: float) -> None:
        """Submit parsed invocations to their lanes, or settle those that must not run (done, retried,
        cancelled), or hold those an earlier assignment of their partition still has out here."""
        accepted = [d for d in dispatched if not self._held(d)]
        # One round trip: done / retried / cancelled. The `pending` states of the rest go to the result
        # writer (off this path, and not written at all for a run whose result follows within 0.5 s).
        checks = [(d.invocation.invocation_id, d.invocation.attempt) for d in accepted]
        codes = self._with_redis(lambda: self.store.accept(checks)) if checks else []
        when = iso(consumed_at)
        assert self.sink is not None
        for d, code in zip(accepted, codes, strict=True):
            iid = d.invocation.invocation_id
            if code == ACCEPT_DONE:
                if self.tracker.earlier(d.ack) is Earlier.ENDED:
                    self.completions.put(d.ack)  # its earlier call here published the result already
                else:
                    self._skip_done(d)
            elif code == ACCEPT_CANCELLED:
                self._drop_cancelled(d.lane.plugin, d.invocation, d.ack, "before a runner received it")
            elif code == ACCEPT_RETRIED:
                # This attempt failed before and its retry is already on the topic: nothing left to do.
                log.info(
                    "%s %s attempt %d skipped: already failed and retried",
                    d.lane.plugin.name,
                    iid,
                    d.invocation.attempt,
                )
                self.completions.put(d.ack)
            else:
                pending = functools.partial(state_payload, d.invocation, d.lane.plugin.version, "pending", when)
                self.sink.state(iid, d.invocation.attempt, consumed_at, pending, "pending")
                if d.not_before is not None:
                    d.lane.submit_at(Job(d.invocation, d.ack, consumed_at), d.not_before)
                else:
                    d.lane.submit(Job(d.invocation, d.ack, consumed_at))

    def _admit_released(self) -> None:
        """Held messages whose earlier call has ended: settled (its result is published) or run now."""
        released = self.tracker.released()
        if released:
            self._admit(released, time.time())

    def _held(self, d: _Dispatch) -> bool:
        """Hold a message an earlier assignment of its partition still has queued or running here."""
        if self.tracker.earlier(d.ack) is not Earlier.RUNNING:
            return False
        log.info(
            "%s %s: still out from before %s[%d] was re-assigned; held until that ends",
            d.lane.plugin.name,
            d.invocation.invocation_id,
            d.ack.topic,
            d.ack.partition,
        )
        self.tracker.hold(d.ack, d)
        return True

    def _parse(self, msg: Message, lane: PluginLane, ack: Ack) -> Invocation | None:
        """The message's Invocation, or None after submitting a `rejected` result for it."""
        raw = msg.value() or b""
        try:
            invocation = Invocation.model_validate_json(raw)
        except ValidationError as e:
            where = _where(msg)
            message = str(from_validation_error(where, e))
            self._reject(lane, ack, _claimed_id(raw) or f"invalid:{where}", "InvalidInvocation", message)
            return None
        problem = _unrunnable(invocation, lane.plugin.name)
        if problem is not None:
            where = _where(msg)
            iid = invocation.invocation_id if _usable_id(invocation.invocation_id) else f"invalid:{where}"
            self._reject(lane, ack, iid, problem[0], f"{where}: {problem[1]}", invocation)
            return None
        return invocation

    def _reject(
        self,
        lane: PluginLane,
        ack: Ack,
        invocation_id: str,
        error_type: str,
        message: str,
        invocation: Invocation | None = None,
    ) -> None:
        log.warning("%s %s rejected: %s", lane.plugin.name, invocation_id, _clip(message))
        asked: dict[str, Any] = {}
        if invocation is not None:  # what was asked for, as far as JSON can carry it (rejected_result checks)
            asked = {
                "attempt": invocation.attempt,
                "trigger_kind": invocation.trigger.kind,
                "params": invocation.params,
                "trigger": _trigger_of(invocation),
            }
        result = rejected_result(
            invocation_id,
            lane.plugin.name,
            lane.plugin.version,
            error_type,
            message,
            code_hash=lane.plugin.code_hash,
            **asked,
        )
        assert self.sink is not None
        self.ops.on_result(result)
        self.sink.submit(result, [ack])

    def _drop_cancelled(self, plugin: LoadedPlugin, invocation: Invocation, ack: Ack, when: str) -> None:
        """Record a cancelled invocation `cancelled` without running it (its offset moves on)."""
        iid = invocation.invocation_id
        log.info("%s %s cancelled %s; not run", plugin.name, iid, when)
        try:  # who asked and when, for the message: not worth waiting for Redis
            mark = self.cancels.get(iid)
        except redis.RedisError:
            mark = None
        result = cancelled_result(Cancelled.of(invocation, plugin.version), mark, when)
        self.ops.on_result(result)
        assert self.sink is not None
        self.sink.submit(result, [ack])

    def _cancel_running(self, invocation_id: str) -> None:
        """The cancel watcher's hook: stop the invocation's call if one of this runner's workers runs it."""
        for lane in list(self.lanes.values()):
            if lane.cancel_running(invocation_id):
                log.info("%s %s cancelled while running; stopping its worker", lane.plugin.name, invocation_id)

    def _skip_done(self, d: _Dispatch) -> None:
        iid = d.invocation.invocation_id
        log.info("%s %s skipped: already done (redelivery); re-publishing its stored result", d.lane.plugin.name, iid)
        payload = self._with_redis(lambda: self.store.get_raw(iid))
        assert self.sink is not None
        if payload is None:  # the run record expired but the marker did not yet: nothing to re-publish
            self.completions.put(d.ack)
        else:
            self.sink.announce(iid, payload, [d.ack])

    def _with_redis(self, fn: Any) -> Any:
        # Without Redis we cannot tell a duplicate from a new invocation: wait rather than guess.
        while True:
            try:
                return fn()
            except redis.RedisError as e:
                if self.stop.is_set():
                    raise _Stopping from e
                log.error("Redis unavailable (%s); retrying in %.0fs", e, REDIS_RETRY_SECONDS)
                self.stop.wait(REDIS_RETRY_SECONDS)

    # -- running (lane threads) -----------------------------------------------------------------
    def _handle(self, lane: PluginLane, jobs: list[Job], version: LaneVersion) -> int:
        """Jobs the lane took together (one, a batch plugin's batch, or a fast plugin's queued ones, see
        execute_many); then each is recorded, retried or dead-lettered on its own. The version is the one
        the lane handed out: after a hot reload, a call that started on the old code finishes and is
        reported with the old version and code hash. Returns how many it ran."""
        started = []
        for job in jobs:
            if not self.tracker.is_current(job.ack):  # revoked while it waited: the new owner runs it
                self.dropped.put(job.ack)
            elif self._start(lane, job, version):
                started.append(job)
        if not started:
            return 0
        try:
            results = execute_many(
                version.plugin, version.pool, [j.invocation for j in started], [j.consumed_at for j in started]
            )
        except Exception as e:  # as _record does for one: each ends with a (final) result
            log.exception("%s: unexpected error running %d invocation(s)", lane.plugin.name, len(started))
            failed = [self._runner_error(version.plugin, job.invocation, e) for job in started]
            for job, result in zip(started, failed, strict=True):
                self._record(lane, job, version, functools.partial(_final, result))
            return len(started)
        abandoned = 0
        for job, maybe in zip(started, results, strict=True):
            if maybe is None:  # the pool closed mid-call: nothing may be recorded
                abandoned += 1
            else:
                self._record(lane, job, version, functools.partial(self._concluded, lane, job, version, maybe))
        if abandoned:
            log.info("%s: %d invocation(s) abandoned at shutdown (will be redelivered)", lane.plugin.name, abandoned)
        return len(started)

    def _record(
        self, lane: PluginLane, job: Job, version: LaneVersion, outcome: Callable[[], tuple[Result, bool] | None]
    ) -> None:
        # Whatever goes wrong while handling the invocation, it ends with a result: an exception left
        # to the lane would leave its offset uncommitted, and with it every later one of its partition.
        try:
            done = outcome()
        except Exception as e:
            log.exception("%s %s: unexpected error; recorded as failed", lane.plugin.name, job.invocation.invocation_id)
            done = self._runner_error(version.plugin, job.invocation, e), True
        if done is not None:
            assert self.sink is not None
            self.sink.submit(done[0], [job.ack], final=done[1])

    def _start(self, lane: PluginLane, job: Job, version: LaneVersion) -> bool:
        """_started, or False after recording the invocation failed if that raised (it must end with a result)."""
        try:
            return self._started(job, version)
        except Exception as e:
            log.exception("%s %s: unexpected error; recorded as failed", lane.plugin.name, job.invocation.invocation_id)
            self._record(
                lane, job, version, functools.partial(_final, self._runner_error(version.plugin, job.invocation, e))
            )
            return False

    def _started(self, job: Job, version: LaneVersion) -> bool:
        """Mark the invocation running; False (and recorded `cancelled`) if it was cancelled before."""
        plugin = version.plugin
        invocation = job.invocation
        if invocation.invocation_id in self.cancel_watch:  # cancelled while queued or waiting for its retry
            self._drop_cancelled(plugin, invocation, job.ack, "before it started")
            return False
        assert self.sink is not None
        started = time.time()
        self.sink.state(
            invocation.invocation_id,
            invocation.attempt,
            started,
            functools.partial(_running_state, invocation, plugin.version, started, version.pool.reserved_pid()),
            "running",
        )
        self.ops.on_start(invocation)
        return True

    def _concluded(
        self, lane: PluginLane, job: Job, version: LaneVersion, result: Result
    ) -> tuple[Result, bool] | None:
        """What to record of a finished call: the result, a retry's attempt or the dead letter's final result."""
        _log_result(result)
        self.ops.on_result(result)
        policy = version.plugin.manifest.retries
        if wants_retry(result, policy):
            try:
                retried = self._retry(lane, job, result, policy)
            except Unpublishable as e:  # e.g. the retry is too large for the topic: it can never be retried
                log.warning(
                    "%s %s: its retry cannot be published (%s); dead-lettered",
                    lane.plugin.name,
                    result.invocation_id,
                    e,
                )
            else:
                return None if retried is None else (retried, False)
        if wants_retry(result, policy) or is_dead(result, policy):
            dead = self._dead_letter(lane, job, result)
            if dead is None:
                return None
            result = dead
        return result, True

    def _retry(self, lane: PluginLane, job: Job, result: Result, policy: RetryPolicy) -> Result | None:
        """Publish the next attempt; the failed attempt's result to record (None: stopping first)."""
        assert self.followups is not None
        retry, start_after = retry_of(job.invocation, result, policy)
        result = result.model_copy(update={"next_attempt": {"attempt": retry.attempt, "not_before": start_after}})
        retry_topic = self.settings.topics.invoke(lane.plugin.name, retry.priority)
        if not self.followups.publish(
            retry_topic,
            retry.invocation_id.encode(),
            retry.model_dump_json().encode(),
            [(NOT_BEFORE_HEADER, repr(start_after).encode())],
        ):
            return None  # stopping before Kafka took the retry: the attempt stays uncommitted and re-runs
        log.info(
            "%s %s attempt %d %s; attempt %d in %.1fs",
            lane.plugin.name,
            retry.invocation_id,
            result.attempt,
            result.status,
            retry.attempt,
            max(0.0, start_after - time.time()),
        )
        return result

    def _dead_letter(self, lane: PluginLane, job: Job, result: Result) -> Result | None:
        """Publish the dead letter; the final result to record (None: stopping first)."""
        assert self.followups is not None
        iid = job.invocation.invocation_id
        earlier = [a for a in self._with_redis(lambda: self.store.attempts(iid)) if a.get("attempt") != result.attempt]
        entry = dead_letter(job.invocation, result, [*earlier, attempt_summary(result)], lane.topic, job.ack)
        try:
            published = self.followups.publish(self.settings.topics.dlq, iid.encode(), orjson.dumps(entry))
        except Unpublishable as e:
            # Too large for the topic (created before it took large entries): the entry without the
            # invocation's params, which stay on the source topic at the offset the entry names.
            log.warning("%s %s: dead letter too large (%s); publishing it without params", lane.plugin.name, iid, e)
            entry = slim_dead_letter(entry)
            published = self.followups.publish(self.settings.topics.dlq, iid.encode(), orjson.dumps(entry))
        if not published:
            return None
        log.warning(
            "%s %s dead-lettered after %d attempt(s)",
            lane.plugin.name,
            iid,
            result.attempt,
            extra={"plugin": lane.plugin.name, "invocation_id": iid},
        )
        self.ops.on_dead_letter(entry)
        return result.model_copy(update={"dead_lettered": True})

    def _runner_error(self, plugin: LoadedPlugin, invocation: Invocation, error: Exception) -> Result:
        """A final `failed` result for an invocation the runner itself could not see through."""
        result = rejected_result(
            invocation.invocation_id,
            plugin.name,
            plugin.version,
            "RunnerError",
            f"the runner could not handle this invocation: {type(error).__name__}: {error}",
            attempt=invocation.attempt,
            trigger_kind=invocation.trigger.kind,
            params=invocation.params,
            trigger=_trigger_of(invocation),
            code_hash=plugin.code_hash,
        )
        assert result.error is not None
        result.error.traceback = traceback.format_exc()[-20000:]
        result = result.model_copy(update={"status": "failed"})
        self.ops.on_result(result)
        return result

    # -- committing --------------------------------------------------------------------------
    def _drain_completions(self) -> None:
        while not self.dropped.empty():  # only this thread takes from it
            self.tracker.finish(self.dropped.get_nowait(), ran=False)
        while True:
            try:
                ack = self.completions.get_nowait()
            except queue.Empty:
                return
            self.tracker.finish(ack)

    def _commit(self, sync: bool = False, only: set[tuple[str, int]] | None = None) -> None:
        commits = self.tracker.commits(only)
        if not commits or self.consumer is None:
            return
        offsets = [TopicPartition(t, p, o) for t, p, o in commits]
        try:
            if sync:
                self.consumer.commit(offsets=offsets, asynchronous=False)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=True)
        except KafkaException as e:
            log.warning("commit of %s failed: %s (will be redelivered and skipped as done)", offsets, e)

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None:
            log.warning("offset commit failed: %s", err)

    # -- rebalancing and flow control --------------------------------------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.tracker.assign(tp.topic, tp.partition)
            self.assigned.add((tp.topic, tp.partition))
        if partitions:
            # librdkafka keeps a partition's pause through a revoke and a later re-assignment: one
            # paused while its lane was full, then taken away and given back after the lane drained,
            # would never be fetched again. Pauses are per topic here, re-applied by _flow_control.
            if self.settings.runners.partition_assignment == "cooperative-sticky":
                consumer.incremental_assign(partitions)
            else:  # eager: the whole assignment
                consumer.assign(partitions)
            consumer.resume(partitions)
        self._reapply_pauses = True
        log.info("assigned %s", _fmt(partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        if not self._closing:  # closing: the lanes are closed, nothing more will finish
            self._let_running_finish(keys)
        self._drain_completions()
        self._commit(sync=True, only=keys)  # keep what finished; running calls of these partitions are orphaned
        for topic, partition in keys:
            self.tracker.revoke(topic, partition)
        self.assigned -= keys
        log.info("revoked %s", _fmt(partitions))

    def _let_running_finish(self, keys: set[tuple[str, int]]) -> None:
        """Before partitions go: no new call starts on them, their queued invocations are left to the new
        owner, and the calls already running get up to revoke_wait_seconds to end and be committed here
        (so the new owner does not run them again). The rebalance waits meanwhile."""
        self.tracker.start_revoking(keys)
        for lane in self.lanes.values():
            for ack in lane.queued_acks():
                if (ack.topic, ack.partition) in keys:
                    self.tracker.finish(ack, ran=False)  # the lane drops it when it gets to it
        wait = self.settings.runners.revoke_wait_seconds
        deadline = time.monotonic() + wait
        self._drain_completions()
        running = self.tracker.unsettled(keys)
        if running:
            log.info("waiting up to %.1fs for %d running call(s) of partitions being revoked", wait, running)
        while running and time.monotonic() < deadline and not self.stop.wait(0.005):
            self._drain_completions()
            try:  # a held message whose earlier call ended: settled here (or dropped, for the new owner)
                self._admit_released()
            except _Stopping:
                break
            running = self.tracker.unsettled(keys)
        if running:
            log.warning(
                "%d call(s) still running after %.1fs as their partitions were revoked: they run again on "
                "the new owner (runners.revoke_wait_seconds)",
                running,
                wait,
            )

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.tracker.revoke(tp.topic, tp.partition)
            self.assigned.discard((tp.topic, tp.partition))
        log.warning("lost %s", _fmt(partitions))

    def _flow_control(self) -> None:
        """Pause a plugin's partitions while its lane is full; resume when it has drained to half."""
        assert self.consumer is not None
        for topic, lane in self.by_topic.items():
            parts = [TopicPartition(t, p) for t, p in self.assigned if t == topic]
            backlog = lane.high_backlog if topic == lane.high_topic else lane.backlog
            paused = topic in self.paused_topics
            if not paused and backlog >= lane.high_water:
                self.paused_topics.add(topic)
                if parts:
                    self.consumer.pause(parts)
            elif paused and backlog <= lane.low_water:
                self.paused_topics.discard(topic)
                if parts:
                    self.consumer.resume(parts)
            elif paused and self._reapply_pauses and parts:
                self.consumer.pause(parts)  # newly assigned partitions start unpaused
        self._reapply_pauses = False


def _session_hint(err: KafkaError, settings: Settings) -> str:
    if err.code() != KafkaError.INVALID_SESSION_TIMEOUT:
        return ""
    return (
        f" (runners.session_timeout_ms={settings.runners.session_timeout_ms} is outside the broker's "
        "group.min.session.timeout.ms..group.max.session.timeout.ms, 6000..1800000 by default)"
    )


def _running_state(invocation: Invocation, plugin_version: str, started: float, worker_pid: int | None) -> bytes:
    return state_payload(invocation, plugin_version, "running", iso(started), worker_pid)


def _final(result: Result) -> tuple[Result, bool]:
    return result, True


def _log_result(result: Result) -> None:
    level = logging.INFO if result.status == "success" else logging.WARNING
    if log.isEnabledFor(level):
        error = (
            f" {result.error.type}: {_clip(result.error.message.splitlines()[0]) if result.error.message else ''}"
            if result.error
            else ""
        )
        log.log(
            level,
            "%s %s %s %.2fms%s",
            result.plugin,
            result.invocation_id,
            result.status,
            result.duration_ms,
            error,
            extra={"plugin": result.plugin, "invocation_id": result.invocation_id, "status": result.status},
        )


def _not_before_of(msg: Message, lane: PluginLane, now: float) -> float | None:
    """A retry message's start time: its header's, within what the plugin's policy allows."""
    headers = msg.headers()  # consumed: a list or None (the stubs add the produce-side dict)
    after = not_before(headers)  # type: ignore[arg-type]  # never a dict here
    if after is None:
        if isinstance(headers, list) and any(k == NOT_BEFORE_HEADER for k, _ in headers):
            log.warning("%s: its %s header is not a finite time; running it now", _where(msg), NOT_BEFORE_HEADER)
        return None
    latest = start_at(after, now, lane.plugin.manifest.retries)
    if latest < after:
        log.warning(
            "%s: its %s header is further ahead than the retry policy allows; capped", _where(msg), NOT_BEFORE_HEADER
        )
    return latest


def _where(msg: Message) -> str:
    # Only for messages that need naming: three calls into librdkafka and a format per message add up.
    return f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"


def _claimed_id(raw: bytes) -> str | None:
    """The invocation_id a malformed message claims, so its sender can find the rejection."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    iid = data.get("invocation_id") if isinstance(data, dict) else None
    return iid if isinstance(iid, str) and _usable_id(iid) else None


def _usable_id(invocation_id: str) -> bool:
    # The id is a Kafka key and part of Redis keys: a blank one would be shared by every such
    # message (the first one's done marker would swallow the others), a huge one outgrow the topic.
    return bool(invocation_id.strip()) and len(invocation_id) <= MAX_INVOCATION_ID_CHARS


def _unrunnable(invocation: Invocation, plugin: str) -> tuple[str, str] | None:
    """(error type, why) when a well-formed invocation still cannot be run or recorded here."""
    if not _usable_id(invocation.invocation_id):
        return "InvalidInvocation", f"invocation_id must be 1 to {MAX_INVOCATION_ID_CHARS} characters, not blank"
    if invocation.plugin != plugin:
        return "WrongPlugin", f"invocation for plugin {_clip(invocation.plugin, 100)!r} on the topic of {plugin!r}"
    # Parameters are checked against the manifest when the invocation runs; these could not even be
    # handed to the worker or recorded (orjson refuses integers past 64 bits, NaN would become null).
    # A row change's trigger is walked whole (~3 us for a sysbench row's two images): a scan of the
    # message's text for what could parse into such values, tried to skip the walk, cost 12 us on the same
    # message (substring searches over digit-heavy text) and was needed for 27% of messages anyway (a uuid
    # with "e" and three digits in it looks like an exponent).
    why = json_unsafe(invocation.attempt, "attempt") or _trigger_unsafe(invocation)
    return ("InvalidInvocation", why) if why is not None else None


def _trigger_unsafe(invocation: Invocation) -> str | None:
    """Why JSON cannot carry the trigger, or None. Per message: its fields are read where they are
    (the model's __dict__, no model_dump copy), and only a cdc row's images hold numbers to look at."""
    return json_unsafe(invocation.trigger.__dict__, "trigger", max_int=UINT64)


def _trigger_of(invocation: Invocation) -> dict[str, Any] | None:
    """The trigger as JSON, or None when JSON cannot carry it (mode="json" would turn NaN into null)."""
    if _trigger_unsafe(invocation) is not None:
        return None
    return invocation.trigger.model_dump(mode="json")


def _clip(text: str, limit: int = 300) -> str:
    """A log line names a value, it does not carry it: a message may quote a megabyte."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _fmt(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"


def _redacted(url: str) -> str:
    head, sep, tail = url.rpartition("@")
    return f"{head.split('//')[0]}//***@{tail}" if sep else url


def run_runner(
    config: Config,
    stop_event: threading.Event | None = None,
    *,
    plugins: Iterable[str] | None = None,
    ready: threading.Event | None = None,
    shutdown_grace: float = 10.0,
    watch: bool = True,
) -> int:
    """Run until stop_event is set (or SIGTERM/SIGINT when called from the main thread); return an exit code.

    `plugins` limits the runner to those plugin names; `ready` is set once it is consuming.
    """
    stop = stop_event or threading.Event()
    options = RunnerOptions(
        only=set(plugins) if plugins is not None else None, shutdown_grace=shutdown_grace, watch=watch
    )
    previous: dict[signal.Signals, Any] = {}  # the handlers to restore
    if threading.current_thread() is threading.main_thread():

        def request_stop(signum: int, frame: Any) -> None:
            log.info("received %s", signal.Signals(signum).name)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, request_stop)
    try:
        return Runner(config.settings, stop, options).run(ready)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
