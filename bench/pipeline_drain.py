"""Whole-pipeline drain: a backlog of row changes written while cdcflow is stopped, then drained by
`cdcflow run` (reader, streams worker and runners each in its own process, as users run it).

1. a sysbench-shaped table (id, k, c CHAR(120), pad CHAR(60)) in its own database; the reader is
   started once to take its starting position, then stopped;
2. N row changes written in multi-row transactions: 60% inserts, 25% updates, 15% deletes;
3. `cdcflow run` started; the clock starts when every component reports ready (start-up -- venvs,
   warm worker pools, group joins -- is printed apart) and stops when the results topic holds a
   success for every change;
4. checked: one success per change (by event id) and no second success for any invocation id.

With `--streams N --runners M`, the extra streams workers and runners are started next to `cdcflow
run` as a user adds them on one box (`cdcflow streams worker`, each with its own streams.state_dir;
`cdcflow runners run`), and the clock starts once all of them are ready. The CPU each part used
during the drain is printed in cores and in CPU microseconds per row change (bench/cores.py; Kafka,
MariaDB and Redis are shared with whatever else runs on the machine).

Progress every 5 s on stderr. Last line: `pipeline drain rows/s: N`.

With `--batch` the rule triggers `echo_batch` instead of `echo`: the same work as a batch plugin
(plugin.json `batch` {max_size 500, max_wait_ms 20}), so the runner calls it with up to 500
invocations at a time; every change still has its own result.

With `--runner-alone` the reader and the streams worker first turn the whole backlog into
invocations (`cdcflow run --only cdc --only streams`, stopped once a read_committed consumer of the
invoke topic has seen an invocation of every change), and only then are the runners started and
timed: the runner's own ceiling on these drain-shaped invocations, with the box to itself (and Kafka
and Redis). A stage slower alone than a goal bounds the whole pipeline below it.

The rate counts the changes run after every component reported ready, over the time after that:
with a full invoke topic a runner may finish thousands before its ready heartbeat is seen.

    python -m bench.pipeline_drain [--rows 200000] [--partitions 4] [--streams 1] [--runners 1] [--batch]
                                   [--runner-alone]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient

from bench.common import components, stack_up, start_cdcflow, stop_cdcflow
from bench.cores import cores_used, print_cores, snapshot, stack_pids
from cdc.checkpoint import CheckpointStore
from schemas.config import Config
from tests.support import execute, isolated_config_data, mysql, remove_test_resources, wait_for, write_config

BATCH = 1000  # rows per transaction


def write_backlog(db: str, rows: int) -> int:
    """60% inserts, 25% updates, 15% deletes (of the inserted rows); returns the row changes written."""
    inserts, updates, deletes = int(rows * 0.60), int(rows * 0.25), rows - int(rows * 0.60) - int(rows * 0.25)
    conn = mysql(db)
    cur = conn.cursor()
    pad = "p" * 59
    for start in range(0, inserts, BATCH):
        ids = range(start + 1, min(inserts, start + BATCH) + 1)
        cur.executemany(
            "INSERT INTO sbtest (id, k, c, pad) VALUES (%s, %s, %s, %s)",
            [(i, i % 1000, f"{i:0>119}", pad) for i in ids],
        )
        conn.commit()
    for start in range(0, updates, BATCH):  # one UPDATE statement per row: one change each
        ids = range(start + 1, min(updates, start + BATCH) + 1)
        cur.executemany("UPDATE sbtest SET k = k + 1 WHERE id = %s", [(i,) for i in ids])
        conn.commit()
    for start in range(0, deletes, BATCH):
        ids = range(inserts - start, max(inserts - start - BATCH, inserts - deletes), -1)
        cur.executemany("DELETE FROM sbtest WHERE id = %s", [(i,) for i in ids])
        conn.commit()
    conn.close()
    return inserts + updates + deletes


def topic_reader(config: Config, topic: str) -> Consumer:
    """A consumer of `topic` from its start, in a group of its own, seeing only committed messages."""
    group = f"bench-drain-{uuid.uuid4().hex}"
    consumer = Consumer(
        config.settings.kafka_config(
            **{"group.id": group, "auto.offset.reset": "earliest", "isolation.level": "read_committed"}
        )
    )
    consumer.subscribe([topic])
    return consumer


class ResultCounter:
    """Reads the results topic from its start: successes by event id and by invocation id."""

    def __init__(self, config: Config):
        self.consumer = topic_reader(config, config.settings.topics.results)
        self.by_event: Counter[str] = Counter()
        self.by_invocation: Counter[str] = Counter()
        self.other: Counter[str] = Counter()
        self.ready_at: float | None = None  # wall time every component was ready
        self.before_ready = 0  # changes that had run by then (extra processes start later: the rest is fairer)

    def poll(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in self.consumer.consume(10_000, timeout=0.2):
                if message.error() is None:
                    self._count(orjson.loads(message.value() or b"{}"))

    def _count(self, result: dict[str, Any]) -> None:
        if result.get("status") == "success":  # a retried attempt's failure is not a second run
            self.by_invocation[result.get("invocation_id", "?")] += 1
            self.by_event[(result.get("trigger") or {}).get("event_id", "?")] += 1
            if self.ready_at is not None and datetime.fromisoformat(result["finished_at"]).timestamp() < self.ready_at:
                self.before_ready += 1
        else:
            self.other[str(result.get("status"))] += 1

    def close(self) -> None:
        self.consumer.close()


# --batch: echo's work as a batch plugin (one call per up to 500 invocations).
BATCH_ECHO_MAIN = """
def run(items):
    return [
        {"message": item["params"].get("message"), "invocation_id": item["context"]["invocation_id"]}
        for item in items
    ]
"""
BATCH_ECHO_MANIFEST = {
    "name": "echo_batch",
    "entry_point": "main.run",
    "parameters": {"message": {"type": "string"}},
    "batch": {"max_size": 500, "max_wait_ms": 20},
    "concurrency": 2,
}


def write_batch_echo(base: Path) -> None:
    folder = base / "echo_batch"
    folder.mkdir(parents=True)
    (folder / "plugin.json").write_text(orjson.dumps(BATCH_ECHO_MANIFEST).decode())
    (folder / "main.py").write_text(BATCH_ECHO_MAIN)


def prepare(rows: int, partitions: int, batch: bool = False, assignment: str | None = None) -> tuple[Config, Path]:
    workdir = Path(tempfile.mkdtemp(prefix="cdcflow-drain-"))
    plugin = "echo_batch" if batch else "echo"
    rules = {"monitored_tables": {"sbtest": {"triggers": [plugin], "params": {"message": "{event_id}"}}}}
    data = isolated_config_data("drain", rules)
    if batch:
        write_batch_echo(workdir / "plugins")
        data["runners"]["plugin_dirs"] = [str(workdir / "plugins")]
    data["kafka"]["partitions"] = partitions
    if assignment is not None:
        data["runners"]["partition_assignment"] = assignment
    db = data["mysql"]["database"]
    execute(
        [
            f"CREATE DATABASE {db}",
            f"CREATE TABLE {db}.sbtest (id INT PRIMARY KEY, k INT NOT NULL, c CHAR(120) NOT NULL, "
            "pad CHAR(60) NOT NULL, KEY k_1 (k))",
        ]
    )
    return write_config(workdir, data), workdir


def take_start_position(config: Config, workdir: Path) -> None:
    assert config.path is not None
    reader = start_cdcflow(config.path, "run", "--only", "cdc", log_path=workdir / "reader-first.log")
    try:
        wait_for(lambda: CheckpointStore(config.settings).load(), 120, 0.5, "the reader's first checkpoint")
    finally:
        stop_cdcflow(reader)


def start_pipeline(
    config: Config, workdir: Path, streams: int, runners: int, only: tuple[str, ...] = ()
) -> dict[str, subprocess.Popen[bytes]]:
    """`cdcflow run` (the reader, a streams worker, a runner; or `only` those components), then the
    extra streams workers and runners a user adds on the same box. Each extra streams worker gets its
    own streams.state_dir: it holds the worker's RocksDB tables and keys its transactional id
    (streams/row_changes.py), so two workers sharing one would fence each other."""
    assert config.path is not None
    args = [arg for component in only for arg in ("--only", component)]
    log_path = workdir / f"pipeline{''.join('-' + c for c in only)}.log"
    procs = {"cdcflow run": start_cdcflow(config.path, "run", *args, log_path=log_path)}
    for n in range(2, streams + 1):
        own = {"CDCFLOW_STREAMS__STATE_DIR": f"{config.settings.streams.state_dir}-{n}"}
        log_path = workdir / f"streams-{n}.log"
        procs[f"streams worker {n}"] = start_cdcflow(config.path, "streams", "worker", log_path=log_path, env=own)
    for n in range(2, runners + 1):
        procs[f"runner {n}"] = start_cdcflow(config.path, "runners", "run", log_path=workdir / f"runner-{n}.log")
    return procs


def ready_instances(config: Config) -> Counter[str]:
    """Instances up and ready, by kind (reader, streams, runner), from their heartbeats in Redis."""
    return Counter(v["kind"] for v in components(config) if v["liveness"] == "up" and v["state"] == "ready")


FILL_TIMEOUT_SECONDS = 600


def fill_invoke_topic(config: Config, workdir: Path, expected: int, streams: int, plugin: str) -> None:
    """The reader and the streams workers only, until the plugin's invoke topic holds a committed
    invocation of every change (by event id: a re-sent change or a restarted worker counts once); then
    stopped."""
    consumer = topic_reader(config, config.settings.topics.invoke(plugin))
    procs = start_pipeline(config, workdir, streams, 0, only=("cdc", "streams"))
    events: set[str] = set()
    began = last_print = time.monotonic()
    try:
        while len(events) < expected:
            for message in consumer.consume(10_000, timeout=0.5):
                if message.error() is None:
                    events.add(orjson.loads(message.value() or b"{}")["trigger"]["event_id"])
            check_running(procs, workdir)
            if time.monotonic() - began > FILL_TIMEOUT_SECONDS:
                raise SystemExit(f"only {len(events):,} of {expected:,} changes became invocations; see {workdir}")
            if time.monotonic() - last_print >= 5:
                last_print = time.monotonic()
                print(f"  {len(events):,}/{expected:,} changes are invocations", file=sys.stderr)
    finally:
        consumer.close()
        for p in procs.values():
            stop_cdcflow(p)
    print(f"invoke topic filled: {expected:,} invocations in {time.monotonic() - began:.1f} s", file=sys.stderr)


def check_running(procs: dict[str, subprocess.Popen[bytes]], workdir: Path) -> None:
    for name, p in procs.items():
        if p.poll() is not None:
            raise SystemExit(f"{name} exited with {p.returncode}; see the logs in {workdir}")


def timed_components(streams: int, runners: int, runner_alone: bool) -> Counter[str]:
    """The instances the drain starts and waits for, by kind."""
    return Counter({"runner": runners} if runner_alone else {"reader": 1, "streams": streams, "runner": runners})


def drain(config: Config, workdir: Path, expected: int, want: Counter[str]) -> tuple[float, float, ResultCounter]:
    """(start-up seconds, drain seconds, the counts); prints the cores each part used."""
    counter = ResultCounter(config)
    began = time.monotonic()
    only = () if want["reader"] else ("runners",)
    procs = start_pipeline(config, workdir, want["streams"], want["runner"], only)
    try:
        wait_for(lambda: ready_instances(config) >= want, 300, 0.2, f"every component ready ({dict(want)})")
        roots = {**{name: p.pid for name, p in procs.items()}, **stack_pids()}
        ready, cpu_before = time.monotonic(), snapshot(roots)
        counter.ready_at = time.time()
        last_print = ready
        while len(counter.by_event) < expected:
            counter.poll(1.0)
            check_running(procs, workdir)
            if time.monotonic() - last_print >= 5:
                last_print = time.monotonic()
                done = len(counter.by_event)
                print(f"  {done:,}/{expected:,} ran ({done / (last_print - ready):,.0f}/s so far)", file=sys.stderr)
        finished = time.monotonic()
        used = cores_used(cpu_before, snapshot(roots), finished - ready)
        # the CPU was measured from ready on: per row of what ran from then on
        print_cores(used, finished - ready, expected - counter.before_ready, "during the drain")
        counter.poll(2.0)  # anything run twice would show up just after
        return ready - began, finished - ready, counter
    finally:
        for p in procs.values():
            stop_cdcflow(p)


def own_topics(config: Config) -> list[str]:
    """The run's topics, Faust's own included: every name holding the config's unique tag."""
    tag = config.settings.redis.key_prefix.split(":", 1)[1]
    return [t for t in AdminClient(config.settings.kafka_config()).list_topics(timeout=10).topics if tag in t]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="row changes in the backlog")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--streams", type=int, default=1, help="streams workers (1 = the one `cdcflow run` starts)")
    parser.add_argument("--runners", type=int, default=1, help="runner processes (1 = the one `cdcflow run` starts)")
    parser.add_argument("--batch", action="store_true", help="the rule triggers a batch plugin (500 per call)")
    parser.add_argument(
        "--assignment", choices=["cooperative-sticky", "roundrobin"], help="runners.partition_assignment"
    )
    parser.add_argument(
        "--runner-alone", action="store_true", help="fill the invoke topic first, then time the runners alone"
    )
    args = parser.parse_args()
    stack_up()
    config, workdir = prepare(args.rows, args.partitions, args.batch, args.assignment)
    take_start_position(config, workdir)
    t0 = time.monotonic()
    expected = write_backlog(config.settings.mysql.database, args.rows)
    wrote = time.monotonic() - t0
    print(f"backlog: {expected:,} row changes written in {wrote:.1f} s ({expected / wrote:,.0f}/s)", file=sys.stderr)
    try:
        if args.runner_alone:
            fill_invoke_topic(config, workdir, expected, args.streams, "echo_batch" if args.batch else "echo")
        want = timed_components(args.streams, args.runners, args.runner_alone)
        startup, seconds, counter = drain(config, workdir, expected, want)
    finally:
        execute(f"DROP DATABASE IF EXISTS {config.settings.mysql.database}")
        remove_test_resources(config.settings, own_topics(config))
    twice = [i for i, n in counter.by_invocation.items() if n > 1]
    doubled = [e for e, n in counter.by_event.items() if n > 1]
    counter.close()
    parts = ", ".join(f"{n} {kind}" for kind, n in want.items())
    print(f"start-up (every component ready: {parts}): {startup:.1f} s")
    print(f"drained {len(counter.by_event):,} changes in {seconds:.1f} s; other results: {dict(counter.other)}")
    after = expected - counter.before_ready
    print(f"{counter.before_ready:,} had run before every component was ready (not in the rate)")
    print(f"invocations with more than one result: {len(twice)}; changes run more than once: {len(doubled)}")
    if twice or doubled or len(counter.by_event) != expected:
        raise SystemExit("FAILED: not exactly once")
    print(f"pipeline drain rows/s: {after / seconds:.0f}")


if __name__ == "__main__":
    main()
