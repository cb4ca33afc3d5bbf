"""Latency of the HTTP API under a paced load, as a client sees it.

Starts `cdcflow api serve` on an isolated config whose Redis holds 5,000 runs, then sends requests
at a fixed rate from an open-loop schedule (each request's latency counts from when it was due, so
a slow answer delays no later request and hides nothing): first `GET /api/runs?limit=50`, then
`POST /api/plugins/echo/invocations` (validated, published to Kafka with acks=all; no pipeline runs
them). Prints p50/p90/p99 per endpoint; the last line is `api p99 ms: GET <p99> / POST <p99>`.

    python -m bench.api_latency [--rate 200] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.common import percentile, stack_up
from plugins.store import RunStore
from schemas.result import Result
from tests.support import isolated_config_data, remove_test_resources, write_config
from tests.support.api import api_server

RUNS_IN_REDIS = 5000


def fill_runs(config_settings: object, count: int) -> None:
    store = RunStore(config_settings)  # type: ignore[arg-type]
    start = datetime.now(UTC) - timedelta(hours=1)
    results = [
        Result(
            invocation_id=f"bench-{i:06d}",
            plugin="echo",
            plugin_version="1.0.0",
            status="success" if i % 10 else "failed",
            started_at=start + timedelta(milliseconds=i),
            finished_at=start + timedelta(milliseconds=i + 1),
            duration_ms=1.0,
            output={"message": "x" * 40},
            params={"message": "x" * 40},
            trigger={"kind": "manual", "requested_by": "bench"},
            trigger_kind="manual",
        )
        for i in range(count)
    ]
    for at in range(0, count, 1000):
        store.record_many(results[at : at + 1000])
    store.close()


async def paced(
    client: httpx.AsyncClient, method: str, url: str, body: dict | None, rate: float, seconds: float
) -> list[float]:
    """Latencies in ms of `rate` requests per second for `seconds`, each timed from when it was due."""
    latencies: list[float] = []
    failures: list[int] = []
    start = time.perf_counter() + 0.2

    async def one(due: float) -> None:
        response = await client.request(method, url, json=body)
        latencies.append((time.perf_counter() - due) * 1000)
        if response.status_code >= 300:
            failures.append(response.status_code)

    # each request is started when it is due (not all queued up front: httpx's pool slows down with
    # thousands of waiting requests, which would measure the client, not the server)
    tasks = []
    for i in range(int(rate * seconds)):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    if failures:
        raise SystemExit(f"{method} {url}: {len(failures)} failed requests, e.g. status {failures[0]}")
    return latencies


def report(name: str, latencies: list[float]) -> float:
    p50, p90, p99 = (percentile(latencies, p) for p in (50, 90, 99))
    print(f"{name:<40} n={len(latencies):>6}  p50 {p50:6.1f} ms  p90 {p90:6.1f} ms  p99 {p99:6.1f} ms")
    return p99


async def measure(base_url: str, token: str, rate: float, seconds: float) -> tuple[float, float]:
    headers = {"Authorization": f"Bearer {token}"}
    # a small pool: httpcore scans every connection per request (200 of them cost more than the server)
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=30, limits=limits) as client:
        await paced(client, "GET", "/api/runs?limit=50", None, rate, 1)  # warm-up
        await paced(client, "POST", "/api/plugins/echo/invocations", {"params": {"message": "w"}}, rate, 1)
        get = report("GET /api/runs?limit=50", await paced(client, "GET", "/api/runs?limit=50", None, rate, seconds))
        body = {"params": {"message": "bench"}}
        post = report(
            "POST /api/plugins/echo/invocations",
            await paced(client, "POST", "/api/plugins/echo/invocations", body, rate, seconds),
        )
    return get, post


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each endpoint's run")
    args = parser.parse_args()
    stack_up()
    with tempfile.TemporaryDirectory() as tmp:
        data = isolated_config_data("apibench", {"api": {"rate_limit_per_second": 100000, "rate_limit_burst": 100000}})
        config = write_config(Path(tmp), data)
        fill_runs(config.settings, RUNS_IN_REDIS)
        try:
            with api_server(config, Path(tmp) / "api.log", show_log=False) as server:
                get, post = asyncio.run(measure(server.base_url, server.tokens["trigger"], args.rate, args.seconds))
        finally:
            remove_test_resources(config.settings, [])
    print(f"api p99 ms: GET {get:.1f} / POST {post:.1f}")


if __name__ == "__main__":
    main()
