"""The binlog reader's /metrics, probes, heartbeat and lag alert (hooked into cdc/reader.py).

Figures are read from the reader's own counters at scrape time (ReaderStats, the status meter, a
per-table/op row count the reader keeps per row event): nothing is added per row on its hot path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from schemas.runtime.alerts import Alerter
from schemas.runtime.observability import ComponentObservability

if TYPE_CHECKING:
    from cdc.reader import BinlogReader


class ReaderCollector(Collector):
    def __init__(self, reader: BinlogReader):
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
        for (db, table, op), n in getattr(reader, "rows_by_table_op", {}).copy().items():
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
        if stats.checkpoint is not None:
            checkpoint.add_metric([stats.checkpoint.file], stats.checkpoint.pos)
        yield checkpoint
        state = GaugeMetricFamily("cdcflow_reader_state", "1 for the reader's current state", labels=["state"])
        state.add_metric([reader.state.split(":")[0]], 1)
        yield state


class ReaderOps:
    def __init__(self, reader: BinlogReader):
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
