"""Matching throughput of one Faust worker: pre-produced row changes in, invocations out.

Produces N row-change envelopes (spread over 1,000 rows of one table) to the table's topic, with
50 rules on that table of which a few match each change, then starts one `cdcflow streams worker`
and counts the invocations it emits. The rate is taken between the first and the last
invocation, so worker start-up and group join are not counted. Last line:
`streams matching events/s: N`.

    python bench/streams_matching.py [--events 200000]
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import stack_up, start_cdcflow  # noqa: E402

import orjson  # noqa: E402
from confluent_kafka import Consumer, Producer  # noqa: E402

from schemas.kafka_topics import ensure_topics  # noqa: E402
from tests.support import isolated_config_data, write_config  # noqa: E402

RULES = 50
ROWS = 1000


def rules() -> dict:
    # 50 rules (equality, ranges, changed + in); each change matches about two of them.
    specs = []
    for i in range(RULES):
        kind = i % 3
        if kind == 0:
            conditions = {"status": f"s{i % 10}"}
        elif kind == 1:
            conditions = {"amount": {"gte": i * 20, "lt": i * 20 + 20}}
        else:
            conditions = {"status": {"changed": True}, "after.status": f"s{i % 10}", "after.region": "us"}
        specs.append({"name": f"r{i}", "triggers": ["echo"], "operations": ["INSERT", "UPDATE"],
                      "conditions": conditions, "params": {"message": "{after.id}"}})
    return {"monitored_tables": {"orders": specs}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    stack_up()
    workdir = Path(tempfile.mkdtemp(prefix="cdcflow-bench-"))
    config = write_config(workdir, isolated_config_data("bmatch", rules()))
    settings = config.settings
    db = settings.mysql.database
    source, invoke = settings.topics.row_changes(db, "orders"), settings.topics.invoke("echo")
    ensure_topics(settings, [source, invoke])

    producer = Producer(settings.kafka_config(**{"acks": "all", "linger.ms": 20, "compression.type": "lz4"}))
    started = time.perf_counter()
    for n in range(args.events):
        row = n % ROWS
        before = {"id": row, "status": f"s{(n - 1) % 10}", "amount": (n * 7) % 1000, "region": "eu"}
        after = {"id": row, "status": f"s{n % 10}", "amount": (n * 13) % 1000, "region": "us" if n % 2 else "eu"}
        value = orjson.dumps({"before": before, "after": after, "op": "u", "ts_ms": 0,
                              "event_id": f"1:mysql-bin.000001:{1000 + n * 10}:0",
                              "source": {"db": db, "table": "orders", "server_id": 1}})
        while True:
            try:
                producer.produce(source, key=orjson.dumps({"id": row}), value=value)
                break
            except BufferError:
                producer.poll(0.1)
    producer.flush(120)
    print(f"produced {args.events} row changes in {time.perf_counter() - started:.1f}s", file=sys.stderr)

    worker = start_cdcflow(config.path, "streams", "worker", log_path=workdir / "worker.log")
    consumer = Consumer(settings.kafka_config(**{"group.id": f"bench-{os.getpid()}", "auto.offset.reset": "earliest"}))
    consumer.subscribe([invoke])
    count, first, last = 0, 0.0, 0.0
    last_progress = time.monotonic()
    try:
        while time.monotonic() - last_progress < 30:
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
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        consumer.close()
    span = max(last - first, 1e-9)
    print(f"invocations: {count} from {args.events} row changes ({RULES} rules)")
    print(f"invocations/s: {count / span:.0f}")
    print(f"streams matching events/s: {args.events / span:.0f}")


if __name__ == "__main__":
    main()
