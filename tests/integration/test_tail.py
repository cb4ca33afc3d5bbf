"""`cdcflow tail` against the real Kafka: one line per event, filters, --json, bounded by -n."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from console.cli import cli
from schemas.runtime.kafka_topics import ensure_topics
from schemas.settings import Settings
from streams.event_filter import EventFilter
from streams.tail import tail
from tests.support import isolated_config_data, remove_test_resources, wait_for, write_config


@pytest.fixture
def config(stack: None, tmp_path: Path):
    cfg = write_config(tmp_path, isolated_config_data("tail"))
    s = cfg.settings
    topics = [s.topics.row_changes("shop", "orders"), s.topics.results]
    ensure_topics(s, topics)
    yield cfg
    remove_test_resources(s, topics)


def _produce(settings: Settings, topic: str, values: list[tuple[bytes, dict]]) -> None:
    producer = Producer(settings.kafka_config())
    for key, value in values:
        producer.produce(topic, key=key, value=orjson.dumps(value), partition=0)
    assert producer.flush(10) == 0


def _change(row: int, flag: bool, op: str = "c") -> dict:
    return {
        "before": None,
        "after": {"id": row, "flag": flag},
        "op": op,
        "ts_ms": 1,
        "event_id": f"1:f:{row}:0",
        "source": {"server_id": 1, "db": "shop", "table": "orders", "ts_ms": 1},
    }


def test_tail_prints_one_line_per_event_with_filters(config) -> None:
    s = config.settings
    topic = s.topics.row_changes("shop", "orders")
    _produce(
        s,
        topic,
        [
            (b'{"id":1}', _change(1, True)),
            (b'{"id":2}', _change(2, False, "u")),
            (b'{"id":3}', _change(3, True, "u")),
            (b"x", {"not": "a change"}),
        ],
    )
    _produce(
        s,
        s.topics.results,
        [
            (
                b"inv-1",
                {
                    "invocation_id": "inv-1",
                    "plugin": "echo",
                    "status": "failed",
                    "duration_ms": 12.4,
                    "error": {"type": "E", "message": "it broke"},
                },
            )
        ],
    )
    runner = CliRunner()

    out = runner.invoke(cli, ["-c", str(config.path), "tail", "shop.orders", "--from-beginning", "-n", "2"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert len(lines) == 2
    assert (
        "0@0" in lines[0] and '{"id":1}' in lines[0] and "INSERT shop.orders" in lines[0] and '"flag":true' in lines[0]
    )
    assert "0@1" in lines[1] and "UPDATE shop.orders" in lines[1]

    out = runner.invoke(
        cli,
        [
            "-c",
            str(config.path),
            "tail",
            "shop.orders",
            "--from-beginning",
            "-n",
            "2",
            "--filter",
            "after.flag=true",
            "--json",
        ],
    )
    events = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert [e["value"]["after"]["id"] for e in events] == [1, 3] and {e["kind"] for e in events} == {"row_change"}
    assert [e["offset"] for e in events] == [0, 2] and events[0]["key"] == '{"id":1}'

    out = runner.invoke(
        cli, ["-c", str(config.path), "tail", "results", "--from-beginning", "-n", "1", "--status", "failed"]
    )
    assert out.exit_code == 0, out.output
    assert "result echo failed 12ms  it broke  id=inv-1" in out.stdout

    out = runner.invoke(cli, ["-c", str(config.path), "tail", "nope", "-n", "1"])
    assert out.exit_code == 2 and "no topic 'nope'" in out.output


def test_tail_from_now_shows_only_new_events(config) -> None:
    s = config.settings
    topic = s.topics.row_changes("shop", "orders")
    _produce(s, topic, [(b'{"id":1}', _change(1, True))])
    lines: list[str] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=tail, args=(s, topic, EventFilter.build(), lines.append), kwargs={"limit": 1, "stop": stop}
    )
    thread.start()
    try:
        # keep producing until the live tail (started at the end) has picked one up
        def produced_and_seen() -> bool:
            _produce(s, topic, [(b'{"id":9}', _change(9, False))])
            return bool(lines)

        wait_for(produced_and_seen, 30, interval=0.5, what="tail to show a new event")
    finally:
        stop.set()
        thread.join(10)
    assert len(lines) == 1 and '{"id":9}' in lines[0] and '"id":1,' not in lines[0]
