"""What observability costs on the hot paths: the runner's per-result hook, the streams worker's
row-change hook (per committed batch), the reader's per-row-event count, and one /metrics scrape of a busy runner.

    python -m bench.ops_overhead [--n 200000]

Pure CPU (no stack needed). Last line: `ops hook cost per result/event us: A / B`.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace

from plugins.runner_ops import RunnerOps
from schemas.config import Config
from schemas.result import Result
from schemas.rules import RulesConfig
from schemas.settings import Settings
from streams.worker_ops import StreamsOps


def per_call_us(fn, n: int) -> float:  # type: ignore[no-untyped-def]
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200_000)
    n = parser.parse_args().n
    settings = Settings()
    runner = RunnerOps(SimpleNamespace(settings=settings, lanes={}, paused_topics=set(), stop=threading.Event()))  # type: ignore[arg-type]
    now = datetime.now(UTC)
    results = [
        Result(
            invocation_id=f"i{i}",
            plugin=f"p{i % 5}",
            plugin_version="1",
            status="success",
            started_at=now,
            finished_at=now,
            duration_ms=1.5,
        )
        for i in range(1000)
    ]
    it = iter(results * (n // 1000 + 1))
    result_us = per_call_us(lambda: runner.on_result(next(it)), n // 5)
    streams = StreamsOps(Config(path=None, settings=settings, rules=RulesConfig()))
    # the row-change loop counts once per committed batch; a batch of one change with one match is the
    # most this costs per event
    tables, rules, invocations = {("shop", "orders"): 1}, {"r1": 1}, {("echo", "cdc"): 1}
    event_us = per_call_us(lambda: streams.on_row_batch(tables, rules, invocations), n // 5)
    counts: dict[tuple[str, str, str], int] = {}
    key = ("shop", "orders", "c")

    def count_rows() -> None:
        counts[key] = counts.get(key, 0) + 10

    reader_us = per_call_us(count_rows, n)
    from prometheus_client import generate_latest

    scrape_ms = per_call_us(lambda: generate_latest(runner.registry), 200) / 1000
    print(f"runner on_result (metrics, no alert due): {result_us:.2f} us/result")
    print(f"streams on_row_batch (a batch of 1 change, 1 match): {event_us:.2f} us/event")
    print(f"reader per-row-event table/op count: {reader_us:.3f} us/event")
    print(f"runner /metrics body (5 plugins): {scrape_ms:.2f} ms")
    print(f"ops hook cost per result/event us: {result_us:.2f} / {event_us:.2f}")


if __name__ == "__main__":
    main()
