"""The binlog reader's /metrics, probes, heartbeat and lag alert (hooked into cdc/reader.py).

Figures are read from the reader's own counters at scrape time (ReaderStats, the status meter, a
per-table/op row count the reader keeps per row event): nothing is added per row on its hot path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cdc.checkpoint import Position
from cdc.status import StatusPublisher
from schemas.runtime.alerts import Alerter
from schemas.runtime.observability import ComponentObservability
from schemas.settings import Settings


class ReaderFigures(Protocol):
    """What is read of the reader's counters (cdc.reader.ReaderStats)."""

    @property
    def rows_acked(self) -> int: ...
    @property
    def rows_produced(self) -> int: ...
    @property
    def transactions(self) -> int: ...
    @property
    def position(self) -> Position | None: ...
    @property
    def checkpoint(self) -> Position | None: ...
    @property
    def last_error(self) -> str | None: ...
    def lag_ms(self, now_ms: int) -> int | None: ...


class Reader(Protocol):
    """What is read of the reader (cdc.reader.BinlogReader): its settings, counters and state, at scrape time."""

    @property
    def settings(self) -> Settings: ...
    @property
    def stats(self) -> ReaderFigures: ...
    @property
    def state(self) -> str: ...
    @property
    def status(self) -> StatusPublisher | None: ...
    @property
    def rows_by_table_op(self) -> dict[tuple[str, str, str], int]: ...


class ReaderCollector(Collector):
    def __init__(self, reader: Reader):
        self.reader = reader

    def collect(self) -> Iterator[Metric]:
        reader = self.reader
        stats = reader.stats
        yield CounterMetricFamily("cdcflow_reader_rows_acked", "row changes Kafka acknowledged", value=stats.rows_acked)
        yield CounterMetricFamily(
            "cdcflow_reader_rows_produced", "row changes handed to the producer", value=stats.rows_produced
        )
        by_table = CounterMetricFamily(
            "cdcflow_reader_rows", "row changes produced, by table and operation", labels=["db", "table", "op"]
        )
        for (db, table, op), n in reader.rows_by_table_op.copy().items():
            by_table.add_metric([db, table, op], n)
        yield by_table
        yield CounterMetricFamily(
            "cdcflow_reader_transactions", "transactions (and DDL) read", value=stats.transactions
        )
        lag = stats.lag_ms(int(time.time() * 1000))
        if lag is not None:
            yield GaugeMetricFamily("cdcflow_reader_lag_ms", "milliseconds behind the source", value=lag)
        meter = reader.status.meter if reader.status is not None else None
        yield GaugeMetricFamily(
            "cdcflow_reader_rows_per_second",
            "rows acknowledged per second (last second)",
            value=meter.rate if meter else 0.0,
        )
        checkpoint = GaugeMetricFamily(
            "cdcflow_reader_checkpoint_position", "binlog position of the last durable checkpoint", labels=["file"]
        )
        at = stats.checkpoint
        if at is not None and at.file is not None and at.pos is not None:
            checkpoint.add_metric([at.file], at.pos)
        yield checkpoint
        state = GaugeMetricFamily("cdcflow_reader_state", "1 for the reader's current state", labels=["state"])
        state.add_metric([reader.state.split(":")[0]], 1)
        yield state


class ReaderOps:
    def __init__(self, reader: Reader):
        self.reader = reader
        settings = reader.settings
        registry = CollectorRegistry()
        registry.register(ReaderCollector(reader))
        self.alerter = Alerter(settings.alerts, "reader")
        self.observability = ComponentObservability(
            "reader",
            settings,
            settings.observability.reader_port,
            registry,
            ready=self._ready,
            details=self._details,
            on_heartbeat=self._check_lag,
        )

    def start(self) -> ReaderOps:
        self.alerter.start()
        self.observability.start()
        return self

    def stop(self) -> None:
        self.observability.stop()
        self.alerter.close()

    def _ready(self) -> tuple[bool, str | None]:
        state = self.reader.state
        if state == "running":
            return True, None
        return False, f"reader {state}" + (f": {self.reader.stats.last_error}" if self.reader.stats.last_error else "")

    def _details(self) -> dict[str, Any]:
        stats = self.reader.stats
        return {
            "name": self.reader.settings.cdc.name,
            "state": self.reader.state,
            "position": f"{stats.position.file}:{stats.position.pos}" if stats.position else None,
            "lag_ms": stats.lag_ms(int(time.time() * 1000)),
            "rows_acked": stats.rows_acked,
            "last_error": stats.last_error,
        }

    def _check_lag(self) -> None:
        threshold = self.reader.settings.alerts.reader_lag_ms
        if threshold is None:
            return
        lag = self.reader.stats.lag_ms(int(time.time() * 1000))
        if lag is not None and lag > threshold:
            name = self.reader.settings.cdc.name
            self.alerter.alert(
                "reader_lag",
                name,
                f"reader {name} is {lag} ms behind the source (threshold {threshold} ms)",
                lag_ms=lag,
                threshold_ms=threshold,
            )
