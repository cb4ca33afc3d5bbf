"""Two workers and two rebalances in the middle of a stream (a second worker joins, the first
leaves): every row change's invocation is on the plugin topic once, and the schedule, fired by
whichever worker leads, fires every slot once. (faust-streaming 0.15.3 alone loses a fetch batch
here now and then; the row changes now go through a librdkafka consumer with transactions.)"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

from schemas.invocation import invocation_id_for
from tests.support import wait_for
from tests.support.streams import RowStream, assert_each_once, row_stream, two_workers

RULES = {
    "monitored_tables": {"shop.orders": {"name": "r", "triggers": ["echo"], "params": {"data": "{after.n}"}}},
    "schedules": {
        "beat": {
            "plugin": "echo",
            "interval_seconds": 1,
            "coalesce": False,
            "misfire_grace_time": 3600,
            "max_instances": 1000,
        }
    },
}
CHANGES = 150  # rounds of 20 rows: 3000 changes over ~10 s


def test_two_workers_and_rebalances_lose_and_double_nothing(stack: None, tmp_path: Path) -> None:
    with row_stream(tmp_path, "reb", RULES) as stream:
        rebalance_twice_mid_stream(stream, tmp_path)


def rebalance_twice_mid_stream(stream: RowStream, tmp_path: Path) -> None:
    first, second = two_workers(stream.config, tmp_path)
    collector = stream.collector

    def cdc() -> list[dict]:
        return [m for m in collector.poll() if m["trigger"]["kind"] == "cdc"]

    first.start()
    try:
        wait_for(lambda: any(m["trigger"]["kind"] == "schedule" for m in collector.poll()), 120, what="the first beat")
        feeder = threading.Thread(target=stream.feed, args=(0.06, CHANGES))
        feeder.start()
        wait_for(lambda: len(cdc()) >= 300, 60, interval=0.02, what="some invocations")
        second.start()  # rebalance: partitions (and maybe the leader role) move to the new worker
        wait_for(
            lambda: (
                "row change" in second.log_path.read_text(errors="replace")
                or "schedule beat fired" in second.log_path.read_text(errors="replace")
            ),
            90,
            what="the second worker to take a share",
        )
        assert first.stop() == 0  # rebalance: everything moves to the second worker
        feeder.join()
        assert_each_once(cdc, stream.expected, "of a row change")

        beats = [m for m in collector.poll() if m["trigger"]["kind"] == "schedule"]
        fire_times = Counter(m["trigger"]["fire_time"] for m in beats)
        assert all(c == 1 for c in fire_times.values()), "a slot fired twice"
        times = sorted(datetime.fromisoformat(t) for t in fire_times)
        assert times[-1] - times[0] > timedelta(seconds=8)
        assert all(b - a == timedelta(seconds=1) for a, b in pairwise(times)), "a slot was skipped"
        for m in beats:
            assert m["invocation_id"] == invocation_id_for("schedule", "beat", m["trigger"]["fire_time"])
    finally:
        for worker in (first, second):
            worker.stop()
        for name in ("w1.log", "w2.log"):
            print(name, (tmp_path / name).read_text(errors="replace")[-3000:])
