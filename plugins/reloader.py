"""Hot reload inside a runner: a changed plugin folder gets new workers, the old ones drain.

The reload is a fresh process, never importlib.reload: the new code is loaded and imported by a new
warm pool (in a new venv first, when the dependencies changed, built here in the background while
the old version keeps serving). Only when that pool is up does the lane switch to it; calls already
running finish on the old pool, which is then closed (lane.PluginLane.swap). Whatever fails on the
way (invalid manifest, syntax or import error, venv build) leaves the old version serving and is
recorded as the plugin's last error (`cdcflow plugins list`).

A new plugin folder is started the same way and handed to the runner's consumer thread, which
subscribes to its topics. A removed folder is only logged: its workers already imported the code,
so they keep serving until the runner restarts.

One thread polls the folders and the reload requests (`cdcflow plugins reload NAME`); each reload
runs in its own short-lived thread so a slow venv build never delays another plugin's reload.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from plugins.execution import RUNNER_ID
from plugins.lane import PluginLane
from plugins.pool import WorkerPool
from plugins.registry import LoadedPlugin, discover, load_plugin
from plugins.state import PluginStates
from plugins.watcher import FolderWatcher
from schemas.errors import ConfigError
from schemas.settings import Settings

log = logging.getLogger("cdcflow.reload")

StartPool = Callable[[LoadedPlugin], tuple[WorkerPool | None, str | None]]
BuildLane = Callable[[LoadedPlugin, WorkerPool], PluginLane]


class HotReloader:
    def __init__(
        self,
        settings: Settings,
        states: PluginStates,
        lanes: Callable[[], list[PluginLane]],
        start_pool: StartPool,
        build_lane: BuildLane,
        stop: threading.Event,
        only: set[str] | None = None,
        interval: float = 1.0,
    ):
        self.settings = settings
        self.states = states
        self.lanes = lanes
        self.start_pool = start_pool
        self.build_lane = build_lane
        self.stop = stop
        self.only = only
        self.interval = interval
        self.new_lanes: queue.SimpleQueue[PluginLane] = queue.SimpleQueue()  # drained by the consumer thread
        self._watcher: FolderWatcher | None = None
        self._started_at = time.time()
        self._seen_requests: dict[str, float] = {}
        self._busy: set[Path] = set()
        self._again: dict[Path, bool] = {}  # changed again while being reloaded -> forced?
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._watch_loop, name="plugin-watch", daemon=True)

    def start(self) -> None:
        self._watcher = FolderWatcher(self.settings.runners.plugin_dirs)
        self._thread.start()

    def join(self, timeout: float) -> None:
        if self._thread.ident is not None:
            self._thread.join(timeout)

    # -- recording ------------------------------------------------------------------------------
    def record_serving(self, plugin: LoadedPlugin, loaded_at: float, unhealthy: str | None = None) -> None:
        """Served from now on; `unhealthy`: why its environment check failed (its calls then fail at once)."""
        if unhealthy is not None:
            log.error("plugin %s is unhealthy: %s; its invocations fail until it is fixed", plugin.name, unhealthy)
        self._safe_update(
            plugin.name,
            state="serving" if unhealthy is None else "unhealthy",
            version=plugin.version,
            code_hash=plugin.code_hash,
            loaded_at=loaded_at,
            path=str(plugin.path),
            runner=RUNNER_ID,
            last_error=unhealthy,
            error_at=None if unhealthy is None else time.time(),
            error_code_hash=None if unhealthy is None else plugin.code_hash,
        )

    def record_error(self, name: str, error: str, serving: bool, code_hash: str | None = None) -> None:
        log.error("plugin %s: %s%s", name, error, "; the previous version keeps serving" if serving else "")
        fields: dict[str, Any] = {
            "last_error": error,
            "error_at": time.time(),
            "error_code_hash": code_hash,
            "runner": RUNNER_ID,
        }
        if not serving:
            fields["state"] = "failed"
        self._safe_update(name, **fields)

    def _safe_update(self, name: str, **fields: Any) -> None:
        try:
            self.states.update(name, **fields)
        except Exception as e:  # the state record is for humans; never let it break serving
            log.warning("cannot record the state of plugin %s in Redis: %s", name, e)

    # -- watching -------------------------------------------------------------------------------
    def _watch_loop(self) -> None:
        assert self._watcher is not None
        while not self.stop.wait(self.interval):
            try:
                changed, removed = self._watcher.poll()
                for folder in removed:
                    log.warning("plugin folder %s was removed; its running version keeps serving until restart", folder)
                for folder in changed:
                    self._schedule(folder, forced=False)
                for name, at in self._requests().items():
                    if at > self._seen_requests.get(name, self._started_at):
                        self._seen_requests[name] = at
                        requested = self._folder_of(name)
                        if requested is None:
                            self.record_error(
                                name, "reload requested, but no plugin of that name was found", serving=False
                            )
                        else:
                            log.info("plugin %s: reload requested", name)
                            self._schedule(requested, forced=True)
            except Exception:
                log.exception("plugin watcher error (continuing)")

    def _requests(self) -> dict[str, float]:
        try:
            return self.states.reload_requests()
        except Exception as e:
            log.warning("cannot read reload requests from Redis: %s", e)
            return {}

    def _folder_of(self, name: str) -> Path | None:
        for lane in self.lanes():
            if lane.plugin.name == name:
                return lane.plugin.path
        found = discover(self.settings.runners.plugin_dirs).plugins.get(name)
        return found.path if found is not None else None

    def _schedule(self, folder: Path, forced: bool) -> None:
        with self._lock:
            if folder in self._busy:
                self._again[folder] = self._again.get(folder, False) or forced
                return
            self._busy.add(folder)
        threading.Thread(
            target=self._reload_thread, args=(folder, forced), name=f"reload-{folder.name}", daemon=True
        ).start()

    def _reload_thread(self, folder: Path, forced: bool) -> None:
        while True:
            try:
                self.reload(folder, forced)
            except Exception:
                log.exception("unexpected error reloading %s", folder)
            with self._lock:
                if folder not in self._again or self.stop.is_set():
                    self._busy.discard(folder)
                    self._again.pop(folder, None)
                    return
                forced = self._again.pop(folder)

    # -- reloading ------------------------------------------------------------------------------
    def reload(self, folder: Path, forced: bool = False) -> bool:
        """Load the folder's current code and switch to it; True if a new version now serves."""
        folder = folder.resolve()
        lane = next((lane for lane in self.lanes() if lane.plugin.path == folder), None)
        plugin = self._load_new_version(folder, lane)
        if plugin is None:
            return False
        if lane is not None and plugin.code_hash == lane.plugin.code_hash and not forced:
            return False  # touched, not changed
        log.info(
            "plugin %s: loading %s (code %s)%s",
            plugin.name,
            plugin.version,
            plugin.code_hash[:12],
            " beside the serving version" if lane is not None else "",
        )
        if lane is None:
            self._safe_update(
                plugin.name,
                state="building",
                version=plugin.version,
                code_hash=plugin.code_hash,
                path=str(plugin.path),
                runner=RUNNER_ID,
            )
        pool, error = self.start_pool(plugin)  # builds a new venv first if the dependencies changed
        if pool is None:
            self.record_error(
                plugin.name,
                f"new version {plugin.version} (code {plugin.code_hash[:12]}) cannot start: {error}",
                serving=lane is not None,
                code_hash=plugin.code_hash,
            )
            return False
        if self.stop.is_set():
            pool.close()
            return False
        self._serve(plugin, pool, lane)
        return True

    def _load_new_version(self, folder: Path, lane: PluginLane | None) -> LoadedPlugin | None:
        """The folder's plugin if this runner may serve it (in `lane`, or as a new plugin); else None.

        Why not is recorded as the plugin's last error, unless it is just not one this runner serves (`only`).
        """
        name = lane.plugin.name if lane is not None else folder.name
        try:
            plugin = load_plugin(folder)
        except (ConfigError, OSError) as e:
            self.record_error(name, f"invalid new version: {e}", serving=lane is not None)
            return None
        if self.only is not None and plugin.name not in self.only:
            return None
        if lane is None:
            other = next((x for x in self.lanes() if x.plugin.name == plugin.name), None)
            if other is not None:
                self.record_error(
                    plugin.name, f"duplicate plugin name in {folder} (serving {other.plugin.path})", serving=True
                )
                return None
        elif plugin.name != lane.plugin.name:
            self.record_error(
                name, f"{folder} now declares the name {plugin.name!r}: renaming needs a restart", serving=True
            )
            return None
        return plugin

    def _serve(self, plugin: LoadedPlugin, pool: WorkerPool, lane: PluginLane | None) -> None:
        """Switch the lane to the started pool, or hand a new plugin's lane to the consumer thread."""
        if lane is not None:
            version = lane.swap(plugin, pool)
            log.info(
                "plugin %s: now serving %s (code %s); the previous version drains",
                plugin.name,
                plugin.version,
                plugin.code_hash[:12],
            )
        else:
            new_lane = self.build_lane(plugin, pool)
            version = new_lane.current
            self.new_lanes.put(new_lane)
            log.info("plugin %s: new plugin %s (code %s) starting", plugin.name, plugin.version, plugin.code_hash[:12])
        self.record_serving(plugin, version.loaded_at, pool.unhealthy_reason())
