"""A lane thread forming a batch while the other lane threads wait for jobs (no workers needed)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

from plugins.lane import Job, PluginLane
from plugins.offsets import Ack
from tests.support.plugins import new_invocation


def _lane() -> PluginLane:
    # _take, _take_more, submit and stop need no pool or plugin beyond a size, a name and interrupt()
    stub: Any = SimpleNamespace(size=2, name="stub", interrupt=lambda: None)
    return PluginLane(stub, stub, lambda lane, jobs, version: len(jobs))


def test_a_batch_being_formed_never_waits_past_its_window_while_other_threads_take_jobs() -> None:
    """Three threads wait in _take (a blocking get) while a fourth forms 2 ms batches, and jobs come in
    bursts: tokens are stolen from under the batching thread's wait all the time. With SimpleQueue.get
    (timeout=...) under CPython 3.11 such a wait could go on until the next job came (see _take_more),
    holding the jobs it had: the last ones of a burst then waited for the next burst. Here every batch
    ends within its window and every job is taken exactly once."""
    lane = _lane()
    invocation = new_invocation("stub", {})
    taken: list[Job] = []
    stop = threading.Event()

    def waiter() -> None:
        while (job := lane._take()) is not None:
            taken.append(job)

    def batcher() -> None:
        while not stop.is_set():
            jobs: list[Job] = []
            lane._take_more(jobs, 500, 0.002)
            taken.extend(jobs)

    def busy() -> None:  # holds the GIL for up to the switch interval (5 ms), as the runner's threads do
        while not stop.is_set():
            sum(range(1000))

    threads = [threading.Thread(target=waiter, daemon=True) for _ in range(3)]
    threads += [threading.Thread(target=batcher, daemon=True), threading.Thread(target=busy, daemon=True)]
    for t in threads:
        t.start()
    submitted = 0
    held = 0  # silences after which a batch still held jobs it had taken
    for _ in range(150):
        for _ in range(2):
            for _ in range(5):
                lane.submit(Job(invocation, Ack("t", 0, submitted, 0), 0.0))
                submitted += 1
            time.sleep(0.0021)  # bursts just past the batch window: the stealing case
        time.sleep(0.02)  # silence, ten windows long: every job has been taken and handed on by now
        held += len(taken) < submitted
    stop.set()
    lane.stop()
    for t in threads:
        t.join(2)
    assert not any(t.is_alive() for t in threads), "a lane thread is stuck"
    assert held == 0, f"after {held} of 150 silences a batch still held jobs (its 2 ms window long past)"
    assert len(taken) == submitted and len({id(j) for j in taken}) == submitted
