"""Replays started over HTTP: each runs in a thread of the API server, its progress in Redis.

The replay itself is `cdcflow replay`'s (streams/replay.py: exactly once per replay id, resumable);
this module only starts it, records its counts after every committed batch under
`<prefix>:api:replay:<id>` (so any API server, and the dashboard, can show it), and stops it when
asked: the stop is seen between batches, after a commit, so nothing is left half-sent, and the
same request started again continues where it stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from typing import Any, Literal, cast

import orjson
import redis
from pydantic import BaseModel

from schemas.config import Config
from streams.replay import ReplayCounts, ReplayPlan, execute_replay

log = logging.getLogger(__name__)
KEPT_SECONDS = 7 * 24 * 3600
State = Literal["running", "finished", "failed", "stopped"]


class ReplayProgress(BaseModel):
    replay_id: str
    state: State
    topic: str
    target: str
    dry_run: bool
    total: int
    scanned: int = 0
    selected: int = 0
    sent: int = 0
    already_done: int = 0
    skipped: dict[str, int] = {}
    started_at: float
    updated_at: float
    error: str | None = None
    notes: list[str] = []


class _Stopped(Exception):
    pass


class Replays:
    def __init__(self, config: Config, client: redis.Redis):
        self.config = config
        self.client = client
        self.prefix = f"{config.settings.redis.key_prefix}:api:replay"
        self.index = f"{config.settings.redis.key_prefix}:api:replays"  # zset: id by start time
        self._stops: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def key(self, replay_id: str) -> str:
        return f"{self.prefix}:{replay_id}"

    def get(self, replay_id: str) -> ReplayProgress | None:
        raw = cast(bytes | None, self.client.get(self.key(replay_id)))
        return None if raw is None else ReplayProgress.model_validate_json(raw)

    def running(self, replay_id: str) -> bool:
        with self._lock:
            return replay_id in self._stops

    def start(self, plan: ReplayPlan) -> ReplayProgress:
        now = time.time()
        progress = ReplayProgress(
            replay_id=plan.replay_id,
            state="running",
            topic=plan.spec.topic,
            target=plan.spec.target,
            dry_run=plan.spec.dry_run,
            total=plan.total,
            started_at=now,
            updated_at=now,
            notes=plan.notes,
        )
        stop = threading.Event()
        with self._lock:
            self._stops[plan.replay_id] = stop
        self._save(progress)
        threading.Thread(target=self._run, args=(plan, progress, stop), name=f"replay-{plan.replay_id}").start()
        return progress

    def stop(self, replay_id: str) -> bool:
        with self._lock:
            stop = self._stops.get(replay_id)
        if stop is not None:
            stop.set()
        return stop is not None

    def _run(self, plan: ReplayPlan, progress: ReplayProgress, stop: threading.Event) -> None:
        def on_batch(counts: ReplayCounts) -> None:
            self._update(progress, counts, "running")
            if stop.is_set():
                raise _Stopped

        try:
            counts = execute_replay(self.config.settings, plan, on_batch)
            self._update(progress, counts, "finished")
        except _Stopped:
            progress.state = "stopped"
            self._save(progress)
        except Exception as e:  # recorded for whoever asks; the API process goes on
            log.warning("replay %s failed: %s", plan.replay_id, e)
            progress.state, progress.error = "failed", f"{type(e).__name__}: {e}"
            self._save(progress)
        finally:
            with self._lock:
                self._stops.pop(plan.replay_id, None)

    def _update(self, progress: ReplayProgress, counts: ReplayCounts, state: State) -> None:
        figures: dict[str, Any] = asdict(counts)
        for name in ("scanned", "selected", "sent", "already_done"):
            setattr(progress, name, figures[name])
        progress.skipped = dict(counts.skipped)
        progress.state = state
        self._save(progress)

    def _save(self, progress: ReplayProgress) -> None:
        progress.updated_at = time.time()
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.key(progress.replay_id), orjson.dumps(progress.model_dump()), ex=KEPT_SECONDS)
        pipe.zadd(self.index, {progress.replay_id: progress.started_at})
        pipe.zremrangebyscore(self.index, "-inf", progress.updated_at - KEPT_SECONDS)
        pipe.execute()

    def recent(self, limit: int) -> list[ReplayProgress]:
        """Replays started over the API (by any server), newest first."""
        ids = cast(list[bytes], self.client.zrevrange(self.index, 0, limit - 1))
        raws = cast(list[bytes | None], self.client.mget([self.key(i.decode()) for i in ids]) if ids else [])
        return [ReplayProgress.model_validate_json(raw) for raw in raws if raw is not None]
