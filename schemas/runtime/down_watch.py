"""Alerts for components that went down, raised by whichever component is still alive.

A component cannot report its own death, so every component's heartbeat thread also looks at the
others' records (one SMEMBERS + MGET every few seconds): a record that is not `stopped` and has
not been rewritten for `observability.stale_after_seconds` is down. Several live components see the
same death; a Redis `SET NX` on (instance, its last heartbeat) lets exactly one of them alert, once
per outage (an instance that comes back and dies again alerts again). A clean stop writes `stopped`
and is not an outage. With every component dead, nothing can alert: `cdcflow health` in a
monitoring system's cron covers that case.
"""

from __future__ import annotations

import logging
import time

import redis

from schemas.runtime.alerts import Alerter
from schemas.runtime.components import ComponentRecord, now_ms, read_records
from schemas.settings import Settings

log = logging.getLogger("cdcflow.alerts")
CLAIM_TTL_SECONDS = 7 * 24 * 3600


class DownWatch:
    def __init__(self, settings: Settings, alerter: Alerter, own_instance: str):
        self.settings = settings
        self.alerter = alerter
        self.own_instance = own_instance
        self.every = max(1.0, settings.observability.stale_after_seconds / 2)
        self._next = 0.0

    def check(self, client: redis.Redis) -> list[ComponentRecord]:
        """Alert on each newly-down component this instance claims first; return those."""
        if time.monotonic() < self._next:
            return []
        self._next = time.monotonic() + self.every
        prefix, stale = self.settings.redis.key_prefix, self.settings.observability.stale_after_seconds
        at = now_ms()
        down = [
            r
            for r in read_records(client, prefix)
            if r.instance != self.own_instance and r.liveness(at, stale) == "down"
        ]
        claimed = [r for r in down if client.set(self._claim_key(r), b"1", nx=True, ex=CLAIM_TTL_SECONDS)]
        for r in claimed:
            self.alerter.alert(
                "component_down",
                f"{r.kind} {r.instance}",
                f"{r.kind} on {r.host} (pid {r.pid}) has sent no heartbeat for {r.age_seconds(at):.0f} s",
                component=r.kind,
                host=r.host,
                pid=r.pid,
                last_heartbeat_ms=r.updated_ms,
            )
        return claimed

    def _claim_key(self, record: ComponentRecord) -> str:
        return f"{self.settings.redis.key_prefix}:alerts:down:{record.kind}:{record.instance}:{record.updated_ms}"
