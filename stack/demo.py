"""The demo behind `bash stack/demo.sh`: the whole pipeline on the local stack, one write, its result.

Starts `cdcflow run` with stack/cdcflow.yaml, inserts a teacher row, waits for data_processor's
result (run in its own virtualenv), then fires a manual trigger and waits for that result too.
`--keep` leaves the pipeline running afterwards (Ctrl-C stops it).
"""
from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pymysql

from cdc.checkpoint import CheckpointStore
from plugins.store import RunStore
from schemas.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "stack" / "cdcflow.yaml"
LOG = ROOT / ".state" / "demo" / "pipeline.log"
ADMIN = {"host": "127.0.0.1", "port": 3307, "user": "cdcflow", "password": "cdcflow", "charset": "utf8mb4",
         "autocommit": True}
TABLE_DDL = """CREATE TABLE IF NOT EXISTS teachers (
  id INT AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  is_valid BOOLEAN NOT NULL DEFAULT TRUE,
  lessons INT NOT NULL DEFAULT 0,
  updated_at TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
)"""


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def wait(condition, timeout: float, what: str, pipeline: subprocess.Popen[bytes]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pipeline.poll() is not None:
            raise SystemExit(f"demo: the pipeline exited (code {pipeline.returncode}); see {LOG}")
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    tail = LOG.read_text(errors="replace")[-3000:] if LOG.exists() else ""
    raise SystemExit(f"demo: timed out after {timeout:.0f}s waiting for {what}; last lines of {LOG}:\n{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the pipeline running until Ctrl-C")
    args = parser.parse_args()

    config = load_config(CONFIG)
    db = config.settings.mysql.database
    conn = pymysql.connect(**ADMIN)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE IF NOT EXISTS {db}")
        cur.execute(f"USE {db}")
        cur.execute(TABLE_DDL)

    LOG.parent.mkdir(parents=True, exist_ok=True)
    say(f"starting the pipeline: cdcflow -c {CONFIG.relative_to(ROOT)} run   (log: {LOG.relative_to(ROOT)})")
    cli = [sys.executable, "-m", "schemas.cli", "--config", str(CONFIG)]
    with LOG.open("ab") as log:
        pipeline = subprocess.Popen([*cli, "run"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait(lambda: CheckpointStore(config.settings).load(), 120, "the binlog reader to start", pipeline)
        store = RunStore(config.settings)
        with conn.cursor() as cur:
            cur.execute("INSERT INTO teachers (name, is_valid, lessons) VALUES (%s, TRUE, %s)", ("Ann Demo", 1234))
            row_id = cur.lastrowid
        written = time.time()
        say(f"INSERT INTO {db}.teachers -> id {row_id}; waiting for data_processor "
            "(the first run builds its virtualenv, later runs take milliseconds)")

        def result_for_row():
            return next((r for r in store.list(plugin="data_processor", limit=50)
                         if r.output and r.output.get("teacher_id") == str(row_id)), None)

        result = wait(result_for_row, 300, "data_processor's result", pipeline)
        say(f"result after {time.time() - written:.2f}s:")
        print(json.dumps(result.model_dump(mode="json"), indent=2, ensure_ascii=False))

        say("manual trigger: cdcflow trigger data_processor -p operation=report -p lessons=3 --wait")
        subprocess.run([*cli, "trigger", "data_processor", "-p", "operation=report", "-p", "lessons=3", "--wait",
                        "--timeout", "120"], cwd=ROOT, check=True)
        if args.keep:
            say("pipeline keeps running; write to cdcflow_demo.teachers and watch `cdcflow runs list`. Ctrl-C stops it.")
            pipeline.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if pipeline.poll() is None:
            pipeline.send_signal(signal.SIGINT)
            pipeline.wait(60)
        say("pipeline stopped (the stack keeps running: python3 stack/stack.py down stops it)")


if __name__ == "__main__":
    main()
