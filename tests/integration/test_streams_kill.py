"""kill -9 of the worker in the middle of a stream of row changes, then a restart: every change's
invocation is on the plugin topic, with its deterministic id, and none twice."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from tests.support import wait_for
from tests.support.streams import Worker, assert_each_once, row_stream, two_workers

RULES = {
    "monitored_tables": {
        "shop.orders": {
            "name": "r",
            "triggers": ["echo"],
            "conditions": {"n": {"gte": 0}},
            "params": {"data": "{after.n}"},
        }
    }
}


def test_kill_9_mid_stream_loses_and_doubles_nothing(stack: None, tmp_path: Path) -> None:
    with row_stream(tmp_path, "kill", RULES) as stream:
        worker = Worker(stream.config, tmp_path / "worker.log")
        worker.start()
        try:
            feeder = threading.Thread(target=stream.feed, args=(0.02,))
            feeder.start()
            wait_for(lambda: len(stream.collector.poll()) >= 200, 120, interval=0.01, what="some invocations")
            assert worker.process is not None
            worker.process.kill()  # mid-stream: the feeder is still producing
            worker.process.wait()
            feeder.join()
            worker.start()
            assert_each_once(stream.collector.poll, stream.expected, "after the restart")
        finally:
            assert worker.stop() == 0


def test_kill_9_of_one_of_two_workers_the_other_takes_over_losing_and_doubling_nothing(
    stack: None, tmp_path: Path
) -> None:
    # No restart: the survivor gets the killed worker's partitions once its session expires, and
    # reads them from the committed offsets once the killed worker's open transaction is aborted.
    with row_stream(tmp_path, "kill2", RULES) as stream:
        first, second = two_workers(stream.config, tmp_path)
        first.start()
        second.start()
        try:
            feeder = threading.Thread(target=stream.feed, args=(0.3,))  # ~12 s: the kill lands mid-stream
            feeder.start()
            # both serve a share before the kill
            wait_for(
                lambda: all("row change" in w.log_path.read_text(errors="replace") for w in (first, second)),
                120,
                what="both workers to emit invocations",
            )
            assert first.process is not None and feeder.is_alive()
            first.process.kill()
            first.process.wait()
            killed_at = time.monotonic()
            assert feeder.is_alive(), "the stream ended before the kill"
            feeder.join()
            assert_each_once(stream.collector.poll, stream.expected, "after the kill")
            print(f"checked {time.monotonic() - killed_at:.1f} s after the kill")
        finally:
            assert second.stop() == 0
            for name in ("w1.log", "w2.log"):
                print(name, (tmp_path / name).read_text(errors="replace")[-2000:])
