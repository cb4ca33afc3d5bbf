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

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from schemas.config import Config, load_config
from schemas.errors import ConfigError
from streams.matcher import Matcher
from streams.validation import validated_matcher

Action = Literal["unchanged", "invalid", "swap", "restart"]


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
            matcher = validated_matcher(config)
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
