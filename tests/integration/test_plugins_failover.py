"""kill -9 of one of two runners under a steady stream, three times (a new runner replacing the dead
one each time): another runner takes the dead one's partitions over (in far less than librdkafka's
default 45 s session), nothing is lost and nothing recorded twice.

Three rounds, because partitions also come back: a runner that paused a partition (its lane full
with the backlog of the outage), lost it to a new runner, and gets it back when that one is killed
must fetch it again (librdkafka keeps a pause through a revoke and a re-assignment)."""

from __future__ import annotations

import time

from plugins.store import RunStore
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import remove_test_resources, wait_for
from tests.support.failover import (
    ResultWatch,
    SteadyStream,
    kill_one,
    make_config,
    runner_id,
    side_effects,
    start_runner,
    topics,
    wait_owned_by,
)

PARTITIONS = 4
ROUNDS = 3
# A generous bound, not the target (bench/runner_failover.py measures that): it still fails with
# the 45 s session librdkafka would use, and with a takeover that never comes.
TAKEOVER_BOUND_SECONDS = 30.0


def test_sigkilled_runners_partitions_are_taken_over_nothing_lost_or_recorded_twice(stack, tmp_path):
    cfg, folder = make_config(tmp_path, PARTITIONS)
    s = cfg.settings
    ensure_topics(s, topics(s))
    assert cfg.path is not None
    path = cfg.path
    started = [start_runner(path, tmp_path / f"runner-{i}.log") for i in range(2)]
    runners = list(started)
    watch, stream = ResultWatch(s), SteadyStream(s, PARTITIONS, rate=50.0)
    store = RunStore(s)
    killed = []  # (dead runner, its partitions)
    try:
        wait_owned_by(s, {r.pid for r in runners}, PARTITIONS)
        watch.start()
        stream.start()
        for n in range(ROUNDS):
            victim, dead, takeover = kill_one(s, runners, n, stream, watch, timeout=TAKEOVER_BOUND_SECONDS)
            assert takeover.runner in {runner_id(r.pid) for r in runners}, takeover
            killed.append((victim, dead))
            started.append(start_runner(path, tmp_path / f"runner-{len(started)}.log"))
            runners.append(started[-1])
        wait_owned_by(s, {r.pid for r in runners}, PARTITIONS)
        time.sleep(2.0)
        stream.stop()
        sent = dict(stream.sent)
        wait_for(lambda: all(i in watch.successes for i in sent), 60, 0.2, "a result for every invocation sent")
        time.sleep(2.0)  # a second result of anything would show up now
        watch.stop()
    finally:
        stream.stop()
        watch.stop()
        for r in started:
            if r.poll() is None:
                r.terminate()
                r.wait(30)
    try:
        assert len(sent) >= 500, len(sent)  # ~50/s for the whole run, the outages included
        # A result the dead runner recorded but did not commit is re-published as stored by the next
        # owner (the same record: transport duplicates are allowed); two different records are two runs.
        recorded_twice = {i: r for i, r in watch.successes.items() if len(set(r)) > 1}
        assert not recorded_twice, recorded_twice
        assert watch.other == [], watch.other
        assert all(store.is_done(i) for i in sent)
        # A call a dead runner completed but could not record is run again (at least once); nothing
        # else runs twice.
        dead_pids = {victim.pid for victim, _ in killed}
        done: dict[str, list[int]] = {}
        for kind, iid, _worker, parent in side_effects(folder):
            if kind == "done":
                done.setdefault(iid, []).append(parent)
        assert set(done) >= set(sent)
        for iid, parents in done.items():
            assert len([p for p in parents if p not in dead_pids]) <= 1, (iid, parents)
    finally:
        store.close()
        remove_test_resources(s, topics(s))
