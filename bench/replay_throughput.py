"""How fast `cdcflow replay` re-feeds history: read only (dry run), re-matched into the pipeline, copied.

Produces N row-change envelopes (1,000 rows, 4 partitions) to one table's topic, with one rule that
matches half of them, then runs the real command (each run a new replay id):

1. `--dry-run`: read, filter and re-match, send nothing (the reading and matching ceiling);
2. into the pipeline: re-match against the rules, publish the invocations in Kafka transactions
   (default --batch-size 5000, and 500: ten times the transactions);
3. `--to-topic`: copy every message (key, value, headers) in Kafka transactions.

Rates (median of --repeat runs) are source messages per second over the command's own replay loop
("scanned N message(s) in T s"), so process start-up and metadata look-ups are not counted.
Last line: `replay into pipeline msgs/s: N`.

    python -m bench.replay_throughput [--events 50000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson
from confluent_kafka import Producer

from bench.common import ROOT, stack_up
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, remove_test_resources, write_config

RULES = {
    "monitored_tables": {
        "shop.orders": {
            "name": "paid",
            "triggers": ["echo"],
            "operations": ["UPDATE"],
            "conditions": {"status": "paid"},
            "params": {"message": "order {after.id}", "data": "{event_id}"},
        }
    }
}
SCANNED = re.compile(r"scanned (\d+) message\(s\) in ([\d.]+)s")


def produce(producer: Producer, topic: str, events: int) -> None:
    for i in range(events):
        row = i % 1000
        producer.produce(
            topic,
            key=orjson.dumps({"id": row}),
            value=orjson.dumps(
                {
                    "before": {"id": row, "status": "new"},
                    "after": {"id": row, "status": "paid" if i % 2 else "new", "n": i},
                    "op": "u",
                    "ts_ms": 1,
                    "event_id": f"1:mysql-bin.000001:{1000 + 10 * i}:0",
                    "source": {"server_id": 1, "db": "shop", "table": "orders", "ts_ms": 1},
                }
            ),
        )
        if i % 10000 == 0:
            producer.poll(0)
    assert producer.flush(60) == 0


def replay(config_path: Path, *args: str) -> tuple[int, float]:
    done = subprocess.run(
        [sys.executable, "-m", "console.cli", "-c", str(config_path), "replay", "shop.orders", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "CDCFLOW_LOG_LEVEL": "WARNING"},
    )
    if done.returncode != 0:
        raise SystemExit(f"replay {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    m = SCANNED.search(done.stderr)
    assert m, done.stderr
    return int(m.group(1)), float(m.group(2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    stack_up()
    with tempfile.TemporaryDirectory() as tmp:
        data = isolated_config_data("benchreplay", RULES)
        data["kafka"]["partitions"] = 4
        config = write_config(Path(tmp), data)
        s = config.settings
        source = s.topics.row_changes("shop", "orders")
        copy = f"{source}.copy"
        topics = [source, copy, s.topics.invoke("echo"), s.topics.invoke("echo", "high")]
        ensure_topics(s, topics[:1])
        try:
            produce(Producer(s.kafka_config(**{"linger.ms": 20})), source, args.events)
            rates = {}
            runs = (
                ("dry run (read + re-match)", ["--dry-run"]),
                ("into pipeline", []),
                ("into pipeline, batch 500", ["--batch-size", "500"]),
                ("copy --to-topic", ["--to-topic", copy]),
            )
            rates: dict[str, list[float]] = {name: [] for name, _ in runs}
            for attempt in range(args.repeat):
                for i, (name, extra) in enumerate(runs):
                    # each its own replay: the same arguments would continue (here: find done) the previous one
                    scanned, seconds = replay(config.path, *extra, "--replay-id", f"bench-{attempt}-{i}-{os.getpid()}")
                    assert scanned == args.events, (name, scanned)
                    rates[name].append(scanned / seconds)
            for name, values in rates.items():
                print(
                    f"{name:28s} median of {args.repeat}: {statistics.median(values):>9,.0f} msgs/s  "
                    f"(runs: {', '.join(f'{v:,.0f}' for v in values)})"
                )
            print(f"replay into pipeline msgs/s: {statistics.median(rates['into pipeline']):,.0f}")
        finally:
            remove_test_resources(s, topics)


if __name__ == "__main__":
    main()
