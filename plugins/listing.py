"""What `cdcflow plugins list` and `GET /api/plugins` show of each plugin: on disk (version, code
hash, dependencies, venv) and as the runners serve it (from Redis)."""

from __future__ import annotations

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


def _plugin_item(settings: Settings, p: LoadedPlugin, live: dict[str, Any]) -> dict[str, Any]:
    spec = venv_spec(p.manifest.dependencies)
    return {
        "name": p.name,
        "version": p.version,
        "code_hash": p.code_hash,
        "path": str(p.path),
        "entry_point": p.manifest.entry_point,
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
