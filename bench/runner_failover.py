"""Runner failover: how long a SIGKILLed runner's partitions wait for another runner.

Two `cdcflow runners run` processes on one config (one group, one plugin topic of --partitions
partitions) and a steady stream of invocations (--rate a second, round robin over the partitions).
Each round: wait until both runners own partitions and the group is stable, let the stream run 2 s,
SIGKILL a runner that owns some of the stream's partitions (the older and the newer in turn), and
time the kill -> the first result, by the other runner, of an invocation of the dead runner's
partitions (its finish time). A new runner replaces the dead one before the next round. At the end
every invocation sent must have exactly one recorded result.

The runners use the config's runners.session_timeout_ms / heartbeat_interval_ms (6000 / 1000 by
default); librdkafka's own defaults, for comparison:
`CDCFLOW_RUNNERS__SESSION_TIMEOUT_MS=45000 CDCFLOW_RUNNERS__HEARTBEAT_INTERVAL_MS=3000 python -m bench.runner_failover`.

    python -m bench.runner_failover [--rounds 5] [--rate 50] [--partitions 4]

Last line: `runner failover seconds: N` (the median).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import stack_up
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import remove_test_resources, wait_for
from tests.support.failover import (
    ResultWatch,
    SteadyStream,
    kill_one,
    make_config,
    start_runner,
    topics,
    wait_owned_by,
)


def check_exactly_once(stream: SteadyStream, watch: ResultWatch) -> None:
    sent = dict(stream.sent)
    wait_for(lambda: all(i in watch.successes for i in sent), 120, 0.2, "a result for every invocation sent")
    time.sleep(2.0)
    twice = [i for i, r in watch.successes.items() if len(set(r)) > 1]  # re-published copies are one record
    print(f"{len(sent):,} invocations sent, each with a result; recorded twice: {len(twice)}; other: {watch.other[:3]}")
    if twice or watch.other:
        raise SystemExit("FAILED: not exactly once")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate", type=float, default=50.0, help="invocations a second")
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args()
    stack_up()
    workdir = Path(tempfile.mkdtemp(prefix="cdcflow-failover-"))
    cfg, _folder = make_config(workdir, args.partitions)
    s = cfg.settings
    assert cfg.path is not None
    path = cfg.path
    print(
        f"session.timeout.ms {s.runners.session_timeout_ms}, heartbeat.interval.ms {s.runners.heartbeat_interval_ms}; "
        f"load average {os.getloadavg()[0]:.1f}; logs in {workdir}",
        file=sys.stderr,
    )
    ensure_topics(s, topics(s))
    started = 0

    def new_runner() -> subprocess.Popen[bytes]:
        nonlocal started
        started += 1
        return start_runner(path, workdir / f"runner-{started}.log")

    runners = [new_runner(), new_runner()]
    watch, stream = ResultWatch(s), SteadyStream(s, args.partitions, rate=args.rate)
    seconds: list[float] = []
    try:
        wait_owned_by(s, {r.pid for r in runners}, args.partitions)
        watch.start()
        stream.start()
        for n in range(args.rounds):
            _victim, dead, takeover = kill_one(s, runners, n, stream, watch)
            print(f"  round {n + 1}: {takeover.seconds:.2f} s (partitions {sorted(dead)})", file=sys.stderr)
            seconds.append(takeover.seconds)
            runners.append(new_runner())
        stream.stop()
        check_exactly_once(stream, watch)
    finally:
        stream.stop()
        watch.stop()
        for r in runners:
            r.terminate()
            r.wait(30)
        remove_test_resources(s, topics(s))
    print(f"rounds: {', '.join(f'{x:.2f}' for x in seconds)}; load average now {os.getloadavg()[0]:.1f}")
    print(f"runner failover seconds: {statistics.median(seconds):.2f}")


if __name__ == "__main__":
    main()
