"""Would each plugin start in a runner? Found by starting it the way the runner does, once.

A plugin's entry point is imported in the plugin's own virtualenv (its dependencies, not the
runner's), so only that venv's python can say whether `main.crawl` imports and `crawl` exists. The
check calls the runner's own start_pool (plugins/runner.py) with one worker: venv built or reused,
worker_main started, its hello read (import, function lookup, the plugin's environment check), the
worker stopped. What stops a plugin in the runner stops it here, with the same words.

`build_venvs=False` (the HTTP API: a request must not install packages) leaves plugins whose venv is
not built yet unchecked; they are listed so the caller can say so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from plugins.registry import LoadedPlugin
from plugins.runner import RunnerOptions, start_pool
from plugins.venvs import venv_spec, venv_state
from schemas.settings import Settings

STARTUP_TIMEOUT_SECONDS = 30.0


@dataclass
class StartCheck:
    problems: list[tuple[str, str]] = field(default_factory=list)  # (where, why), as ConfigError takes them
    unchecked: list[str] = field(default_factory=list)  # plugins whose venv is not built (build_venvs=False)


def plugin_start_problems(settings: Settings, plugins: Iterable[LoadedPlugin], *, build_venvs: bool) -> StartCheck:
    """Start one worker of each plugin as the runner would; every one that cannot start, and why."""
    check = StartCheck()
    options = RunnerOptions(startup_timeout=STARTUP_TIMEOUT_SECONDS, watch=False)
    for plugin in sorted(plugins, key=lambda p: p.name):
        built = venv_state(settings.runners.venv_dir, venv_spec(plugin.manifest.dependencies)) == "ready"
        if not build_venvs and not built:
            check.unchecked.append(plugin.name)
            continue
        try:
            pool, error = start_pool(settings, plugin, options, size=1)
        except OSError as e:  # the venv folder cannot be made, the python cannot be run
            pool, error = None, f"{type(e).__name__}: {e}"
        if pool is not None:
            error = pool.unhealthy_reason()
            error = f"its environment check failed: {error}" if error else None
            pool.close()
        if error is not None:
            check.problems.append((f"plugin {plugin.name} ({plugin.path})", f"cannot start: {_one_line(error)}"))
    return check


def _one_line(error: str) -> str:
    """The reason without the traceback; for a venv build, the installer's last line says why."""
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    if not lines:
        return "no reason given"
    if lines[0].startswith("its venv could not be built") and len(lines) > 1:
        return f"{lines[0]} ... {lines[-1]}"
    return lines[0]
