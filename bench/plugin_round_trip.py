"""Pipe round trip of the plugin worker protocol: no-op echo calls through one warm worker.

`round_trip` is what a runner thread waits for one call; `overhead` subtracts the time the worker
spent between receiving the request and having the response ready (so: the pipe, the framing,
JSON on both sides, process wake-ups).

    python -m bench.plugin_round_trip [--calls 20000]
"""

from __future__ import annotations

import argparse
import json
import time

from tests.support import example_plugin, plugin_pool


def measure_round_trip(calls: int = 20000, warmup: int = 500) -> dict[str, float]:
    """Round trip of no-op echo calls through a warm pool of one worker, in microseconds.

    `round_trip` is what the runner's thread waits for a call; `overhead` subtracts the time the
    worker spent between receiving the request and having the response ready (i.e. the pipe, the
    framing, JSON on both sides and the process wake-ups).
    """
    with plugin_pool(example_plugin("echo"), size=1) as pool:
        request = {
            "invocation_id": "bench",
            "params": {},
            "context": {"invocation_id": "bench", "plugin": "echo", "attempt": 1, "trigger": {"kind": "manual"}},
        }
        for _ in range(warmup):
            pool.call(request, timeout=5)
        trips, overheads = [], []
        for _ in range(calls):
            t0 = time.perf_counter()
            out = pool.call(request, timeout=5)
            trips.append(time.perf_counter() - t0)
            overheads.append(trips[-1] - ((out.finished_at or 0) - (out.started_at or 0)))
    trips.sort()
    overheads.sort()

    def pct(xs: list[float], q: float) -> float:
        return round(xs[min(len(xs) - 1, int(len(xs) * q))] * 1e6, 1)

    return {
        "calls": calls,
        "round_trip_p50_us": pct(trips, 0.5),
        "round_trip_p99_us": pct(trips, 0.99),
        "overhead_p50_us": pct(overheads, 0.5),
        "overhead_p99_us": pct(overheads, 0.99),
        "calls_per_second_one_worker": round(calls / sum(trips)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    figures = measure_round_trip(args.calls)
    print(json.dumps(figures, indent=2))
    print(f"plugin pipe round trip p50/p99 us: {figures['round_trip_p50_us']} / {figures['round_trip_p99_us']}")


if __name__ == "__main__":
    main()
