"""Where finished invocations go: Redis first, then the results topic, then the commit.

The `pending` and `running` states of each run (plugins/run_states.py) go through the same writer:
queued when the runner takes the invocation and when a lane thread starts it, they are held back
STATE_LINGER_SECONDS from the run's first state and written (with the next batch) only if the run
has not ended by then; its result, passing through the same writer, drops them. So a run shows its
state within that much of being taken, and a short call writes none: under a backlog with a batch
plugin, every run's `pending` and `running` states were written, ~45% of Redis's CPU per row.
States are not published.

One writer thread takes every queued result, writes the whole batch to Redis in one pipeline,
then produces each to Kafka. Only Kafka's delivery report (acks=all) releases the invocation's
offset for commit, so a committed offset always has its result both stored and published. Batching
keeps Redis at most one round trip per result under load, without making a lone result wait.
"""

from __future__ import annotations

import functools
import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from plugins.offsets import Ack
from plugins.store import RunStore
from schemas.result import Result

log = logging.getLogger(__name__)

MAX_BATCH = 500
# How long a run's states are held back (see _collect): a run that takes longer shows its state this
# much later, one that ends sooner never writes one.
STATE_LINGER_SECONDS = 0.5
RETRY_DELAY_SECONDS = 1.0
SLIM_ERROR_CHARS = 20000  # of a slimmed result's error message
SLIM_FIELD_MAX_BYTES = 64 * 1024  # params or trigger larger than this leave a slimmed result


@dataclass(slots=True)
class SinkItem:
    key: str  # the invocation id: results of one invocation land in one partition
    payload: bytes  # the Result's JSON, stored and produced byte for byte
    result: Result | None  # None: already stored (a re-announcement), only produce it
    acks: tuple[Ack, ...]
    final: bool = True  # False: a failed attempt whose retry is already on Kafka (no done marker)
    state: str | None = None  # "pending" or "running": a run's in-progress state, stored only
    # The state's JSON, built only if it is written: most runs end before their states are due.
    state_json: Callable[[], bytes] | None = None
    at: float = 0.0  # the state's time
    attempt: int = 1  # the state's attempt
    due: float = 0.0  # time.monotonic() at which the state is written if its run has not ended


# Put on the queue by close(): the writer finishes the batch it is building and stops.
_STOP = SinkItem("", b"", None, ())


class ResultSink:
    def __init__(self, store: RunStore, producer: Producer, topic: str, on_acked: Callable[[Ack], None]):
        self.store = store
        self.producer = producer
        self.topic = topic
        self.on_acked = on_acked
        self._queue: queue.SimpleQueue[SinkItem] = queue.SimpleQueue()
        self._give_up_at: float | None = None  # set by close(): stop retrying Redis after this
        self._polling = threading.Event()
        # States not yet due, one per run (by invocation id: its latest attempt's), oldest first. The store
        # takes one state per run in a call. The writer thread's alone.
        self._held: dict[str, SinkItem] = {}
        self._writer = threading.Thread(target=self._write_loop, name="result-writer", daemon=True)
        self._poller = threading.Thread(target=self._poll_loop, name="result-delivery", daemon=True)

    def start(self) -> None:
        self._polling.set()
        self._writer.start()
        self._poller.start()

    def submit(self, result: Result, acks: Sequence[Ack], final: bool = True) -> None:
        self._queue.put(SinkItem(result.invocation_id, result.model_dump_json().encode(), result, tuple(acks), final))

    def state(self, invocation_id: str, attempt: int, at: float, state_json: Callable[[], bytes], status: str) -> None:
        """Record a run's `pending` or `running` state, if the run has not ended STATE_LINGER_SECONDS after
        its first state (see _collect)."""
        due = time.monotonic() + STATE_LINGER_SECONDS
        self._queue.put(
            SinkItem(invocation_id, b"", None, (), state=status, at=at, attempt=attempt, state_json=state_json, due=due)
        )

    def announce(self, invocation_id: str, payload: bytes, acks: Sequence[Ack]) -> None:
        """Publish an already stored result again (a redelivered invocation that is done)."""
        self._queue.put(SinkItem(invocation_id, payload, None, tuple(acks)))

    def close(self, timeout: float = 10.0) -> None:
        """Write and publish everything queued so far, waiting at most `timeout` seconds. States not yet
        due are dropped: the lanes have stopped, so their runs have ended or go back to Kafka."""
        self._give_up_at = time.monotonic() + timeout
        self._queue.put(_STOP)
        self._writer.join(timeout)
        self._polling.clear()
        self._poller.join(2.0)
        remaining = self.producer.flush(max(0.5, self._give_up_at - time.monotonic()))
        if remaining:
            log.warning("%d result(s) not confirmed by Kafka at shutdown; their offsets stay uncommitted", remaining)

    # -- threads ---------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        # Serves delivery reports as they arrive (poll returns early when there is one).
        while self._polling.is_set():
            self.producer.poll(0.1)

    def _collect(self) -> tuple[list[SinkItem], bool]:
        """The next batch: the results queued so far and the held states now due; and whether close()
        asked to stop after it. Waits for an item, or until the oldest held state is due."""
        batch: list[SinkItem] = []
        stop = False
        try:
            item = self._queue.get(timeout=self._until_due())
            while item is not _STOP:
                batch.append(item)
                if len(batch) == MAX_BATCH:
                    break
                item = self._queue.get_nowait()
            stop = item is _STOP
        except queue.Empty:
            pass
        results = [item for item in batch if item.state is None]
        for item in batch:
            if item.state is not None:
                self._hold(item)
            elif item.result is not None:  # the run's attempt ended: its states need not be written
                held = self._held.get(item.key)
                if held is not None and held.attempt == item.result.attempt:
                    del self._held[item.key]
        return results + self._due(MAX_BATCH - len(results)), stop

    def _until_due(self) -> float | None:
        """Seconds until the oldest held state is due; None (wait for the next item) when none is held."""
        oldest = next(iter(self._held.values()), None)
        return None if oldest is None else max(0.0, oldest.due - time.monotonic())

    def _hold(self, state: SinkItem) -> None:
        earlier = self._held.get(state.key)
        if earlier is not None:  # `running` after `pending`, or a later attempt's: due when the first was
            if earlier.attempt > state.attempt:
                return
            state.due = earlier.due
        self._held[state.key] = state  # an existing key keeps its place, so the oldest stay first

    def _due(self, limit: int) -> list[SinkItem]:
        now = time.monotonic()
        due: list[SinkItem] = []
        for state in self._held.values():
            if state.due > now or len(due) >= limit:
                break
            due.append(state)
        for state in due:
            del self._held[state.key]
        return due

    def _write_loop(self) -> None:
        while True:
            batch, stop = self._collect()
            # Never let the writer die on an unexpected error: everything after it would stall.
            try:
                stored = bool(batch) and self._store(batch)
            except Exception:
                log.exception("unexpected error storing %d result(s); their offsets stay uncommitted", len(batch))
                stored = False
            for item in batch if stored else ():
                if item.state is not None:
                    continue
                try:
                    self._produce(item)
                except Exception:
                    log.exception("cannot publish result %s; its offset stays uncommitted", item.key)
            if stop:
                return

    def _store(self, batch: list[SinkItem]) -> bool:
        items = [i for i in batch if i.result is not None]
        states = [(i.key, i.at, i.state_json(), i.state or "", i.attempt) for i in batch if i.state_json]
        if not items and not states:
            return True
        results = [i.result for i in items if i.result is not None]
        payloads = [i.payload for i in items]
        finals = [i.final for i in items]
        while True:
            try:
                kept = self.store.record_many(results, payloads, finals, states)
                for position, stored in kept.items():
                    # the run was cancelled first: what is stored (cancelled) is what gets published
                    if stored:
                        items[position].payload = stored
                return True
            except redis.RedisError as e:
                if self._give_up_at is not None and time.monotonic() > self._give_up_at:
                    log.error("giving up on storing %d result(s) at shutdown (%s); they will be re-run", len(batch), e)
                    return False
                log.error(
                    "cannot store %d result(s) in Redis (%s); retrying in %.0fs", len(results), e, RETRY_DELAY_SECONDS
                )
                time.sleep(RETRY_DELAY_SECONDS)

    def _produce(self, item: SinkItem) -> None:
        slimmed = False
        while True:
            try:
                self.producer.produce(
                    self.topic,
                    key=item.key.encode(),
                    value=item.payload,
                    on_delivery=functools.partial(self._delivered, item),
                )
                return
            except BufferError:  # librdkafka's local queue is full: let deliveries drain
                self.producer.poll(0.1)
            except KafkaException as e:
                if e.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE or slimmed:
                    raise
                log.warning("result %s is too large for %s; publishing it slimmed", item.key, self.topic)
                item = SinkItem(item.key, slim_payload(item.payload), None, item.acks)
                slimmed = True

    def _delivered(self, item: SinkItem, err: KafkaError | None, msg: Message) -> None:
        try:
            if err is not None:
                # The result is stored; publish it again rather than commit an offset without it.
                too_large = err.code() == KafkaError.MSG_SIZE_TOO_LARGE
                if too_large:  # the producer takes dead-letter sizes; the broker judges the results topic
                    log.warning("result %s is too large for %s; publishing it slimmed", item.key, self.topic)
                else:
                    log.error("result %s not delivered to %s (%s); retrying", item.key, self.topic, err)
                if self._give_up_at is None:
                    payload = slim_payload(item.payload) if too_large else item.payload
                    self._queue.put(SinkItem(item.key, payload, None, item.acks))
                return
            for ack in item.acks:
                self.on_acked(ack)
        except Exception:  # an exception here would surface in producer.poll() and end the delivery thread
            log.exception("error handling the delivery report of %s", item.key)


def slim_payload(payload: bytes) -> bytes:
    """The result for a results topic that cannot take it whole (Redis keeps it whole): without its
    output, its error cut short, and its params and trigger only when small, so that it fits any topic
    (a second slimming must not fail the same way: the offset would never be committed)."""
    data = json.loads(payload)
    if "output_truncated" not in data:
        data["output_truncated"] = {"bytes": len(json.dumps(data.get("output")).encode()), "note": _NOTE}
    data["output"] = None
    error = data.get("error")
    if isinstance(error, dict):
        error["message"] = str(error.get("message") or "")[:SLIM_ERROR_CHARS]
        if len(error.get("traceback") or "") > 20000:
            error["traceback"] = error["traceback"][-20000:]
    for name in ("params", "trigger"):
        size = len(json.dumps(data.get(name)).encode())
        if size > SLIM_FIELD_MAX_BYTES:
            data[name] = None
            data[f"{name}_truncated"] = {"bytes": size, "note": _NOTE}
    return json.dumps(data).encode()


_NOTE = "too large for the results topic; the full result is in the run history"
