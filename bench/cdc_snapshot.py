"""Snapshot throughput: `cdcflow cdc snapshot` rows/s (acknowledged by Kafka) against a bare keyset SELECT.

Fills a table of its own with --rows rows (the column mix of bench/cdc_throughput.py), then per chunk
size, alternating, in this process:
  select    the same keyset-paginated SELECTs, rows fetched as text, nothing else (the ceiling);
  snapshot  the full snapshot into fresh topics: convert, produce (idempotent, acks=all), wait for
            the chunk's acks, save progress.
Medians of the runs; the last line is `cdc snapshot/select ratio: X.XX` (at the default chunk size).

    python -m bench.cdc_snapshot [--rows 200000] [--runs 3] [--chunks 500,2000,10000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pymysql

from bench.common import stack_up
from cdc.snapshot import Snapshot
from cdc.snapshot_values import TEXT_RESULTS
from cdc.source import connection_settings
from schemas.config import Config
from tests.support import execute, isolated_config_data, remove_test_resources, write_config

COLUMNS = (
    "id BIGINT PRIMARY KEY, n INT NOT NULL, qty SMALLINT, name VARCHAR(64) CHARACTER SET utf8mb4, "
    "code CHAR(8), created DATETIME(3), amount DECIMAL(12,2), note VARCHAR(255)"
)


def fresh_config(directory: Path, db: str | None, rows: int) -> Config:
    data = isolated_config_data("bsnap", {"monitored_tables": {"bench_rows": {"triggers": ["echo"]}}})
    if db is None:
        db = data["mysql"]["database"]
        execute([f"CREATE DATABASE {db}", f"CREATE TABLE {db}.bench_rows ({COLUMNS})"])
        execute(
            [
                f"INSERT INTO {db}.bench_rows SELECT seq, seq % 1000, seq % 30000, CONCAT('name ', seq, ' 😀'), "
                f"LPAD(seq % 99999, 8, '0'), '2024-01-02 03:04:05.678' + INTERVAL seq SECOND, seq / 7, "
                f"REPEAT('x', seq % 100) FROM seq_1_to_{rows}"
            ],
            db,
        )
    data["mysql"]["database"] = db
    return write_config(directory, data)


def bare_select(config: Config, chunk: int) -> float:
    conn = pymysql.connect(**connection_settings(config.settings), conv=TEXT_RESULTS)
    db = config.settings.mysql.database
    started, last, count = time.perf_counter(), 0, 0
    with conn.cursor() as cur:
        cur.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        while True:
            cur.execute(f"SELECT * FROM {db}.bench_rows WHERE id > %s ORDER BY id LIMIT {chunk + 1}", (last,))
            rows = cur.fetchall()[:chunk]
            count += len(rows)
            if len(rows) < chunk:
                break
            last = int(rows[-1][0])
    conn.close()
    return count / (time.perf_counter() - started)


def full_snapshot(config: Config, chunk: int) -> float:
    job = Snapshot(config.settings, config.rules, chunk_size=chunk)
    job.prepare()
    result = job.run()
    return result.rows / result.seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--chunks", default="500,2000,10000")
    args = parser.parse_args()
    stack_up()
    chunks = [int(c) for c in args.chunks.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "base").mkdir()
        base = fresh_config(Path(tmp) / "base", None, args.rows)
        db = base.settings.mysql.database
        configs: list[Config] = []
        try:
            figures: dict[int, tuple[float, float]] = {}
            for chunk in chunks:
                selects, snaps = [], []
                for run in range(args.runs):
                    selects.append(bare_select(base, chunk))
                    directory = Path(tmp) / f"c{chunk}r{run}"
                    directory.mkdir()
                    configs.append(config := fresh_config(directory, db, args.rows))  # own topics, own checkpoint
                    snaps.append(full_snapshot(config, chunk))
                figures[chunk] = (statistics.median(selects), statistics.median(snaps))
                print(
                    f"chunk {chunk:>6}: bare select {figures[chunk][0]:>9,.0f} rows/s   "
                    f"snapshot {figures[chunk][1]:>9,.0f} rows/s   ratio {figures[chunk][1] / figures[chunk][0]:.2f}"
                    f"   (medians of {args.runs}, {args.rows} rows)"
                )
            default = 2000 if 2000 in figures else chunks[0]
            select_rate, snapshot_rate = figures[default]
            print(f"cdc snapshot/select ratio: {snapshot_rate / select_rate:.2f}")
        finally:
            execute(f"DROP DATABASE IF EXISTS {db}")
            for config in [base, *configs]:
                remove_test_resources(
                    config.settings,
                    [config.settings.topics.row_changes(db, "bench_rows"), config.settings.topics.cdc_checkpoints],
                )


if __name__ == "__main__":
    main()
