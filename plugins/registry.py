"""Plugin discovery: which plugins exist, their manifests, and a hash of their code.

A plugin is a folder with a plugin.json inside one of the configured plugin directories. A broken
plugin is reported and skipped; it never hides the others.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from plugins.worker_main import command_argument
from schemas.errors import ConfigError
from schemas.manifest import PluginManifest, load_manifest

log = logging.getLogger(__name__)

MANIFEST_FILE = "plugin.json"
HASHED_SUFFIXES = (".py", ".json")
# Folders that hold generated or third-party files, not the plugin's own code.
SKIPPED_DIRS = {"__pycache__", ".venv", "venv", ".git", "node_modules", ".mypy_cache", ".pytest_cache"}


class NotFoundError(LookupError):
    """A plugin or dead letter asked for by name or id does not exist; the message says which."""


@dataclass(frozen=True)
class LoadedPlugin:
    name: str
    path: Path
    manifest: PluginManifest
    code_hash: str

    @property
    def version(self) -> str:
        return self.manifest.version


@dataclass(frozen=True)
class PluginProblem:
    path: Path
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class Discovery:
    plugins: dict[str, LoadedPlugin] = field(default_factory=dict)
    problems: list[PluginProblem] = field(default_factory=list)

    def problems_of(self, name: str) -> list[str]:
        """Why a plugin called `name` did not load: its folder's problems, or those naming it."""
        return [p.message for p in self.problems if p.path.name == name or f"'{name}'" in p.message]


def code_hash(plugin_dir: Path) -> str:
    """sha256 over the plugin's .py/.json files (relative path + contents), in a stable order.

    Paths are part of the hash so renaming a module changes it; generated folders are skipped so a
    __pycache__ written by the worker does not.
    """
    digest = hashlib.sha256()
    for file in sorted(_code_files(plugin_dir)):
        rel = file.relative_to(plugin_dir).as_posix()
        digest.update(rel.encode() + b"\0")
        digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _code_files(root: Path) -> Iterable[Path]:
    for entry in root.iterdir():
        if entry.is_dir():
            if entry.name not in SKIPPED_DIRS and not entry.name.startswith("."):
                yield from _code_files(entry)
        elif entry.suffix in HASHED_SUFFIXES and entry.is_file():
            yield entry


def entry_module_exists(plugin_dir: Path, manifest: PluginManifest) -> bool:
    rel = Path(*manifest.module.split("."))
    return (plugin_dir / rel).with_suffix(".py").is_file() or (plugin_dir / rel / "__init__.py").is_file()


def python_entry_point(manifest: PluginManifest) -> str | None:
    """The module.function a worker imports, or None for a command plugin: it has nothing to import
    (its program is checked when a worker starts, see plugins/worker_command.py)."""
    return manifest.entry_point if manifest.command is None else None


def worker_target(manifest: PluginManifest) -> str:
    """What a worker is started to serve (WorkerSpec.entry_point): the entry point, or the command."""
    return manifest.entry_point if manifest.entry_point is not None else command_argument(manifest.command or [])


def _missing_program(plugin_dir: Path, command: list[str]) -> str | None:
    # A path inside the plugin folder can be checked now; a bare name is looked up on the worker's PATH.
    program = command[0]
    if "/" not in program or Path(program).is_absolute() or "{" in program:
        return None
    if (plugin_dir / program).is_file():
        return None
    return f"{program!r} not found in {plugin_dir}"


def load_plugin(plugin_dir: Path) -> LoadedPlugin:
    """Load one plugin folder; raise ConfigError naming the file and the problem."""
    manifest_path = plugin_dir / MANIFEST_FILE
    manifest = load_manifest(manifest_path)
    if manifest.command is not None:
        if missing := _missing_program(plugin_dir, manifest.command):
            raise ConfigError(manifest_path, [("command[0]", missing)])
    elif not entry_module_exists(plugin_dir, manifest):
        raise ConfigError(
            manifest_path,
            [
                (
                    "entry_point",
                    f"module {manifest.module!r} not found in {plugin_dir} "
                    f"(expected {manifest.module.replace('.', '/')}.py)",
                )
            ],
        )
    return LoadedPlugin(
        name=manifest.name, path=plugin_dir.resolve(), manifest=manifest, code_hash=code_hash(plugin_dir)
    )


def find_plugin(plugin_dirs: Iterable[Path], name: str) -> LoadedPlugin:
    """The plugin called `name`; NotFoundError saying why it did not load, or which plugins there are."""
    found = discover(plugin_dirs)
    plugin = found.plugins.get(name)
    if plugin is None:
        related = found.problems_of(name)
        detail = ("\n" + "\n".join(related)) if related else f" (known: {', '.join(sorted(found.plugins)) or 'none'})"
        raise NotFoundError(f"plugin {name!r} not found{detail}")
    return plugin


def discover(plugin_dirs: Iterable[Path]) -> Discovery:
    """Every sub-folder with a plugin.json in each directory, in directory order then by folder name.

    The same plugin name in two folders is an error naming both; the first one found (earlier
    directory in the config) stays loaded, so adding a stray copy cannot swap out running code.
    """
    found = Discovery()
    for base in plugin_dirs:
        base = Path(base)
        if not base.is_dir():
            found.problems.append(PluginProblem(base, f"{base}: plugin directory not found"))
            continue
        for folder in sorted(p for p in base.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file()):
            try:
                plugin = load_plugin(folder)
            except ConfigError as e:
                found.problems.append(PluginProblem(folder, str(e)))
                continue
            except OSError as e:
                found.problems.append(PluginProblem(folder, f"{folder}: cannot read plugin: {e}"))
                continue
            first = found.plugins.get(plugin.name)
            if first is not None:
                found.problems.append(
                    PluginProblem(
                        folder,
                        (
                            f"duplicate plugin name {plugin.name!r}: {folder / MANIFEST_FILE} and "
                            f"{first.path / MANIFEST_FILE} (keeping {first.path})"
                        ),
                    )
                )
                continue
            found.plugins[plugin.name] = plugin
    return found
