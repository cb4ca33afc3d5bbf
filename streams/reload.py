"""Hot reload of the config file's rules while the worker runs.

The worker polls the file (mtime and size, then a content hash, so a `touch` or an identical
rewrite is not a reload). A new version is loaded and validated exactly as at start-up:
- invalid: the running rules stay; the reason is logged (once per content);
- only rules/conditions/params/schedule details changed: swapped in place (new matcher, new
  schedule list) without stopping anything;
- the topology changed (a table added or removed, so a topic to consume; settings; debounce
  switched on or off): the worker restarts itself. Faust fixes an agent's topic subscription when
  the app starts and has no supported way to add a topic to a running agent (and `pattern=`
  subscriptions match nothing here), so a clean stop and re-exec of the same command is the
  simplest reliable way: partitions are handed back, offsets committed, and the new process
  subscribes to the new topics. Under `cdcflow run` the supervisor sees nothing of it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from schemas.config import Config, load_config
from schemas.errors import ConfigError
from schemas.runtime.kafka_topics import ensure_topics
from streams.matcher import Matcher
from streams.schedule_timer import ScheduleTimer
from streams.table_columns import TableColumns
from streams.validation import validated_matcher

log = logging.getLogger("cdcflow.streams")

Action = Literal["unchanged", "invalid", "swap", "restart"]


@dataclass
class Live:
    """What hot reload swaps while the worker runs (read once per batch or event, so a swap is atomic
    for each)."""

    matcher: Matcher


@dataclass
class Reload:
    action: Action
    reason: str = ""
    config: Config | None = None
    matcher: Matcher | None = None


def needs_restart(old: Config, new: Config) -> str | None:
    """Why `new` cannot be swapped into a worker started with `old` (None: it can)."""
    if old.settings.model_dump() != new.settings.model_dump():
        return "settings changed"
    added = sorted(set(new.rules.tables()) - set(old.rules.tables()))
    removed = sorted(set(old.rules.tables()) - set(new.rules.tables()))
    if added or removed:
        parts = [f"+{d}.{t}" for d, t in added] + [f"-{d}.{t}" for d, t in removed]
        return f"monitored tables changed ({', '.join(parts)})"

    def debouncing(c: Config) -> bool:
        return any(r.enabled and r.debounce_ms for r in c.rules.rules)

    if debouncing(old) != debouncing(new):
        return "debounce switched " + ("on" if debouncing(new) else "off")
    if bool(old.rules.schedules) != bool(new.rules.schedules):
        return "schedules " + ("added" if new.rules.schedules else "removed")
    return None


class RulesWatcher:
    def __init__(self, config: Config):
        assert config.path is not None, "hot reload needs a config file"
        self.path = Path(config.path)
        self.current = config
        self._stat = self._fingerprint()
        self._digest = self._hash()
        self._rejected: str | None = None  # digest of the last invalid version (reported once)

    def _fingerprint(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _hash(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def check(self) -> Reload:
        stat = self._fingerprint()
        if stat == self._stat:
            return Reload("unchanged")
        self._stat = stat
        digest = self._hash()
        if digest is None or digest == self._digest or digest == self._rejected:
            return Reload("unchanged")
        try:
            config = load_config(self.path)
            columns = TableColumns(config.settings)  # as at start: placeholders against existing tables
            try:
                matcher = validated_matcher(config, columns)
            finally:
                columns.close()
        except ConfigError as e:
            self._rejected = digest
            return Reload("invalid", str(e))
        self._digest = digest
        self._rejected = None
        why = needs_restart(self.current, config)
        self.current = config
        if why:
            return Reload("restart", why, config, matcher)
        return Reload("swap", "", config, matcher)


class RulesReload:
    """The worker's watch task: once a second, check the file and apply a new version."""

    def __init__(self, config: Config, live: Live, timer: ScheduleTimer | None):
        self.watcher = RulesWatcher(config)
        self.settings = config.settings  # a swap keeps them (a change of settings restarts)
        self.live = live
        self.timer = timer
        self.restart_reason: str | None = None  # set when a rules edit needs a new process

    async def run(self) -> None:
        while self.restart_reason is None:
            await asyncio.sleep(1.0)
            try:
                # Off the event loop: loading validates against every plugin.json on disk.
                await self.apply(await asyncio.to_thread(self.watcher.check))
            except Exception:
                log.exception("rules file watch failed; retrying")

    async def apply(self, outcome: Reload) -> None:
        path = self.watcher.path
        if outcome.action == "invalid":
            log.error("rules file changed but is not valid; keeping the running rules:\n%s", outcome.reason)
        elif outcome.action == "swap":
            assert outcome.config is not None and outcome.matcher is not None
            await self._swap(outcome.config, outcome.matcher)
            rules = outcome.config.rules
            log.info("rules reloaded from %s: %d rule(s), %d schedule(s)", path, len(rules.rules), len(rules.schedules))
        elif outcome.action == "restart":
            log.warning("rules reloaded from %s: %s; restarting the worker to subscribe anew", path, outcome.reason)
            self.restart_reason = outcome.reason
            # A clean stop (partitions handed back, offsets committed); run_worker re-execs.
            os.kill(os.getpid(), signal.SIGTERM)

    async def _swap(self, config: Config, matcher: Matcher) -> None:
        topics = self.settings.topics
        plugins = sorted(config.rules.plugins())
        await asyncio.to_thread(
            ensure_topics, self.settings, [topics.invoke(p, pr) for p in plugins for pr in ("normal", "high")]
        )
        self.live.matcher = matcher
        if self.timer is not None:
            self.timer.schedules = [s for s in config.rules.schedules if s.enabled]
