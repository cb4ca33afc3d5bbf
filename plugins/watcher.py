"""Which plugin folders changed: polling with a debounce, portable and dependency-free.

Every poll takes a cheap fingerprint of each plugin folder (path, size and mtime of its .py/.json
files). A folder is reported once its fingerprint differs from the last reported one AND has stayed
the same for one more poll, so an editor's save-in-several-writes or a `cp -r` in progress is
reported once, when it has settled. The caller then compares content hashes (registry.code_hash), so
a touch without a real change reloads nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from plugins.registry import MANIFEST_FILE, _code_files

Fingerprint = tuple[tuple[str, int, int], ...]


def fingerprint(folder: Path) -> Fingerprint:
    out = []
    try:
        for f in _code_files(folder):
            try:
                st = f.stat()
            except OSError:  # deleted between listing and stat: the next poll sees the settled state
                continue
            out.append((f.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns))
    except OSError:
        pass
    return tuple(sorted(out))


def plugin_folders(plugin_dirs: Iterable[Path]) -> list[Path]:
    folders = []
    for base in plugin_dirs:
        try:
            folders += [p.resolve() for p in Path(base).iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file()]
        except OSError:
            continue
    return sorted(folders)


class FolderWatcher:
    def __init__(self, plugin_dirs: Iterable[Path]):
        self.plugin_dirs = [Path(d) for d in plugin_dirs]
        # What was last reported (or seen at start): only differences from it are changes.
        self._reported: dict[Path, Fingerprint] = {f: fingerprint(f) for f in plugin_folders(self.plugin_dirs)}
        self._pending: dict[Path, Fingerprint] = {}

    def known(self) -> list[Path]:
        return sorted(self._reported)

    def poll(self) -> tuple[list[Path], list[Path]]:
        """(changed or new folders that have settled, folders that disappeared)."""
        current = {f: fingerprint(f) for f in plugin_folders(self.plugin_dirs)}
        settled: list[Path] = []
        for folder, fp in current.items():
            if self._reported.get(folder) == fp:
                self._pending.pop(folder, None)
                continue
            if self._pending.get(folder) == fp:
                del self._pending[folder]
                self._reported[folder] = fp
                settled.append(folder)
            else:
                self._pending[folder] = fp
        removed = [f for f in self._reported if f not in current]
        for f in removed:
            del self._reported[f]
            self._pending.pop(f, None)
        return settled, removed
