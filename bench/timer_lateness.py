"""Schedule timer lateness: when the leader emitted each fire minus the slot it was due at.

Runs one `cdcflow streams worker` with an interval schedule (default every 0.2 s) and reads the
emitted invocations: lateness = invocation.created_at - trigger.fire_time. Prints p50/p90/p99 over
the fires after the first few (start-up catch-up is not lateness); last line
`timer lateness p99 ms: N`.

    python -m bench.timer_lateness [--fires 150] [--interval 0.2]
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import time
from datetime import datetime
from pathlib import Path

import orjson
from confluent_kafka import Consumer

from bench.common import percentile, stack_up, start_cdcflow
from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, write_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fires", type=int, default=150, help="fires to measure (>= 100)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between fires")
    parser.add_argument("--skip", type=int, default=5, help="first fires ignored (start-up)")
    args = parser.parse_args()
    stack_up()
    workdir = Path(tempfile.mkdtemp(prefix="cdcflow-bench-"))
    config = write_config(
        workdir,
        isolated_config_data(
            "btimer",
            {
                "schedules": {
                    "tick": {
                        "plugin": "echo",
                        "interval_seconds": args.interval,
                        "params": {"message": "tick"},
                        # no runner consumes the fires here, so none ever finishes: do not hold slots back
                        "max_instances": 1_000_000,
                    }
                }
            },
        ),
    )
    invoke = config.settings.topics.invoke("echo")
    ensure_topics(config.settings, [invoke])
    worker = start_cdcflow(config.path, "streams", "worker", log_path=workdir / "worker.log")
    consumer = Consumer(
        config.settings.kafka_config(**{"group.id": f"bench-{os.getpid()}", "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([invoke])
    lateness: dict[str, float] = {}
    wanted = args.fires + args.skip
    deadline = time.monotonic() + 120 + wanted * args.interval * 2
    try:
        while len(lateness) < wanted and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            inv = orjson.loads(msg.value())
            fire = datetime.fromisoformat(inv["trigger"]["fire_time"])
            emitted = datetime.fromisoformat(inv["created_at"])
            lateness[inv["invocation_id"]] = (emitted - fire).total_seconds() * 1000
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        consumer.close()
    values = list(lateness.values())[args.skip :]
    if len(values) < args.fires:
        raise SystemExit(f"only {len(values)} fires measured; see {workdir / 'worker.log'}")
    print(f"fires measured: {len(values)} every {args.interval}s (distinct ids: {len(lateness)})")
    print(
        f"timer lateness p50 {percentile(values, 50):.1f} ms, p90 {percentile(values, 90):.1f} ms, "
        f"max {max(values):.1f} ms"
    )
    print(f"timer lateness p99 ms: {percentile(values, 99):.1f}")


if __name__ == "__main__":
    main()
