"""Helpers for tests and benchmarks of the plugins part: example plugins in warm pools, isolated settings.

Not used by the runner itself.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from plugins.pool import WorkerPool, WorkerSpec
from plugins.registry import LoadedPlugin, load_plugin
from plugins.venvs import ensure_venv, venv_python
from schemas.settings import Settings

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES_DIR = REPO_ROOT / "plugins" / "examples"
# One venv cache for every test session: building a venv is the slow part, and it is keyed by
# dependencies + python version, so reuse across sessions is safe.
TEST_VENV_DIR = REPO_ROOT / ".state" / "test-venvs"


def example_plugin(name: str) -> LoadedPlugin:
    return load_plugin(EXAMPLES_DIR / name)


@contextmanager
def plugin_pool(plugin: LoadedPlugin, size: int | None = None, venv_dir: Path = TEST_VENV_DIR) -> Iterator[WorkerPool]:
    venv = ensure_venv(venv_dir, plugin.manifest.dependencies)
    pool = WorkerPool(WorkerSpec(plugin.name, venv_python(venv), plugin.path, plugin.manifest.entry_point),
                      size or plugin.manifest.concurrency)
    pool.start()
    try:
        yield pool
    finally:
        pool.close()


def isolated_settings(tag: str = "test", base: Settings | None = None) -> Settings:
    """A copy of the settings whose topics, consumer group and Redis keys no other run shares."""
    settings = (base or Settings()).model_copy(deep=True)
    uid = f"{tag}-{uuid.uuid4().hex[:10]}"
    settings.topics.invoke_prefix = f"test.{uid}.invoke"
    settings.topics.results = f"test.{uid}.results"
    settings.topics.dlq = f"test.{uid}.dlq"
    settings.runners.group_id = f"test-{uid}-runners"
    settings.redis.key_prefix = f"test:{uid}"
    settings.runners.plugin_dirs = [EXAMPLES_DIR]
    settings.runners.venv_dir = TEST_VENV_DIR
    return settings


def stack_problem(settings: Settings) -> str | None:
    """Why the local Kafka/Redis cannot be used, or None when both answer."""
    import redis
    from confluent_kafka.admin import AdminClient

    try:
        redis.Redis.from_url(settings.redis.url.get_secret_value(), socket_connect_timeout=2).ping()
    except redis.RedisError as e:
        return f"Redis not reachable: {e}"
    try:
        AdminClient(settings.kafka_config()).list_topics(timeout=5)
    except Exception as e:
        return f"Kafka not reachable at {settings.kafka.bootstrap_servers}: {e}"
    return None


def remove_test_resources(settings: Settings, topics: list[str]) -> None:
    """Delete a test's topics and Redis keys (best effort)."""
    import redis
    from confluent_kafka.admin import AdminClient

    if topics:
        admin = AdminClient(settings.kafka_config())  # must outlive the futures
        for f in admin.delete_topics(topics, operation_timeout=10).values():
            try:
                f.result()
            except Exception:
                pass
    client = redis.Redis.from_url(settings.redis.url.get_secret_value())
    keys = list(client.scan_iter(match=f"{settings.redis.key_prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


def measure_round_trip(calls: int = 20000, warmup: int = 500) -> dict[str, float]:
    """Round trip of no-op echo calls through a warm pool of one worker, in microseconds.

    `round_trip` is what the runner's thread waits for a call; `overhead` subtracts the time the
    worker spent between receiving the request and having the response ready (i.e. the pipe, the
    framing, JSON on both sides and the process wake-ups).
    """
    import time

    with plugin_pool(example_plugin("echo"), size=1) as pool:
        request = {"invocation_id": "bench", "params": {},
                   "context": {"invocation_id": "bench", "plugin": "echo", "attempt": 1, "trigger": {"kind": "manual"}}}
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

    return {"calls": calls, "round_trip_p50_us": pct(trips, 0.5), "round_trip_p99_us": pct(trips, 0.99),
            "overhead_p50_us": pct(overheads, 0.5), "overhead_p99_us": pct(overheads, 0.99),
            "calls_per_second_one_worker": round(calls / sum(trips))}
