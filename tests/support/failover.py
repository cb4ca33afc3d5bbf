"""Two runner processes in one group, a steady invocation stream, one runner SIGKILLed: who ran what, when.

Shared by tests/integration/test_plugins_failover.py (the dead runner's partitions are taken over,
nothing lost or run twice) and bench/runner_failover.py (how long the takeover takes). The runners
are started as users start them (`cdcflow runners run`), each in its own session so that a kill
reaches the runner only: its warm workers notice their parent is gone and exit by themselves.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupState, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from schemas.config import Config
from schemas.settings import Settings
from tests.support import REPO_ROOT, isolated_config_data, wait_for, write_config
from tests.support.plugins import new_invocation

PLUGIN = "steady"

# Each call logs a start and a done line: invocation id, worker pid, and the runner's pid (its parent).
MAIN = """import os, time


def run(sleep_ms=20, context=None):
    line = "{} %s %d %d\\n" % (context["invocation_id"], os.getpid(), os.getppid())
    with open("side-effects.log", "a") as fh:
        fh.write(line.format("start"))
    time.sleep(sleep_ms / 1000)
    with open("side-effects.log", "a") as fh:
        fh.write(line.format("done"))
    return {"pid": os.getpid()}
"""


def make_config(tmp_path: Path, partitions: int = 4, concurrency: int = 2) -> tuple[Config, Path]:
    """An isolated config whose only plugin is `steady`, and that plugin's folder."""
    folder = tmp_path / "plugins" / PLUGIN
    folder.mkdir(parents=True)
    manifest = {
        "name": PLUGIN,
        "version": "1.0.0",
        "entry_point": "main.run",
        "timeout_seconds": 30,
        "concurrency": concurrency,
        "parameters": {"sleep_ms": {"type": "number", "default": 20}},
    }
    (folder / "plugin.json").write_text(json.dumps(manifest))
    (folder / "main.py").write_text(MAIN)
    data = isolated_config_data("failover", plugin_dirs=[folder.parent])
    data["kafka"]["partitions"] = partitions
    return write_config(tmp_path, data), folder


def topics(settings: Settings) -> list[str]:
    return [
        settings.topics.invoke(PLUGIN),
        settings.topics.invoke(PLUGIN, "high"),
        settings.topics.results,
        settings.topics.dlq,
    ]


def start_runner(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "console.cli", "-c", str(config_path), "runners", "run", "--no-watch"],
            cwd=REPO_ROOT,
            start_new_session=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CDCFLOW_LOG_LEVEL": "INFO"},
        )


def kill(runner: subprocess.Popen[bytes]) -> float:
    """SIGKILL the runner (not its workers, which have their own sessions); the wall time of the kill."""
    killed_at = time.time()
    os.killpg(runner.pid, signal.SIGKILL)
    runner.wait(10)
    return killed_at


_COORDINATOR_NOT_READY = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
}


def owners(settings: Settings) -> dict[int, set[int]] | None:
    """The partitions of the plugin's (normal) topic each runner owns, by runner pid; None while the
    group is rebalancing. Asked of the broker, without joining the group."""
    group = settings.runners.group_id
    admin = AdminClient(settings.kafka_config())
    try:
        description = admin.describe_consumer_groups([group], request_timeout=10)[group].result()
    except KafkaException as e:  # the group's coordinator not (yet) found or loading: ask again
        if e.args[0].code() in _COORDINATOR_NOT_READY:
            return None
        raise
    if description.state != ConsumerGroupState.STABLE:
        return None
    topic = settings.topics.invoke(PLUGIN)
    out: dict[int, set[int]] = {}
    for member in description.members:  # client.id is cdcflow-runner-<host>:<pid> (plugins/runner.py)
        pid = int(member.client_id.rsplit(":", 1)[1])
        out[pid] = {tp.partition for tp in member.assignment.topic_partitions if tp.topic == topic}
    return out


def wait_owned_by(settings: Settings, pids: set[int], partitions: int, timeout: float = 120.0) -> dict[int, set[int]]:
    """Wait until exactly these runners are the group's members, every partition owned."""

    def settled() -> dict[int, set[int]] | None:
        now = owners(settings)
        if now is None or set(now) != pids or set().union(*now.values()) != set(range(partitions)):
            return None
        return now

    found: dict[int, set[int]] = wait_for(settled, timeout, 0.2, f"runners {sorted(pids)} to own every partition")
    return found


class SteadyStream(threading.Thread):
    """Invocations of `steady` at `rate` a second, round robin over the partitions, until stop()."""

    def __init__(self, settings: Settings, partitions: int, rate: float = 50.0, sleep_ms: int = 20):
        super().__init__(daemon=True)
        self.settings, self.partitions, self.rate, self.sleep_ms = settings, partitions, rate, sleep_ms
        self.sent: dict[str, int] = {}  # invocation id -> partition, once Kafka acknowledged it
        self._halt = threading.Event()

    def run(self) -> None:
        producer = Producer(self.settings.kafka_config(**{"acks": "all", "enable.idempotence": True}))
        topic = self.settings.topics.invoke(PLUGIN)
        due = time.monotonic()
        n = 0
        while not self._halt.is_set():
            inv = new_invocation(PLUGIN, {"sleep_ms": self.sleep_ms})
            part = n % self.partitions
            producer.produce(
                topic,
                key=inv.invocation_id.encode(),
                value=inv.model_dump_json().encode(),
                partition=part,
                on_delivery=self._delivered,
            )
            producer.poll(0)
            n += 1
            due += 1 / self.rate
            time.sleep(max(0.0, due - time.monotonic()))
        assert producer.flush(30) == 0

    def _delivered(self, err: object, msg: Message) -> None:
        if err is None:
            self.sent[(msg.key() or b"").decode()] = msg.partition() or 0

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(60)


class ResultWatch(threading.Thread):
    """The results topic from its start: each success's runner and finish time, by invocation id."""

    def __init__(self, settings: Settings):
        super().__init__(daemon=True)
        self.settings = settings
        self.successes: dict[str, list[tuple[str, float]]] = defaultdict(list)
        self.other: list[dict[str, Any]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        consumer = Consumer(
            self.settings.kafka_config(
                **{"group.id": f"failover-watch-{os.getpid()}-{id(self)}", "auto.offset.reset": "earliest"}
            )
        )
        consumer.subscribe([self.settings.topics.results])
        try:
            while not self._halt.is_set():
                for msg in consumer.consume(1000, timeout=0.1):
                    if msg.error() is None:
                        self._count(json.loads(msg.value() or b"{}"))
        finally:
            consumer.close()

    def _count(self, result: dict[str, Any]) -> None:
        if result.get("status") != "success":
            self.other.append(result)
            return
        finished = datetime.fromisoformat(result["finished_at"]).timestamp()
        self.successes[result["invocation_id"]].append((result.get("runner") or "?", finished))

    def stop(self) -> None:
        self._halt.set()
        if self.is_alive():
            self.join(30)


@dataclass(frozen=True)
class Takeover:
    seconds: (
        float  # from the kill to the first result, by another runner, of an invocation of the dead runner's partitions
    )
    invocation_id: str
    runner: str


def first_takeover(
    stream: SteadyStream, watch: ResultWatch, dead: set[int], dead_runner: str, killed_at: float
) -> Takeover | None:
    best: Takeover | None = None
    for iid, part in list(stream.sent.items()):
        if part not in dead:
            continue
        for runner, finished in list(watch.successes.get(iid, ())):
            late = finished >= killed_at  # not one the partition's earlier owners ran before the kill
            if runner != dead_runner and late and (best is None or finished - killed_at < best.seconds):
                best = Takeover(finished - killed_at, iid, runner)
    return best


def runner_id(pid: int) -> str:
    """The id a runner process puts on its results (plugins/execution.py RUNNER_ID)."""
    return f"{socket.gethostname()}:{pid}"


def side_effects(folder: Path) -> list[tuple[str, str, int, int]]:
    """(start|done, invocation id, worker pid, runner pid) per line of the plugin's log."""
    log = folder / "side-effects.log"
    if not log.exists():
        return []
    return [
        (w[0], w[1], int(w[2]), int(w[3]))
        for w in (line.split() for line in log.read_text().splitlines())
        if len(w) == 4
    ]


def kill_one(
    settings: Settings,
    runners: list[subprocess.Popen[bytes]],
    n: int,
    stream: SteadyStream,
    watch: ResultWatch,
    timeout: float = 120.0,
) -> tuple[subprocess.Popen[bytes], set[int], Takeover]:
    """Round n: once the group is stable, SIGKILL a runner that owns some of the stream's partitions
    (`runners` is in start order: the older one on even rounds, the newer on odd) and wait for
    another runner's first result on them. The dead runner (removed from `runners`), its
    partitions, and the takeover."""
    owned = wait_owned_by(settings, {r.pid for r in runners}, settings.kafka.partitions)
    time.sleep(2.0)  # every runner busy with its own partitions
    order = runners if n % 2 == 0 else runners[::-1]
    victim = next(r for r in order if owned[r.pid])
    dead = owned[victim.pid]
    killed_at = kill(victim)
    takeover: Takeover = wait_for(
        lambda: first_takeover(stream, watch, dead, runner_id(victim.pid), killed_at),
        timeout,
        0.05,
        f"another runner to serve partitions {sorted(dead)} of the runner killed in round {n + 1}",
    )
    runners.remove(victim)
    return victim, dead, takeover
