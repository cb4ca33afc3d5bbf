"""How long the dashboard's two busiest pages take to render with a full run history.

Writes 10,000 results (mixed plugins, statuses and trigger kinds, finished over the last 15 minutes,
so the Overview's failure counts and charts have data) with RunStore.record_many into an isolated
Redis prefix, starts `cdcflow api serve` on that config, signs in as a browser does (token ->
session cookie), then requests Overview (`/`) and Runs (`/runs`, and `/runs` filtered) one after
another. Each time is measured at the client over loopback, from sending the request to the last
byte of the page: an upper bound of the server's time. The target is < 300 ms.

    python -m bench.dashboard_render [--runs 10000] [--repeat 30]

The last line is `dashboard render ms p50: overview N / runs N`.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.common import percentile, stack_up
from plugins.store import RunStore
from schemas.result import ErrorInfo, Result
from schemas.settings import Settings
from tests.support import isolated_config_data, remove_test_resources, write_config
from tests.support.api import api_server

RULES = {
    "monitored_tables": {
        "orders": {"name": "paid_orders", "triggers": ["echo"], "conditions": {"status": "paid"}},
    },
    "schedules": {"nightly": {"plugin": "echo", "cron": "0 3 * * *"}},
    # the bench is one client asking often: no rate limit in the way
    "api": {"rate_limit_per_second": 100000, "rate_limit_burst": 100000},
}
PLUGINS = ("echo", "data_processor", "es_indexer", "sleeper")
KINDS = ("cdc", "schedule", "manual", "replay", "retry")


def result(i: int, at: datetime) -> Result:
    kind = KINDS[i % len(KINDS)]
    failed = i % 23 == 0
    trigger: dict[str, object] = {"kind": kind}
    if kind == "cdc":
        before = {"id": i, "status": "new", "amount": i % 500}
        trigger |= {"rule": "paid_orders", "event_id": f"e{i}", "table": "shop.orders", "op": "u"}
        trigger |= {"before": before, "after": before | {"status": "paid"}}
    elif kind == "schedule":
        trigger |= {"schedule": "nightly", "fire_time": at.isoformat()}
    return Result(
        invocation_id=f"bench-{i:06d}",
        plugin=PLUGINS[i % len(PLUGINS)],
        plugin_version="1.0.0",
        status="failed" if failed else "success",
        started_at=at - timedelta(milliseconds=5 + i % 300),
        finished_at=at,
        duration_ms=5.0 + i % 300,
        output={"message": "x" * 40, "i": i},
        error=ErrorInfo(type="Boom", message="went wrong", traceback="Traceback...\n" * 5) if failed else None,
        trigger_kind=kind,
        params={"message": "x" * 40},
        trigger=trigger,
        timings={"created_at": at.timestamp() - 0.02, "finished_at": at.timestamp()},
    )


def fill_runs(settings: Settings, count: int) -> None:
    store = RunStore(settings)
    now = datetime.now(UTC)
    step = timedelta(seconds=14 * 60 / count)
    results = [result(i, now - i * step) for i in range(count)]
    for at in range(0, count, 1000):
        store.record_many(results[at : at + 1000])
    store.close()


def signed_in(base_url: str, token: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=30)
    nonce = re.search(r'name="login_nonce" value="([^"]+)"', client.get("/login").text)
    assert nonce, "the sign-in page has no login_nonce field"
    response = client.post("/login", data={"token": token, "login_nonce": nonce.group(1), "next": "/"})
    if response.status_code != 303:
        raise SystemExit(f"sign-in failed: HTTP {response.status_code}")
    return client


def timed(client: httpx.Client, path: str, repeat: int) -> list[float]:
    """Times of `repeat` requests of `path` (after a warm-up); a Runs page must list runs."""
    for _ in range(3):  # warm-up: imports, template compilation, connection
        client.get(path)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200 or "<main" not in response.text:
            raise SystemExit(f"GET {path}: HTTP {response.status_code}")
    rows = response.text.count('data-testid="run-row"')
    if path.startswith("/runs") and rows == 0:
        raise SystemExit(f"GET {path}: no run in the page")
    return times


def report(path: str, times: list[float]) -> float:
    p50, p90 = percentile(times, 50), percentile(times, 90)
    print(f"GET {path:<40} n={len(times):>4}  p50 {p50:6.1f} ms  p90 {p90:6.1f} ms  max {max(times):6.1f} ms")
    return p50


def measure(base_url: str, token: str, repeat: int) -> tuple[float, float]:
    client = signed_in(base_url, token)
    try:
        overview = report("/", timed(client, "/", repeat))
        runs = report("/runs", timed(client, "/runs", repeat))
        for path in ("/runs?status=failed", "/runs?plugin=echo&trigger_kind=cdc", "/runs?rule=paid_orders"):
            report(path, timed(client, path, repeat))
    finally:
        client.close()
    return overview, runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000, help="results written to Redis first")
    parser.add_argument("--repeat", type=int, default=30, help="timed requests per page")
    args = parser.parse_args()
    stack_up()
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp), isolated_config_data("dashbench", RULES))
        try:
            started = time.perf_counter()
            fill_runs(config.settings, args.runs)
            print(f"{args.runs} runs written in {time.perf_counter() - started:.1f} s")
            with api_server(config, Path(tmp) / "api.log", show_log=False) as server:
                overview, runs = measure(server.base_url, server.tokens["read"], args.repeat)
        finally:
            remove_test_resources(config.settings, [])
    print(f"dashboard render ms p50: overview {overview:.1f} / runs {runs:.1f}")


if __name__ == "__main__":
    main()
