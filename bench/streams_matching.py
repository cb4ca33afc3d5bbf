"""Matching throughput of one Faust worker, against Faust's own consume ceiling, and the latency it adds.

Produces N row-change envelopes (spread over 1,000 rows of one table) to the table's topic, with 50
rules on that table of which about three match each change, then:

1. ceiling: one `cdcflow streams worker --consume-only` (the same app and settings, but the row
   agent acks without doing anything) consumes them; rate from its committed offsets;
2. matching: one `cdcflow streams worker` (own consumer group) matches them; rate between the
   first and the last invocation, so start-up and group join are not counted;
3. latency: the same worker, caught up, gets a paced stream (--paced-rate changes/s for
   --paced-seconds); for each invocation, when a read_committed consumer in this process received
   it minus its row change's CreateTime (set by this process's producer): consume -> match ->
   invocation produced -> its batch's transaction committed -> delivered.

Last line: `streams matching events/s: N`.

    python -m bench.streams_matching [--events 200000] [--paced-rate 1000] [--paced-seconds 10]
"""

from __future__ import annotations

import argparse
import copy
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from bench.common import percentile, stack_up, start_cdcflow
from schemas.config import Config
from schemas.runtime.kafka_topics import ensure_topics
from streams.validation import validated_matcher
from tests.support import isolated_config_data, write_config

RULES = 50
ROWS = 1000
IDLE_SECONDS = 30  # no progress for this long: the run is over (or stuck)


def rules() -> dict:
    # 50 rules (equality, ranges, changed + in); each change matches about three of them.
    specs = []
    for i in range(RULES):
        kind = i % 3
        if kind == 0:
            conditions = {"status": f"s{i % 10}"}
        elif kind == 1:
            conditions = {"amount": {"gte": i * 20, "lt": i * 20 + 20}}
        else:
            conditions = {"status": {"changed": True}, "after.status": f"s{i % 10}", "after.region": "us"}
        specs.append(
            {
                "name": f"r{i}",
                "triggers": ["echo"],
                "operations": ["INSERT", "UPDATE"],
                "conditions": conditions,
                "params": {"message": "{after.id}"},
            }
        )
    return {"monitored_tables": {"orders": specs}}


def row_change(db: str, n: int) -> tuple[bytes, bytes]:
    row = n % ROWS
    before = {"id": row, "status": f"s{(n - 1) % 10}", "amount": (n * 7) % 1000, "region": "eu"}
    after = {"id": row, "status": f"s{n % 10}", "amount": (n * 13) % 1000, "region": "us" if n % 2 else "eu"}
    value = orjson.dumps(
        {
            "before": before,
            "after": after,
            "op": "u",
            "ts_ms": 0,
            "event_id": event_id(n),
            "source": {"db": db, "table": "orders", "server_id": 1},
        }
    )
    return orjson.dumps({"id": row}), value


def event_id(n: int) -> str:
    return f"1:mysql-bin.000001:{1000 + n * 10}:0"


def produce(
    producer: Producer, topic: str, db: str, numbers: range, on_delivery: Callable[..., None] | None = None
) -> None:
    for n in numbers:
        key, value = row_change(db, n)
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)


def ceiling_rate(config: Config, workdir: Path, source: str, events: int) -> tuple[float, float]:
    """Events/s of the consume-only worker, from its group's committed offsets; and its CPU ms per
    1,000 events over the same span."""
    worker = start_cdcflow(config.path, "streams", "worker", "--consume-only", log_path=workdir / "ceiling.log")
    settings = config.settings
    probe = Consumer(settings.kafka_config(**{"group.id": settings.streams.app_id, "enable.auto.commit": False}))
    partitions = [TopicPartition(source, p) for p in range(settings.kafka.partitions)]
    first: tuple[float, int] | None = None
    last = (time.monotonic(), 0)
    cpu_first = cpu_last = 0.0
    try:
        while time.monotonic() - last[0] < IDLE_SECONDS:
            time.sleep(0.1)
            committed = sum(max(tp.offset, 0) for tp in probe.committed(partitions, timeout=10))
            now = time.monotonic()
            if committed > last[1]:
                cpu = cpu_seconds(worker.pid)
                if first is None:
                    first, cpu_first = (now, committed), cpu
                last, cpu_last = (now, committed), cpu
            if committed >= events:
                break
    finally:
        stop(worker)
        probe.close()
    if first is None or last[1] <= first[1]:
        raise SystemExit(f"the consume-only worker committed nothing useful (see {workdir / 'ceiling.log'})")
    done = last[1] - first[1]
    return done / (last[0] - first[0]), (cpu_last - cpu_first) * 1e6 / done


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc), for a figure the machine's other load
    does not inflate the way it inflates wall-clock rates."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(worker: subprocess.Popen[bytes]) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def faust_ceiling(data: dict, workdir: Path, source: str, events: int) -> tuple[float, float]:
    """ceiling_rate with the same topics and settings, its own consumer group and state."""
    ceiling_data = copy.deepcopy(data)
    ceiling_data["streams"]["app_id"] += "-ceiling"
    ceiling_data["streams"]["state_dir"] += "-ceiling"
    (workdir / "ceiling").mkdir()
    ceiling, ceiling_cpu = ceiling_rate(write_config(workdir / "ceiling", ceiling_data), workdir, source, events)
    print(
        f"faust consume ceiling (agent does nothing) events/s: {ceiling:.0f}; "
        f"worker CPU ms per 1000 events: {ceiling_cpu:.0f}"
    )
    return ceiling, ceiling_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000, help="row changes for the throughput runs")
    parser.add_argument("--paced-rate", type=int, default=1000, help="row changes/s of the latency run")
    parser.add_argument("--paced-seconds", type=float, default=10.0)
    parser.add_argument("--skip-ceiling", action="store_true", help="only the matching and latency runs")
    args = parser.parse_args()
    stack_up()
    workdir = Path(tempfile.mkdtemp(prefix="cdcflow-bench-"))
    data = isolated_config_data("bmatch", rules())
    config = write_config(workdir, data)
    settings = config.settings
    db = settings.mysql.database
    source, invoke = settings.topics.row_changes(db, "orders"), settings.topics.invoke("echo")
    ensure_topics(settings, [source, invoke])

    producer = Producer(settings.kafka_config(**{"acks": "all", "linger.ms": 20, "compression.type": "lz4"}))
    started = time.perf_counter()
    produce(producer, source, db, range(args.events))
    producer.flush(120)
    print(f"produced {args.events} row changes in {time.perf_counter() - started:.1f}s", file=sys.stderr)

    ceiling, ceiling_cpu = (0.0, 0.0) if args.skip_ceiling else faust_ceiling(data, workdir, source, args.events)

    # What the worker must emit, from the same matcher in this process (a check, not only a count).
    matcher = validated_matcher(config)
    expected = sum(len(matcher.match(orjson.loads(row_change(db, n)[1]))) for n in range(args.events))

    worker = start_cdcflow(config.path, "streams", "worker", log_path=workdir / "worker.log")
    consumer = Consumer(settings.kafka_config(**{"group.id": f"bench-{os.getpid()}", "auto.offset.reset": "earliest"}))
    consumer.subscribe([invoke])
    count, first, last = 0, 0.0, 0.0
    cpu_first = cpu_last = 0.0
    produced_at: dict[str, float] = {}  # paced row change's event id -> its CreateTime (ms)
    emitted: list[tuple[str, float, float]] = []  # paced invocations: (event id, received ms, CreateTime ms)
    try:
        last_progress = time.monotonic()
        while count < expected and time.monotonic() - last_progress < IDLE_SECONDS:
            batch = consumer.consume(1000, 0.5)
            now = time.time()
            for msg in batch:
                if msg.error():
                    continue
                count += 1
                first = first or now
                last = now
            if batch:
                last_progress = time.monotonic()
                cpu_last = cpu_seconds(worker.pid)
                cpu_first = cpu_first or cpu_last

        # Latency: the caught-up worker gets a paced stream; unbatched producer, so CreateTime is send
        # time. An invocation counts when a read_committed consumer receives it (after its batch's
        # transaction commits), timed by this process's clock, which the producer's CreateTime uses too.
        def record(err: object, msg: object) -> None:
            if err is None:
                produced_at[orjson.loads(msg.value())["event_id"]] = msg.timestamp()[1]  # type: ignore[attr-defined]

        collecting = threading.Event()

        def collect() -> None:
            while not collecting.is_set():
                # consume(n, timeout) waits for n messages or the timeout: poll for the first instead,
                # so the collector adds no wait of its own to what it measures
                first = consumer.poll(0.01)
                for msg in [first, *consumer.consume(999, 0)] if first is not None else []:
                    if not msg.error():
                        emitted.append(
                            (orjson.loads(msg.value())["trigger"]["event_id"], time.time() * 1000, msg.timestamp()[1])
                        )

        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        paced = Producer(settings.kafka_config(**{"acks": "all", "linger.ms": 0}))
        total = int(args.paced_rate * args.paced_seconds)
        start = time.monotonic()
        for i in range(total):
            delay = start + i / args.paced_rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            produce(paced, source, db, range(args.events + i, args.events + i + 1), record)
        paced.flush(30)
        time.sleep(5)
        collecting.set()
        collector.join()
    finally:
        stop(worker)
        consumer.close()
    latencies = [received - produced_at[eid] for eid, received, _ in emitted if eid in produced_at]
    to_produced = [created - produced_at[eid] for eid, _, created in emitted if eid in produced_at]
    span = max(last - first, 1e-9)
    rate = args.events / span
    print(f"invocations: {count} from {args.events} row changes ({RULES} rules; {expected} expected)")
    print(f"invocations/s: {count / span:.0f}")
    matching_cpu = (cpu_last - cpu_first) * 1e6 / args.events
    print(f"worker CPU ms per 1000 events: {matching_cpu:.0f}")
    if ceiling:
        print(f"matching / ceiling: {rate / ceiling:.2f} (events/s); {ceiling_cpu / matching_cpu:.2f} (CPU per event)")
    if latencies:
        print(
            "latency added, row change produced -> invocation received by a read_committed consumer "
            f"({args.paced_rate}/s paced, {len(latencies)} invocations) p50/p99 ms: "
            f"{percentile(latencies, 50):.1f} / {percentile(latencies, 99):.1f}"
        )
        print(
            f"  of which row change produced -> invocation produced (its CreateTime) p50/p99 ms: "
            f"{percentile(to_produced, 50):.1f} / {percentile(to_produced, 99):.1f}"
        )
    print(f"streams matching events/s: {rate:.0f}")


if __name__ == "__main__":
    main()
