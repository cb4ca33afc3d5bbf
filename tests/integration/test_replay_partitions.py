"""Per-partition offset ranges on a real topic: `--from-offset 0:10 --to-offset 0:20` reads partition 0's
offsets 10..19 and nothing of the other partitions; reversed ranges are refused before anything is read."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner
from confluent_kafka import Producer

from console.cli import cli
from schemas.config import Config
from schemas.settings import Settings
from tests.support import consume_all, topics_config

PARTITIONS = 3
PER_PARTITION = 30


def topics(s: Settings) -> list[str]:
    return [s.topics.results]


@pytest.fixture
def config(stack: None, tmp_path: Path) -> Iterator[Config]:
    copies = lambda s: [f"{s.topics.results}.copy"]  # noqa: E731
    with topics_config(tmp_path, "rpart", {}, topics, partitions=PARTITIONS, leftovers=copies) as cfg:
        _fill(cfg)
        yield cfg


def _fill(config: Config) -> None:
    """PER_PARTITION messages on each partition, each saying where it was written."""
    producer = Producer(config.settings.kafka_config())
    for p in range(PARTITIONS):
        for i in range(PER_PARTITION):
            producer.produce(config.settings.topics.results, orjson.dumps({"p": p, "i": i}), partition=p)
    assert producer.flush(30) == 0


def cdcflow(config: Config, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["-c", str(config.path), *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


def copied(config: Config, topic: str) -> list[tuple[int, int]]:
    return sorted((v["p"], v["i"]) for v in (orjson.loads(m.value()) for m in consume_all(config, [topic], 1.5)))


def test_a_named_partition_is_the_only_one_replayed(config: Config) -> None:
    target = f"{config.settings.topics.results}.copy"
    code, out = cdcflow(
        config, "replay", "results", "--from-offset", "0:10", "--to-offset", "0:20", "--to-topic", target
    )
    assert code == 0, out
    assert "partition 0: offsets 10..19 (10 message(s))" in out
    assert "partition 1" not in out and "partition 2" not in out
    assert copied(config, target) == [(0, i) for i in range(10, 20)]

    # two partitions named, a bare start for each: partition 1 is not touched
    code, out = cdcflow(config, "replay", "results", "--from-offset", "25", "--to-offset", "0:27,2:26", "--print")
    assert code == 0, out
    assert "partition 0: offsets 25..26 (2 message(s))" in out and "partition 2: offsets 25..25 (1 message(s))" in out
    assert "partition 1" not in out and "scanned 3 message(s)" in out

    # a bare range still covers every partition
    code, out = cdcflow(config, "replay", "results", "--from-offset", "28", "--print")
    assert code == 0 and "scanned 6 message(s)" in out, out


def test_reversed_ranges_are_refused_before_reading(config: Config) -> None:
    code, out = cdcflow(config, "replay", "results", "--from-offset", "0:20", "--to-offset", "0:10", "--print")
    assert code == 2 and "--from-offset 20 is after --to-offset 10 (end exclusive) for partition 0" in out
    code, out = cdcflow(config, "replay", "results", "--since", "1h", "--until", "2h", "--print")
    assert code == 2 and "is after --until" in out and "Traceback" not in out
    code, out = cdcflow(config, "replay", "results", "--from-offset", "0:1,0:2", "--print")
    assert code == 2 and "partition 0 is given twice" in out
