"""The Overview's live charts and consumer lag: one thread per API server samples Redis every
SAMPLE_SECONDS (and Kafka's consumer lag every LAG_SECONDS) into ring buffers of the last 15 minutes,
so a page or a chart poll only reads memory.

What each figure is computed from:
  rows/s               the readers' `rows_acked` counters (component heartbeat details: rows Kafka
                       acknowledged), the increase summed over reader instances, per second
  invocations created  the streams workers' `row_changes.invocations` counters (invocations the rules
                       made from row changes), the same way
  invocations finished run history: members of `<prefix>:runs` (scored by finish time) in the last
                       interval, per second; every trigger kind counts (cdc, schedule, manual, replay)
  failures/min         run history: `<prefix>:runs:status:failed` + `:timeout` scored within the last
                       60 s (failed attempts, also those retried later)
  duration p50/p99     the `duration_ms` of the runs finished in the last 60 s (the newest 1000 at most)
A counter that went down (a restarted component) counts from zero again. At start, the run-history
series are filled back over the 15 minutes from the indexes; the heartbeat counters start empty.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import orjson
import redis

from console.status_report import consumer_lag
from schemas.config import Config
from schemas.runtime.components import KINDS, ComponentRecord, index_key, read_records

log = logging.getLogger(__name__)
SAMPLE_SECONDS = 5.0
LAG_SECONDS = 10.0
WINDOW_SECONDS = 15 * 60
DURATION_SAMPLE = 1000


@dataclass(frozen=True)
class Sample:
    at: float
    rows_per_s: float | None
    created_per_s: float | None
    finished_per_s: float
    failures_per_min: float
    p50_ms: float | None
    p99_ms: float | None


@dataclass
class LagState:
    """Consumer lag as last read, and per (group, topic) the readings of the last 15 minutes."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    read_at: float | None = None
    problem: str | None = None
    history: dict[tuple[str, str], deque[tuple[float, int]]] = field(default_factory=dict)

    def growing(self, group: str, topic: str, over_seconds: float = 60.0) -> tuple[int, int] | None:
        """(lag a minute ago, lag now) if it never went down over the last minute and is higher now."""
        readings = [(t, lag) for t, lag in self.history.get((group, topic), ()) if t >= time.time() - over_seconds - 5]
        if len(readings) < 3 or readings[-1][0] - readings[0][0] < over_seconds * 0.75:
            return None
        lags = [lag for _, lag in readings]
        rising = all(b >= a for a, b in zip(lags, lags[1:], strict=False)) and lags[-1] > lags[0]
        return (lags[0], lags[-1]) if rising else None


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Sampler:
    def __init__(self, config: Config, client: redis.Redis):
        self.config = config
        self.client = client
        self.prefix = config.settings.redis.key_prefix
        self.samples: deque[Sample] = deque(maxlen=int(WINDOW_SECONDS / SAMPLE_SECONDS))
        self.lag = LagState()
        self._counters: dict[str, dict[str, int]] = {"rows": {}, "created": {}}
        # the heartbeat records' keys as of the last sample: finding them takes a SCAN of the whole
        # keyspace (run history included), reading them one MGET, so pages read them by these keys
        self.component_keys: list[bytes] | None = None
        self._last_at: float | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dashboard-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=3)  # a daemon: a Kafka read under way ends with the process

    def _run(self) -> None:
        self._guarded("backfill", self.backfill)
        next_lag = 0.0
        while not self._stop.is_set():
            self._guarded("sample", self.sample)
            if time.monotonic() >= next_lag:
                next_lag = time.monotonic() + LAG_SECONDS
                self.read_lag()
            self._stop.wait(SAMPLE_SECONDS)

    def _guarded(self, what: str, step: Any) -> None:
        try:
            step()
        except Exception as e:  # Redis down: the charts show a gap; the server goes on
            log.warning("dashboard %s: %s: %s", what, type(e).__name__, e)

    # -- reads -------------------------------------------------------------------------------
    def series(self) -> dict[str, list[Any]]:
        """Column-wise, for the charts: t (epoch s) and one list per figure."""
        with self._lock:
            rows = [asdict(s) for s in self.samples]
        names = ("at", "rows_per_s", "created_per_s", "finished_per_s", "failures_per_min", "p50_ms", "p99_ms")
        return {name: [r[name] for r in rows] for name in names}

    def components(self) -> list[ComponentRecord]:
        """The heartbeat records, read fresh by the keys of the last sample (a component that started
        since shows within SAMPLE_SECONDS); before the first sample, found by a scan."""
        keys = self.component_keys
        if keys is None:
            return read_records(self.client, self.prefix)
        raws = cast(list[bytes | None], self.client.mget(keys) if keys else [])
        records = []
        for raw in raws:
            if raw is None:  # expired since the sample: gone for over 10 minutes
                continue
            try:
                records.append(ComponentRecord.model_validate_json(raw))
            except ValueError:
                continue  # a record of another version: not ours to judge
        return sorted(records, key=lambda r: (KINDS.index(r.kind), r.instance))

    def latest(self) -> Sample | None:
        with self._lock:
            return self.samples[-1] if self.samples else None

    # -- sampling ----------------------------------------------------------------------------
    def sample(self, now: float | None = None) -> Sample:
        now = time.time() if now is None else now
        interval = None if self._last_at is None else max(0.001, now - self._last_at)
        rows, created = self._counter_rates(interval)
        finished, failures = self._run_counts([(now - (interval or SAMPLE_SECONDS), now)])[0]
        p50, p99 = self._durations(now)
        sample = Sample(now, rows, created, finished / (interval or SAMPLE_SECONDS), failures, p50, p99)
        with self._lock:
            self.samples.append(sample)
            self._last_at = now
        return sample

    def _counter_rates(self, interval: float | None) -> tuple[float | None, float | None]:
        totals: dict[str, dict[str, int]] = {"rows": {}, "created": {}}
        self.component_keys = sorted(cast(set[bytes], self.client.smembers(index_key(self.prefix))))
        for record in self.components():
            if record.kind == "reader" and "rows_acked" in record.details:
                totals["rows"][record.instance] = int(record.details.get("rows_acked") or 0)
            elif record.kind == "streams" and record.details.get("row_changes"):
                totals["created"][record.instance] = int(record.details["row_changes"].get("invocations") or 0)
        rates: list[float | None] = []
        for name in ("rows", "created"):
            before, now = self._counters[name], totals[name]
            increase = sum(v - before[k] if v >= before[k] else v for k, v in now.items() if k in before)
            rates.append(increase / interval if interval is not None and now and before else None)
            self._counters[name] = now
        return rates[0], rates[1]

    def _run_counts(self, windows: list[tuple[float, float]]) -> list[tuple[int, float]]:
        """Per (start, end]: runs finished in it, and failed/timed-out attempts in the minute up to `end`."""
        pipe = self.client.pipeline(transaction=False)
        for start, end in windows:
            pipe.zcount(f"{self.prefix}:runs", f"({start!r}", repr(end))
            for status in ("failed", "timeout"):
                pipe.zcount(f"{self.prefix}:runs:status:{status}", f"({end - 60!r}", repr(end))
        counts = cast(list[int], pipe.execute())
        return [(counts[i], float(counts[i + 1] + counts[i + 2])) for i in range(0, len(counts), 3)]

    def _durations(self, now: float) -> tuple[float | None, float | None]:
        index = f"{self.prefix}:runs"
        ids = cast(list[bytes], self.client.zrevrangebyscore(index, repr(now), f"({now - 60!r}", 0, DURATION_SAMPLE))
        keys = [f"{self.prefix}:run:{i.decode()}" for i in ids]
        raws = cast(list[bytes | None], self.client.mget(keys) if keys else [])
        values = [float(orjson.loads(raw).get("duration_ms") or 0.0) for raw in raws if raw is not None]
        return percentile(values, 0.5), percentile(values, 0.99)

    def backfill(self, now: float | None = None) -> None:
        """The run-history figures of the last 15 minutes, from the indexes (one pipelined round trip)."""
        now = time.time() if now is None else now
        ends = [now - i * SAMPLE_SECONDS for i in range(int(WINDOW_SECONDS / SAMPLE_SECONDS) - 1, 0, -1)]
        counts = self._run_counts([(end - SAMPLE_SECONDS, end) for end in ends])
        with self._lock:
            for end, (finished, failures) in zip(ends, counts, strict=True):
                self.samples.append(Sample(end, None, None, finished / SAMPLE_SECONDS, failures, None, None))

    def read_lag(self) -> None:
        settings = self.config.settings
        groups = [settings.streams.app_id, settings.streams.rows_group_id, settings.runners.group_id]
        try:
            rows = consumer_lag(settings, groups)
        except Exception as e:  # Kafka down: said on the page, the older figures are kept
            self.lag.problem = f"consumer lag could not be read: {type(e).__name__}: {e}"
            return
        now = time.time()
        with self._lock:
            self.lag.rows, self.lag.read_at, self.lag.problem = rows, now, None
            for row in rows:
                history = self.lag.history.setdefault((row["group"], row["topic"]), deque(maxlen=100))
                history.append((now, int(row["lag"])))
