"""What `cdcflow plugins list` and `GET /api/plugins` show of each plugin: on disk (version, code
hash, dependencies, venv) and as the runners serve it (from Redis)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from plugins.registry import LoadedPlugin, discover
from plugins.venvs import venv_path, venv_spec, venv_state
from schemas.settings import Settings


def plugin_listing(
    settings: Settings, served: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Every plugin found on disk, with how runners serve it (`served`: PluginStates.all()), and
    the folders that are not valid plugins (path, error)."""
    found = discover(settings.runners.plugin_dirs)
    items = [_plugin_item(settings, p, served.get(p.name) or {}) for p in found.plugins.values()]
    errors = [{"path": str(pr.path), "error": pr.message} for pr in found.problems]
    return items, errors


def labelled_plugins(settings: Settings, category: str | None, tags: Iterable[str]) -> frozenset[str] | None:
    """The plugins (on disk) in `category` with any of `tags`, compared case-insensitively; None when
    neither is asked for. What `runs list --category/--tag` filters runs by."""
    wanted = {t.strip().casefold() for t in tags if t.strip()}
    if category is None and not wanted:
        return None
    names = set()
    for p in discover(settings.runners.plugin_dirs).plugins.values():
        if category is not None and (p.manifest.category or "").casefold() != category.strip().casefold():
            continue
        if wanted and not wanted & {t.casefold() for t in p.manifest.tags}:
            continue
        names.add(p.name)
    return frozenset(names)


def _plugin_item(settings: Settings, p: LoadedPlugin, live: dict[str, Any]) -> dict[str, Any]:
    spec = venv_spec(p.manifest.dependencies)
    return {
        "name": p.name,
        "version": p.version,
        "code_hash": p.code_hash,
        "path": str(p.path),
        "category": p.manifest.category,
        "tags": p.manifest.tags,
        "entry_point": p.manifest.entry_point,  # null for a command plugin
        "command": p.manifest.command,  # null for a Python plugin
        "dependencies": p.manifest.dependencies,
        "concurrency": p.manifest.concurrency,
        "timeout_seconds": p.manifest.timeout_seconds,
        "venv": str(venv_path(settings.runners.venv_dir, spec)),
        "venv_state": venv_state(settings.runners.venv_dir, spec),
        # As a runner serves it (from Redis); may lag the disk while a reload is under way.
        "served_version": live.get("version"),
        "served_code_hash": live.get("code_hash"),
        "loaded_at": live.get("loaded_at"),
        "state": live.get("state", "not served"),
        "last_error": live.get("last_error"),
        "runner": live.get("runner"),
    }
