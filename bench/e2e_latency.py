"""End-to-end latency of the slice: row committed in MariaDB -> plugin entry function called.

Runs the real pipeline (`cdcflow run`) on the local stack with its own database and topics,
writes single-row transactions at a steady rate, and reads each run's `called_at` (taken by the
echo plugin as its first statement) from the results topic. Prints p50/p90/p99 and, last,
`e2e latency p50/p99 ms: A / B`.

Also printed: the cores each part used while the measured rows were written, how busy the whole
machine was, and how long the broker has run. Latency is mostly waiting for a core once the
machine is full (at 1000 rows/s the pipeline with its stack filled both cores of the 2-core
development box), and a freshly started broker is slow until the JVM has compiled its hot paths
(consecutive runs on a new broker: p50 289, 108, 70, 56 ms, then ~50).

    python -m bench.e2e_latency [--rows 1000] [--rate 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.common import components, percentile, stack_up, start_cdcflow, stop_cdcflow
from bench.cores import age_seconds, cores_used, machine_busy_seconds, print_cores, snapshot, stack_pids
from cdc.checkpoint import CheckpointStore
from schemas.config import Config
from tests.support import consume_all, execute, isolated_config_data, mysql, wait_for, write_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1000, help="single-row writes to measure (>= 200)")
    parser.add_argument("--rate", type=float, default=200.0, help="writes per second")
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    stack_up()
    rules = {
        "monitored_tables": {
            "pings": {"triggers": ["echo"], "operations": ["INSERT"], "params": {"message": "{after.id}"}}
        }
    }
    data = isolated_config_data("bench", rules)
    data["kafka"]["partitions"] = 4
    db = data["mysql"]["database"]
    execute([f"CREATE DATABASE {db}", f"CREATE TABLE {db}.pings (id INT PRIMARY KEY, note VARCHAR(20))"])
    workdir = Path(tempfile.mkdtemp(prefix="cdcflow-bench-"))
    config = write_config(workdir, data)
    pipeline = start_cdcflow(config.path, "run", log_path=workdir / "pipeline.log")
    try:
        wait_for(lambda: CheckpointStore(config.settings).load(), 120, 0.5, "the reader to start")
        conn = mysql(db)
        cur = conn.cursor()
        committed: dict[int, float] = {}
        total = args.warmup + args.rows
        print(f"writing {args.warmup} warm-up rows, then {args.rows} rows at {args.rate:.0f} rows/s", file=sys.stderr)
        interval = 1.0 / args.rate
        start = time.perf_counter()
        roots = {"cdcflow run": pipeline.pid, "bench (writer)": os.getpid(), **stack_pids()}
        before: Mark | None = None
        for i in range(total):
            if i == args.warmup:
                # let the warm-up drain (venv, warm workers, group joins) before measuring
                wait_for(lambda: len(results(config)) >= args.warmup, 180, 0.5, "warm-up results")
                before = mark(roots, config)
                start = time.perf_counter() - i * interval
            target = start + i * interval
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            cur.execute("INSERT INTO pings VALUES (%s, 'x')", (i,))
            committed[i] = time.time()
        assert before is not None  # taken when the first measured row was due
        print_load(before, mark(roots, config), time.perf_counter() - start - args.warmup * interval, args.rows)
        conn.close()
        done = wait_for(lambda: (r := results(config)) and len(r) >= total and r, 300, 1.0, "all results")
        measured = range(args.warmup, total)
        latencies = [(done[i]["entry_called_at"] - committed[i]) * 1000 for i in measured]
        failed = sum(1 for i in measured if i not in done)
        produced = reader_times(config, db)
        stages = {
            "commit -> reader produced": [produced[i] - committed[i] for i in measured],
            "reader -> streams emitted": [done[i]["created_at"] - produced[i] for i in measured],
            "streams -> runner consumed": [done[i]["consumed_at"] - done[i]["created_at"] for i in measured],
            "runner consumed -> entry": [done[i]["entry_called_at"] - done[i]["consumed_at"] for i in measured],
            "  of which consumed -> sent": [done[i]["sent_at"] - done[i]["consumed_at"] for i in measured],
            "  of which sent -> entry": [done[i]["entry_called_at"] - done[i]["sent_at"] for i in measured],
        }
        for name, values in stages.items():
            ms = [v * 1000 for v in values]
            print(f"  {name:<28} p50 {percentile(ms, 50):7.1f} ms  p99 {percentile(ms, 99):7.1f} ms")
        print(f"rows measured: {len(latencies)} at {args.rate:.0f} rows/s (missing: {failed})")
        print(
            f"e2e latency p50 {percentile(latencies, 50):.1f} ms, p90 {percentile(latencies, 90):.1f} ms, "
            f"p99 {percentile(latencies, 99):.1f} ms, max {max(latencies):.1f} ms, "
            f"mean {statistics.fmean(latencies):.1f} ms"
        )
        print(f"e2e latency p50/p99 ms: {percentile(latencies, 50):.1f} / {percentile(latencies, 99):.1f}")
    finally:
        stop_cdcflow(pipeline)
        execute(f"DROP DATABASE IF EXISTS {db}")


@dataclass
class Mark:
    """The CPU time of each part and of the machine, and the streams workers' transaction totals."""

    processes: dict[int, tuple[str, float]]
    machine_busy: float
    streams: dict[str, dict[str, Any]]  # instance -> its heartbeat's row_changes figures


def mark(roots: dict[str, int], config: Config) -> Mark:
    streams = {
        v["instance"]: v["details"]["row_changes"]
        for v in components(config)
        if v["kind"] == "streams" and v["liveness"] == "up" and (v.get("details") or {}).get("row_changes")
    }
    return Mark(snapshot(roots), machine_busy_seconds(), streams)


def print_load(before: Mark, after: Mark, seconds: float, rows: int) -> None:
    """While the measured rows were written: the cores per part and of the whole machine, the broker's
    age, and each streams worker's transactions (its batches of row changes: the two middle stages
    include one). The transaction figures come from heartbeats, up to one heartbeat late at each end."""
    print_cores(cores_used(before.processes, after.processes, seconds), seconds, rows, "while writing")
    busy = (after.machine_busy - before.machine_busy) / seconds
    print(f"machine: {busy:.2f} of {os.cpu_count()} cores busy (everything running, not only these parts)")
    kafka = stack_pids().get("kafka (shared)")
    age = age_seconds(kafka) if kafka is not None else None
    if age is not None:
        print(f"kafka broker up {age / 60:.0f} min (a fresh one runs slow until its JIT has warmed up)")
    for instance, now in after.streams.items():
        was = before.streams.get(instance, {})
        batches = now["batches"] - was.get("batches", 0)
        if batches and "commit_seconds" in now:
            events = now["events"] - was.get("events", 0)
            commit_ms = (now["commit_seconds"] - was.get("commit_seconds", 0.0)) / batches * 1000
            print(
                f"streams worker {instance}: {batches} transactions, {events / batches:.1f} row changes each, "
                f"send_offsets + commit {commit_ms:.1f} ms each"
            )


_seen: dict[int, dict[str, float]] = {}


def results(config) -> dict[int, dict[str, float]]:
    """row id -> the run's timings (streams' created_at, runner's consumed_at, entry_called_at), cumulative."""
    for msg in consume_all(config, [config.settings.topics.results], idle_seconds=0.5, max_seconds=10):
        value = orjson.loads(msg.value())
        output = value.get("output") or {}
        if value.get("status") == "success" and output.get("message") is not None:
            _seen[int(output["message"])] = {**value["timings"], "entry_called_at": output["called_at"]}
    return _seen


def reader_times(config, db: str) -> dict[int, float]:
    """row id -> when the reader built its envelope (`ts_ms`)."""
    topic = config.settings.topics.row_changes(db, "pings")
    return {
        orjson.loads(m.value())["after"]["id"]: orjson.loads(m.value())["ts_ms"] / 1000
        for m in consume_all(config, [topic], idle_seconds=1.0, max_seconds=60)
    }


if __name__ == "__main__":
    main()
