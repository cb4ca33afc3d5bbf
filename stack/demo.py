"""The demo behind `bash stack/demo.sh`: the whole pipeline on the local stack, watched live.

Starts `cdcflow run` with stack/cdcflow.yaml, then for about a minute (`--seconds`) writes rows to
cdcflow_demo.teachers (inserts, an update that matches the rule and one that does not), fires a
manual trigger, and lets the `demo_report` schedule (every 15 s) fire. Every result arriving on
the results topic is printed as it lands: what triggered it, the plugin, its status, how long the
plugin ran, and how long the whole trip took (row committed / invocation created -> result).
`--keep` keeps writing nothing more but leaves the pipeline and the view running until Ctrl-C.

The config enables the HTTP API, so `cdcflow run` also serves the web dashboard: the demo makes an
admin token for it (console.api.tokens.TokenStore), prints the dashboard's URL and the token once
(on this terminal only, never in a log), and revokes the token when the demo ends.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pymysql
from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from cdc.checkpoint import CheckpointStore
from console.api.tokens import TokenStore
from schemas.config import Config, load_config
from schemas.result import Result
from schemas.runtime.components import redis_client

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "stack" / "cdcflow.yaml"
LOG = ROOT / ".state" / "demo" / "pipeline.log"
ADMIN = {
    "host": "127.0.0.1",
    "port": 3307,
    "user": "cdcflow",
    "password": "cdcflow",
    "charset": "utf8mb4",
    "autocommit": True,
}
TABLE_DDL = """CREATE TABLE IF NOT EXISTS teachers (
  id INT AUTO_INCREMENT PRIMARY KEY,
  name VARCHAR(100) NOT NULL,
  is_valid BOOLEAN NOT NULL DEFAULT TRUE,
  lessons INT NOT NULL DEFAULT 0,
  updated_at TIMESTAMP(3) DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)
)"""
NAMES = ["Ann", "Bo", "Chen Li", "Dana", "Emil", "Fatima", "Goro", "Hana"]


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


@dataclass
class Timeline:
    """What the demo did and when, so each result can be shown with its end-to-end time."""

    started: float = field(default_factory=time.time)
    # "teacher_id:lessons" (what data_processor's output tells) -> (committed at, what was written)
    writes: dict[str, tuple[float, str]] = field(default_factory=dict)
    trips_ms: list[float] = field(default_factory=list)
    results: int = 0
    seen: set[str] = field(default_factory=set)  # keys of `writes` whose result arrived

    def at(self, ts: float) -> str:
        return f"+{max(0.0, ts - self.started):5.1f}s"


def wait(condition, timeout: float, what: str, pipeline: subprocess.Popen[bytes]):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pipeline.poll() is not None:
            raise SystemExit(f"demo: the pipeline exited (code {pipeline.returncode}); see {LOG}")
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    tail = LOG.read_text(errors="replace")[-3000:] if LOG.exists() else ""
    raise SystemExit(f"demo: timed out after {timeout:.0f}s waiting for {what}; last lines of {LOG}:\n{tail}")


def dashboard_token(config: Config) -> tuple[TokenStore, str, str]:
    """(store, token id, token text) of a new admin token for this demo's dashboard."""
    settings = config.settings
    store = TokenStore(redis_client(settings, timeout=5.0), settings.redis.key_prefix, settings.api)
    text, record = store.create("demo-dashboard", ["admin"])
    return store, record.id, text


def dashboard_up(url: str) -> bool:
    try:
        return httpx.get(f"{url}login", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def results_consumer(config: Config) -> Consumer | None:
    """A group-less consumer at the current end of the results topic (None until the topic exists)."""
    settings = config.settings
    consumer = Consumer({**settings.kafka_config(), "group.id": "cdcflow-demo-view", "enable.auto.commit": False})
    topic = consumer.list_topics(settings.topics.results, timeout=5).topics.get(settings.topics.results)
    if topic is None or topic.error is not None or not topic.partitions:
        consumer.close()
        return None
    consumer.assign([TopicPartition(settings.topics.results, p, OFFSET_END) for p in topic.partitions])
    return consumer


def describe(result: Result, timeline: Timeline) -> str:
    """One line per result: when, trigger, plugin, status, plugin run time, whole trip."""
    timings = result.timings or {}
    finished = timings.get("finished_at") or result.finished_at.timestamp()
    output = result.output if isinstance(result.output, dict) else {}
    kind = result.trigger_kind or "?"
    trip_from = timings.get("created_at")
    what = kind
    written = timeline.writes.get(f"{output.get('teacher_id')}:{output.get('lessons_pretty')}")
    if kind == "cdc" and written:
        trip_from, what = written
        timeline.seen.add(f"{output.get('teacher_id')}:{output.get('lessons_pretty')}")
    elif kind == "schedule":
        what = "schedule demo_report (every 15 s)"
    elif kind == "manual":
        what = "manual: cdcflow trigger data_processor"
    trip = f"{(finished - trip_from) * 1000:7.1f} ms" if trip_from else "      ?"
    if trip_from:
        timeline.trips_ms.append((finished - trip_from) * 1000)
    detail = (
        output.get("lessons_in_words") if result.status == "success" else (result.error.message if result.error else "")
    )
    return (
        f"{timeline.at(finished)}  {what:<44} -> {result.plugin:<15} {result.status:<8} "
        f"ran {result.duration_ms:6.1f} ms  trip {trip}  {detail}"
    )


def watch(consumer: Consumer, timeline: Timeline, stop: threading.Event) -> None:
    while not stop.is_set():
        message = consumer.poll(0.2)
        if message is None or message.error():
            continue
        try:
            result = Result.model_validate(orjson.loads(message.value()))
        except ValueError:
            continue
        timeline.results += 1
        print(describe(result, timeline), flush=True)


def write_rows(
    conn: pymysql.connections.Connection,
    db: str,
    timeline: Timeline,
    seconds: float,
    cli: list[str],
    stop: threading.Event,
) -> None:
    """Rows at a steady pace; an update that matches, one that the rule's condition filters out; one manual trigger."""
    step, i, last_id, lessons = 3.0, 0, None, 0
    end = time.time() + seconds
    while time.time() < end and not stop.is_set():
        with conn.cursor() as cur:
            if i % 4 == 3 and last_id is not None:
                valid = i % 8 != 7
                lessons += 1
                cur.execute(
                    f"UPDATE {db}.teachers SET lessons = %s, is_valid = %s WHERE id = %s", (lessons, valid, last_id)
                )
                what = f"UPDATE teachers id={last_id}"
                if valid:
                    timeline.writes[f"{last_id}:{lessons:,}"] = (time.time(), f"cdc: {what}")
                print(
                    f"{timeline.at(time.time())}  {what}{'' if valid else ' SET is_valid=false (no rule matches)'}",
                    flush=True,
                )
            else:
                name, lessons = NAMES[i % len(NAMES)], 7 + i * 1111
                cur.execute(
                    f"INSERT INTO {db}.teachers (name, is_valid, lessons) VALUES (%s, TRUE, %s)", (name, lessons)
                )
                last_id = cur.lastrowid
                timeline.writes[f"{last_id}:{lessons:,}"] = (time.time(), f"cdc: INSERT teachers id={last_id}")
                print(f"{timeline.at(time.time())}  INSERT teachers id={last_id} ({name})", flush=True)
        if i == 4:
            print(
                f"{timeline.at(time.time())}  cdcflow trigger data_processor -p operation=report -p lessons=3",
                flush=True,
            )
            subprocess.run(
                [*cli, "trigger", "data_processor", "-p", "operation=report", "-p", "lessons=3"],
                cwd=ROOT,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        i += 1
        stop.wait(step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=45, help="how long to write rows (default 45)")
    parser.add_argument("--keep", action="store_true", help="leave the pipeline and the live view running until Ctrl-C")
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
    cli = [sys.executable, "-m", "console.cli", "--config", str(CONFIG)]
    with LOG.open("ab") as log:
        pipeline = subprocess.Popen([*cli, "run"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    stop = threading.Event()
    tokens, token_id, token = dashboard_token(config)
    api = config.settings.api
    url = f"http://{api.bind}:{api.port}/"
    try:
        wait(lambda: dashboard_up(url), 60, f"the dashboard at {url}", pipeline)
        say(f"dashboard: {url}  sign in with this admin token (revoked when the demo ends):\n\n    {token}\n")
        wait(lambda: CheckpointStore(config.settings).load(), 120, "the binlog reader to start", pipeline)
        consumer = wait(lambda: results_consumer(config), 120, "the results topic", pipeline)
        timeline = Timeline()
        viewer = threading.Thread(target=watch, args=(consumer, timeline, stop), daemon=True)
        viewer.start()
        # A fresh stack's first messages wait for things that happen once (the plugin's virtualenv,
        # Kafka's producer ids, consumer-group joins): one row and one manual trigger go first.
        say(
            "warming up: one row and `cdcflow trigger data_processor --wait` go through first "
            "(the first run builds the plugin's virtualenv; later runs take milliseconds)"
        )
        with conn.cursor() as cur:
            cur.execute(f"INSERT INTO {db}.teachers (name, is_valid, lessons) VALUES ('warm-up', TRUE, 1)")
            warm_up = f"{cur.lastrowid}:1"
        timeline.writes[warm_up] = (time.time(), f"cdc: INSERT teachers id={cur.lastrowid} (warm-up)")
        subprocess.run(
            [*cli, "trigger", "data_processor", "-p", "operation=report", "--wait", "--timeout", "300"],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wait(lambda: warm_up in timeline.seen, 300, "the warm-up row's result", pipeline)
        say(
            "writing to cdcflow_demo.teachers; each result is shown as it lands "
            "(trip = row committed, or invocation created, -> result recorded)"
        )
        timeline.started, timeline.trips_ms, timeline.results = time.time(), [], 0
        write_rows(conn, db, timeline, args.seconds, cli, stop)
        time.sleep(5)  # the last writes' results
        if timeline.trips_ms:
            say(
                f"{timeline.results} results; trip p50 {statistics.median(timeline.trips_ms):.1f} ms, "
                f"max {max(timeline.trips_ms):.1f} ms"
            )
        else:
            raise SystemExit(f"demo: no result arrived; see {LOG}")
        if args.keep:
            say(
                "pipeline keeps running: write to cdcflow_demo.teachers in another shell and watch here"
                f" or on {url}. Ctrl-C stops it."
            )
            pipeline.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        tokens.revoke(token_id)
        if pipeline.poll() is None:
            pipeline.send_signal(signal.SIGINT)
            pipeline.wait(60)
        say("pipeline stopped (the stack keeps running: python3 stack/stack.py down stops it)")


if __name__ == "__main__":
    main()
