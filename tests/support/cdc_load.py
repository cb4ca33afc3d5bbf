"""A sustained multi-table write load and the exactly-once check of the reader's events against the
tables themselves (used by the outage and kill -9 tests of the reader).

The proof compares the database's own final table contents with the state rebuilt from the Kafka
events after de-duplication by event id — not with the reader's counters or the writer's notes.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

import orjson
import pymysql

from schemas.config import Config
from tests.support import consume_all, execute, isolated_config_data, mysql

LOAD_TABLES = ("orders", "stock")


COUNTERS = 20  # rows of `stock`, updated over and over


def load_config_data(tag: str) -> dict[str, Any]:
    return isolated_config_data(tag, {"monitored_tables": {t: {"triggers": ["echo"]} for t in LOAD_TABLES}})


def create_load_tables(db: str) -> None:
    execute(
        [
            f"CREATE DATABASE {db}",
            f"CREATE TABLE {db}.orders (id INT AUTO_INCREMENT PRIMARY KEY, n INT NOT NULL, note VARCHAR(40))",
            f"CREATE TABLE {db}.stock (id INT PRIMARY KEY, n INT NOT NULL)",
            f"INSERT INTO {db}.stock VALUES " + ", ".join(f"({i}, 0)" for i in range(COUNTERS)),
        ]
    )


class WriteLoad:
    """Multi-table transactions in a thread, surviving server outages (an unsure commit is fine:
    the check reads the tables themselves)."""

    def __init__(self, db: str, pause: float = 0.01):
        self.db, self.pause = db, pause
        self.stop = threading.Event()
        self.commits = 0
        self.errors = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> WriteLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)

    def _run(self) -> None:
        conn: pymysql.connections.Connection | None = None
        n = 0
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = pymysql.connect(
                        host="127.0.0.1",
                        port=3307,
                        user="cdcflow",
                        password="cdcflow",
                        database=self.db,
                        autocommit=False,
                        connect_timeout=2,
                        read_timeout=5,
                        write_timeout=5,
                    )
                n += 1
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO orders (n, note) VALUES (%s, %s)", (n, f"order {n} 李😀"))
                    cur.execute("UPDATE stock SET n = %s WHERE id = %s", (n, n % COUNTERS))
                    if n % 7 == 0:
                        cur.execute("DELETE FROM orders WHERE n = %s", (n - 3,))
                conn.commit()
                self.commits += 1
            except pymysql.err.MySQLError:
                self.errors += 1
                try:
                    conn and conn.close()
                except Exception:
                    pass
                conn = None
                self.stop.wait(0.2)
            self.stop.wait(self.pause)
        if conn is not None:
            conn.close()


def table_rows(db: str) -> dict[str, dict[Any, dict]]:
    conn = mysql(db)
    out: dict[str, dict[Any, dict]] = {}
    with conn.cursor(pymysql.cursors.DictCursor) as cur:
        for table in LOAD_TABLES:
            cur.execute(f"SELECT * FROM {table}")
            out[table] = {r["id"]: r for r in cur.fetchall()}
    conn.close()
    return out


def kafka_events(config: Config, db: str) -> list[dict]:
    topics = [config.settings.topics.row_changes(db, t) for t in LOAD_TABLES]
    return [orjson.loads(m.value()) for m in consume_all(config, topics, idle_seconds=2.0, max_seconds=120)]


def assert_exactly_once(events: list[dict], rows: dict[str, dict[Any, dict]]) -> dict[str, int]:
    """Dedup by event id; the same id must carry the same change; replay must give the tables."""
    unique: dict[str, dict] = {}
    for e in events:
        body = {k: e[k] for k in ("before", "after", "op")}
        if e["event_id"] in unique:
            first = unique[e["event_id"]]
            assert {k: first[k] for k in body} == body, f"event id {e['event_id']} re-sent with a different change"
        else:
            unique[e["event_id"]] = body | {"source": e["source"]}
    # one change must never get two event ids: each insert of a key, each update to a value is unique
    seen: dict[tuple, str] = {}
    for event_id, e in unique.items():
        image = e["after"] or e["before"]
        identity = (e["source"]["table"], e["op"], image["id"], image["n"])
        assert identity not in seen, f"one change under two event ids: {seen.get(identity)} and {event_id}"
        seen[identity] = event_id
    # replay in binlog order (files are numbered; pos grows within a file)
    state: dict[str, dict[Any, dict]] = defaultdict(dict)
    for e in sorted(unique.values(), key=lambda e: (e["source"]["file"], e["source"]["pos"], e["source"]["row"])):
        table = state[e["source"]["table"]]
        if e["op"] == "d":
            table.pop(e["before"]["id"], None)
        else:
            table[e["after"]["id"]] = e["after"]
    for name in LOAD_TABLES:
        expected = {k: {c: v for c, v in r.items()} for k, r in rows[name].items()}
        if name == "stock":  # the initial rows were written before the reader started
            replayed = {k: {"id": k, "n": 0} for k in expected} | state[name]
        else:
            replayed = state[name]
        missing = sorted(set(expected) - set(replayed))
        extra = sorted(set(replayed) - set(expected))
        assert not missing and not extra, f"{name}: missing {missing[:10]}, extra {extra[:10]}"
        wrong = [k for k in expected if expected[k] != replayed[k]]
        assert not wrong, f"{name}: rows differ from the table: {[(expected[k], replayed[k]) for k in wrong[:5]]}"
    return {"events": len(events), "unique": len(unique), "resent": len(events) - len(unique)}


def wait_until_caught_up(config: Config, db: str, timeout: float = 120) -> dict[str, int]:
    """Retry the comparison until the reader has sent everything (or the timeout proves it did not)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = table_rows(db)
        try:
            return assert_exactly_once(kafka_events(config, db), rows)
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
