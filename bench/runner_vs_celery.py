"""Throughput of a no-op plugin through a runner vs the same no-op task in Celery 5, in one run.

Runner: N invocations produced to the plugin's topic; one `cdcflow runners run` process with a warm
pool of W workers (the plugin's own venv and processes, as always) consumes them; timed from the
first produce until all N results are recorded in Redis (and so, by the runner's design, also
published, before their offsets are committed).
Celery: one `celery worker --pool prefork --concurrency W` on the local Redis (broker and result
backend in their own db numbers); N `apply_async` calls; timed from the first send until all N
results are stored in the result backend. Configured for many short tasks as Celery's "Optimizing"
guide says: `worker_prefetch_multiplier=64` (its "say 64, or 128" for short tasks; default 4) and
`worker_disable_rate_limits=True` (the tasks guide: disable rate limits if not used), acks early
(the default), no gossip, mingle or heartbeat; results kept, as the runner keeps them.

Rounds alternate (runner, celery, runner, ...); medians are printed. Also: the runner's
per-invocation overhead (consumed -> entry function called, from the run records' timings) when
invocations arrive one by one and under the flood, and memory (RSS/PSS) per warm worker of both.

    python -m bench.runner_vs_celery [--n 10000] [--workers 2] [--rounds 3]

Last line: `runner/celery ratio: X.XX`.
"""

from __future__ import annotations

import os
from datetime import UTC

from celery import Celery

# The Celery side's app: this module is also what `celery -A bench.runner_vs_celery worker` imports, so
# nothing above main() may be heavier than this.
CELERY_REDIS = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6380")
BROKER_DB, BACKEND_DB = 11, 12  # db 0 is cdcflow's; these two are the benchmark's own
app = Celery("runner_vs_celery", broker=f"{CELERY_REDIS}/{BROKER_DB}", backend=f"{CELERY_REDIS}/{BACKEND_DB}")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_expires=600,
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=64,
    worker_disable_rate_limits=True,
)


@app.task(name="bench.noop")
def noop() -> None:
    return None


def main() -> None:  # noqa: C901 - a script: setup, rounds, report
    import argparse
    import json
    import signal
    import statistics
    import subprocess
    import sys
    import tempfile
    import time
    import uuid
    from datetime import datetime
    from pathlib import Path
    from typing import Any

    import redis
    from confluent_kafka import Producer

    from bench.common import ROOT, percentile, stack_up, start_cdcflow
    from schemas.invocation import Invocation, ManualTrigger
    from schemas.runtime.kafka_topics import ensure_topics
    from tests.support import isolated_config_data, remove_test_resources, write_config

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10000, help="invocations / tasks per round")
    parser.add_argument("--workers", type=int, default=2, help="runner pool size = celery --concurrency")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of each")
    parser.add_argument("--paced", type=int, default=500, help="invocations sent one by one for the idle overhead")
    parser.add_argument("--no-celery", action="store_true", help="the runner only (e.g. to profile it); no ratio")
    args = parser.parse_args()
    stack_up()

    work = Path(tempfile.mkdtemp(prefix="bench-runner-celery-"))
    plugin_dir = work / "plugins" / "noop"
    plugin_dir.mkdir(parents=True)
    (plugin_dir / "plugin.json").write_text(
        json.dumps(
            {
                "name": "noop",
                "version": "1.0.0",
                "entry_point": "main.noop",
                "concurrency": args.workers,
                "timeout_seconds": 30,
            }
        )
    )
    (plugin_dir / "main.py").write_text("def noop():\n    return None\n")
    data = isolated_config_data("bench", plugin_dirs=[plugin_dir.parent])
    data["runners"]["venv_dir"] = str(ROOT / ".state" / "bench-venvs")
    config = write_config(work, data)
    s = config.settings
    topic = s.topics.invoke("noop")
    ensure_topics(s, [topic, s.topics.results, s.topics.dlq])
    r = redis.Redis.from_url(s.redis.url.get_secret_value())
    runs_index = f"{s.redis.key_prefix}:runs:plugin:noop"
    producer = Producer(s.kafka_config(**{"acks": "all", "enable.idempotence": True, "linger.ms": 5}))

    def invocation_payloads(n: int) -> list[tuple[bytes, bytes]]:
        now = datetime.now(UTC)
        trigger = ManualTrigger(requested_by="bench", requested_at=now, request_id="bench")
        out = []
        for _ in range(n):
            inv = Invocation(invocation_id=str(uuid.uuid4()), plugin="noop", params={}, created_at=now, trigger=trigger)
            out.append((inv.invocation_id.encode(), inv.model_dump_json().encode()))
        return out

    def produce(items: list[tuple[bytes, bytes]]) -> None:
        for key, value in items:
            while True:
                try:
                    producer.produce(topic, key=key, value=value)
                    break
                except BufferError:
                    producer.poll(0.05)
        producer.flush(60)

    def wait_count(count: Any, target: int, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while count() < target:
            if time.monotonic() > deadline:
                raise SystemExit(f"timed out waiting for {what}: {count()} of {target}")
            time.sleep(0.01)

    def memory(pid: int) -> tuple[float, float]:
        """(RSS, PSS) in MiB of one process, from /proc/<pid>/smaps_rollup."""
        fields = {}
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            name, value, *_ = line.split()
            fields[name.rstrip(":")] = int(value) / 1024
        return fields["Rss"], fields["Pss"]

    def overheads_ms(ids: list[str]) -> list[float]:
        out = []
        for raw in r.mget([f"{s.redis.key_prefix}:run:{i}" for i in ids]):
            t = json.loads(raw)["timings"]
            out.append((t["entry_called_at"] - t["consumed_at"]) * 1000)
        return out

    runner = celery_worker = None
    queue_name = f"bench-{uuid.uuid4().hex[:8]}"
    try:
        # -- start both, warm --------------------------------------------------------------------
        runner = start_cdcflow(
            config.path, "runners", "run", "--plugin", "noop", "--no-watch", log_path=work / "runner.log"
        )
        warm = invocation_payloads(args.workers * 10)
        produce(warm)
        wait_count(lambda: r.zcard(runs_index), len(warm), 180, "the runner to start (venv, workers, group join)")
        app.conf.task_default_queue = queue_name
        celery_worker = (
            None
            if args.no_celery
            else subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "bench.runner_vs_celery",
                    "worker",
                    "--pool",
                    "prefork",
                    "--concurrency",
                    str(args.workers),
                    "-Q",
                    queue_name,
                    "--loglevel",
                    "WARNING",
                    "--without-gossip",
                    "--without-mingle",
                    "--without-heartbeat",
                ],
                cwd=ROOT,
                stdout=(work / "celery.log").open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        for res in [] if args.no_celery else [noop.apply_async() for _ in range(args.workers * 10)]:
            res.get(timeout=120)
        backend = redis.Redis.from_url(f"{CELERY_REDIS}/{BACKEND_DB}")

        # -- rounds ------------------------------------------------------------------------------
        runner_rates, celery_rates, flood_overheads = [], [], []
        for rnd in range(1, args.rounds + 1):
            before = r.zcard(runs_index)
            t0 = time.perf_counter()
            items = invocation_payloads(args.n)  # timed, like apply_async's own serialization
            produce(items)
            wait_count(lambda: r.zcard(runs_index), before + args.n, 600, "runner results")
            elapsed = time.perf_counter() - t0
            runner_rates.append(args.n / elapsed)
            flood_overheads += overheads_ms([k.decode() for k, _ in items[:: max(1, args.n // 2000)]])
            print(f"round {rnd}: runner {args.n / elapsed:8.0f} invocations/s ({elapsed:.2f}s)", flush=True)

            if args.no_celery:
                continue
            t0 = time.perf_counter()
            ids = [noop.apply_async().id for _ in range(args.n)]
            pending = ids
            while pending:  # all results stored; results come roughly in order: check the oldest 500
                chunk = pending[:500]
                flags = backend.mget([f"celery-task-meta-{i}" for i in chunk])
                left = [i for i, f in zip(chunk, flags, strict=True) if f is None]
                if len(left) == len(chunk):
                    time.sleep(0.005)
                pending = left + pending[500:]
            elapsed = time.perf_counter() - t0
            celery_rates.append(args.n / elapsed)
            failed = [i for i in ids[:200] if json.loads(backend.get(f"celery-task-meta-{i}"))["status"] != "SUCCESS"]
            if failed:
                raise SystemExit(f"celery tasks not successful: {failed[:3]}")
            print(f"round {rnd}: celery {args.n / elapsed:8.0f} tasks/s       ({elapsed:.2f}s)", flush=True)

        # -- overhead with invocations arriving one by one ------------------------------------------
        paced = invocation_payloads(args.paced)
        before = r.zcard(runs_index)
        for key, value in paced:
            producer.produce(topic, key=key, value=value)
            producer.poll(0)
            time.sleep(0.004)
        producer.flush(30)
        wait_count(lambda: r.zcard(runs_index), before + len(paced), 120, "paced results")
        idle = overheads_ms([k.decode() for k, _ in paced])

        # -- memory per warm worker ----------------------------------------------------------------
        sample = [json.loads(x) for x in r.mget([f"{s.redis.key_prefix}:run:{k.decode()}" for k, _ in paced[-50:]])]
        runner_pids = sorted({x["worker_pid"] for x in sample if x.get("worker_pid")})
        celery_pids = (
            []
            if celery_worker is None
            else [
                int(p)
                for p in subprocess.run(
                    ["pgrep", "-P", str(celery_worker.pid)], capture_output=True, text=True
                ).stdout.split()
            ]
        )
        runner_mem = [memory(p) for p in runner_pids if Path(f"/proc/{p}").exists()]
        celery_mem = [memory(p) for p in celery_pids]

        # -- report ------------------------------------------------------------------------------
        runner_rate = statistics.median(runner_rates)
        celery_rate = statistics.median(celery_rates) if celery_rates else float("nan")
        print()
        print(
            f"N={args.n} per round, W={args.workers} worker processes each, {args.rounds} alternating rounds (medians)"
        )
        print(
            "runner (Kafka -> warm isolated worker -> Redis + results topic -> commit): "
            f"{runner_rate:.0f} invocations/s"
            f"  rounds: {', '.join(f'{x:.0f}' for x in runner_rates)}"
        )
        print(
            f"celery 5 (Redis broker, Redis result backend, prefork):              {celery_rate:.0f} tasks/s"
            f"  rounds: {', '.join(f'{x:.0f}' for x in celery_rates)}"
        )
        print(
            f"runner overhead consumed -> entry called, one by one ({len(idle)}): "
            f"p50 {percentile(idle, 50):.3f} ms, p99 {percentile(idle, 99):.3f} ms"
        )
        print(
            f"runner overhead consumed -> entry called, under the flood ({len(flood_overheads)} sampled, "
            f"includes queueing): p50 {percentile(flood_overheads, 50):.1f} ms, "
            f"p99 {percentile(flood_overheads, 99):.1f} ms"
        )
        for label, mem in (("runner worker", runner_mem), ("celery prefork child", celery_mem)):
            if mem:
                print(
                    f"memory per warm {label} ({len(mem)}): RSS {statistics.median(m[0] for m in mem):.1f} MiB, "
                    f"PSS {statistics.median(m[1] for m in mem):.1f} MiB"
                )
        if celery_rates:
            print(f"runner/celery ratio: {runner_rate / celery_rate:.2f}")
    finally:
        for proc in (runner, celery_worker):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if celery_worker is not None:  # its prefork children, should the main process have left them
            try:
                os.killpg(celery_worker.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            redis.Redis.from_url(f"{CELERY_REDIS}/{BROKER_DB}").delete(queue_name)
        remove_test_resources(s, [topic, s.topics.invoke("noop", "high"), s.topics.results, s.topics.dlq])


if __name__ == "__main__":
    main()
