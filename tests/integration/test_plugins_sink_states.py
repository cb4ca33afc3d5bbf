"""The result writer's `pending`/`running` states (plugins/sink.py), with the real Redis and Kafka: held
back STATE_LINGER_SECONDS, and written only for a run that has not ended by then."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from confluent_kafka import Producer

from plugins import sink as sink_module
from plugins.offsets import Ack
from plugins.run_states import iso, state_payload
from plugins.sink import ResultSink
from plugins.store import RunStore
from schemas.invocation import Invocation, ManualTrigger
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_settings, remove_test_resources, wait_for
from tests.support.results import a_result


class Setup:
    def __init__(self, sink: ResultSink, store: RunStore, written: list[str], acked: list[Ack]):
        self.sink, self.store, self.written, self.acked = sink, store, written, acked
        self.offsets = itertools.count()  # each result's own Ack, so a wait for one cannot see another's

    def state(self, iid: str, status: str) -> None:
        invocation = Invocation(
            invocation_id=iid,
            plugin="echo",
            trigger=ManualTrigger(requested_by="pytest", requested_at=datetime.now(UTC), request_id=iid),
        )
        now = time.time()
        self.sink.state(iid, 1, now, lambda: state_payload(invocation, "1.0.0", status, iso(now)), status)

    def result(self, iid: str) -> Ack:
        ack = Ack("t", 0, next(self.offsets), 0)
        self.sink.submit(a_result(iid), [ack])
        return ack


@pytest.fixture
def setup(stack: None) -> Iterator[Setup]:
    settings = isolated_settings("sinkstates")
    ensure_topics(settings, [settings.topics.results])
    store = RunStore(settings)
    written: list[str] = []  # the invocation ids of the states handed to Redis, in order
    record_many = store.record_many

    def recording(results: Any, payloads: Any = None, finals: Any = None, states: Any = ()) -> dict[int, bytes]:
        written.extend(state[0] for state in states)
        return record_many(results, payloads, finals, states)

    store.record_many = recording  # type: ignore[method-assign]  # the real store, its calls seen
    acked: list[Ack] = []
    producer = Producer(settings.kafka_config(**{"acks": "all"}))
    sink = ResultSink(store, producer, settings.topics.results, acked.append)
    sink.start()
    yield Setup(sink, store, written, acked)
    sink.close()
    store.close()
    remove_test_resources(settings, [settings.topics.results])


def test_a_run_that_ends_within_the_linger_writes_no_state_while_other_results_are_written(setup, monkeypatch):
    monkeypatch.setattr(sink_module, "STATE_LINGER_SECONDS", 120.0)  # far longer than this test's steps
    setup.state("quick", "pending")
    setup.state("quick", "running")
    other = setup.result("other")  # another run's result: the writer writes a batch at once
    wait_for(lambda: other in setup.acked, 30, what="the other run's result stored and published")
    assert setup.store.current("quick") is None  # nothing of the quick run yet: its states are held
    quick = setup.result("quick")
    wait_for(lambda: quick in setup.acked, 30, what="the quick run's result stored and published")
    assert setup.written == []
    stored = setup.store.current("quick")
    assert stored is not None and stored.status == "success"


def test_a_run_still_going_after_the_linger_shows_its_latest_state_once_until_its_result(setup, monkeypatch):
    monkeypatch.setattr(sink_module, "STATE_LINGER_SECONDS", 0.2)
    setup.state("slow", "pending")
    setup.state("slow", "running")  # before the pending one was due: replaces it, keeps its time
    shown = wait_for(lambda: setup.store.current("slow"), 10, what="the slow run's state written")
    assert shown.status == "running"
    assert setup.written == ["slow"]  # one state write for the run, not one per state
    done = setup.result("slow")
    wait_for(lambda: done in setup.acked, 30, what="the slow run's result stored and published")
    stored = setup.store.current("slow")
    assert stored is not None and stored.status == "success"
    assert setup.store.client.exists(setup.store.state_key("slow")) == 0


def test_a_result_drops_its_runs_held_states_so_none_is_written_when_they_fall_due(setup, monkeypatch):
    monkeypatch.setattr(sink_module, "STATE_LINGER_SECONDS", 1.0)
    setup.state("ended", "running")
    ended = setup.result("ended")
    wait_for(lambda: ended in setup.acked, 30, what="the run's result stored and published")
    time.sleep(1.5)  # past the state's due time: still held, it would be written now
    later = setup.result("later")  # a batch after the due time
    wait_for(lambda: later in setup.acked, 30, what="a later result stored and published")
    assert setup.written == []
