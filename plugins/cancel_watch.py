"""A runner's watch on cancel requests (plugins/cancel.py): what it already holds is stopped or dropped.

Every half second, one read of the cancels log (entries since the last look, whatever the load):
each new id is remembered (the lane threads check a job against it before running it: a queued or
retry-delayed invocation is then recorded cancelled without running) and handed to `on_cancel`, which
stops the call if a worker runs it. What a runner receives after the request is stopped by the mark
in its per-batch check instead. Looks back a minute on each read, so a canceller whose clock is a
little behind the runner's is not missed (ids already seen are not handed over twice).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from plugins.cancel import Cancels

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
LOOKBACK_SECONDS = 60.0


class CancelWatcher:
    def __init__(self, cancels: Cancels, on_cancel: Callable[[str], None], stop: threading.Event):
        self.cancels = cancels
        self.on_cancel = on_cancel
        self.stop = stop
        self.ids: dict[str, float] = {}  # id -> request time; read by lane threads (a dict lookup)
        self._newest = time.time()
        self._thread = threading.Thread(target=self._loop, name="cancel-watch", daemon=True)

    def __contains__(self, invocation_id: str) -> bool:
        return invocation_id in self.ids

    def start(self) -> None:
        self._thread.start()

    def poll(self) -> list[str]:
        """Read the requests since the last look; the ids new to this runner, each handed to on_cancel."""
        new: list[str] = []
        for iid, at in self.cancels.requested_since(self._newest - LOOKBACK_SECONDS):
            self._newest = max(self._newest, at)
            if iid not in self.ids:
                self.ids[iid] = at
                new.append(iid)
        for iid in new:
            try:
                self.on_cancel(iid)
            except Exception:  # one bad stop must not end the watch
                log.exception("cannot stop cancelled invocation %s", iid)
        horizon = time.time() - self.cancels.ttl
        if self.ids and min(self.ids.values()) < horizon:
            self.ids = {i: at for i, at in self.ids.items() if at >= horizon}
        return new

    def _loop(self) -> None:
        while not self.stop.wait(POLL_SECONDS):
            try:
                self.poll()
            except redis.RedisError as e:
                log.warning("cannot read cancel requests (%s); retrying", e)
