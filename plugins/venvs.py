"""One isolated virtualenv per distinct dependency set, built once and reused.

A venv is keyed by (sorted dependencies, python version): plugins with the same requirements share
one, and changing a requirement builds a new one beside the old. Builds are atomic (a temp folder
renamed into place, with a marker file written last) and serialised per key with a file lock, so a
runner and a `cdcflow plugins test` started at the same time never see a half-built venv.

Venvs never include the runner's site-packages: a plugin sees the standard library and its own
dependencies only.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

# Bump when the venv layout or build recipe changes, so old venvs are not reused.
LAYOUT_VERSION = 1
MARKER = ".cdcflow-venv.json"
OUTPUT_TAIL_LINES = 40
BUILD_TIMEOUT_SECONDS = 900.0

VenvState = Literal["ready", "missing"]


class VenvError(RuntimeError):
    """A venv could not be built; the message carries the installer's output tail."""


@dataclass(frozen=True)
class VenvSpec:
    dependencies: tuple[str, ...]
    python: str  # implementation + version, e.g. "cpython-3.11.7"

    @property
    def key(self) -> str:
        payload = json.dumps(
            {"deps": list(self.dependencies), "python": self.python, "layout": LAYOUT_VERSION}, sort_keys=True
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


def python_tag() -> str:
    return f"{platform.python_implementation().lower()}-{platform.python_version()}"


def venv_spec(dependencies: Iterable[str], python: str | None = None) -> VenvSpec:
    # Sorted and de-duplicated: the order in plugin.json must not cause a rebuild.
    return VenvSpec(
        dependencies=tuple(sorted({d.strip() for d in dependencies if d.strip()})), python=python or python_tag()
    )


def venv_path(venv_dir: Path, spec: VenvSpec) -> Path:
    return Path(venv_dir) / spec.key


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def venv_state(venv_dir: Path, spec: VenvSpec) -> VenvState:
    venv = venv_path(venv_dir, spec)
    return "ready" if (venv / MARKER).is_file() and venv_python(venv).exists() else "missing"


def ensure_venv(venv_dir: Path, dependencies: Iterable[str], *, timeout: float = BUILD_TIMEOUT_SECONDS) -> Path:
    """The venv root for these dependencies, building it first when it does not exist yet."""
    spec = venv_spec(dependencies)
    venv_dir = Path(venv_dir).absolute()  # workers are started with cwd = the plugin folder
    target = venv_path(venv_dir, spec)
    if venv_state(venv_dir, spec) == "ready":
        return target
    try:
        venv_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file on the path, no write access: said once, as a build error
        raise VenvError(f"{venv_dir}: cannot make the venv folder: {e.strerror or e}") from None
    with _build_lock(venv_dir / f".{spec.key}.lock"):
        if venv_state(venv_dir, spec) == "ready":  # someone else built it while we waited
            return target
        _remove_leftovers(venv_dir, spec.key, target)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{spec.key}-", dir=venv_dir))
        started = time.monotonic()
        try:
            _build(tmp, spec, timeout)
            (tmp / MARKER).write_text(
                json.dumps(
                    {
                        "dependencies": list(spec.dependencies),
                        "python": spec.python,
                        "layout": LAYOUT_VERSION,
                        "built_at": time.time(),
                        "installer": "uv" if _uv_bin() else "pip",
                    },
                    indent=2,
                )
            )
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; workers may run as another user
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        log.info(
            "built venv %s for %s in %.1fs",
            target,
            list(spec.dependencies) or "no dependencies",
            time.monotonic() - started,
        )
    return target


@contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _remove_leftovers(venv_dir: Path, key: str, target: Path) -> None:
    # We hold the key's lock, so temp folders for this key are from builds that died midway,
    # and a target without a marker is one that never finished.
    for leftover in venv_dir.glob(f".tmp-{key}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)


def _uv_bin() -> str | None:
    try:
        from uv import find_uv_bin  # optional dependency: without it, venv + pip
    except ImportError:
        return None
    try:
        return find_uv_bin()
    except Exception:  # FileNotFoundError when the wheel lacks a binary for this platform
        return None


def _build(venv: Path, spec: VenvSpec, timeout: float) -> None:
    uv = _uv_bin()
    python = venv_python(venv)
    if uv:
        # --relocatable: the venv is built under a temp name and renamed into place.
        _run([uv, "venv", "--quiet", "--relocatable", "--python", sys.executable, str(venv)], timeout, "uv venv")
        if spec.dependencies:
            _run([uv, "pip", "install", "--python", str(python), *spec.dependencies], timeout, "uv pip install")
    else:
        _run([sys.executable, "-m", "venv", str(venv)], timeout, "python -m venv")
        if spec.dependencies:
            _run(
                [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *spec.dependencies],
                timeout,
                "pip install",
            )


def _installer_env() -> dict[str, str]:
    env = dict(os.environ)
    # Nothing of the runner's own environment may leak into the new venv's resolution.
    for var in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "UV_PYTHON", "CONDA_PREFIX"):
        env.pop(var, None)
    # uv does not read pip's settings; carry the common ones over so one index/CA setup serves both.
    for pip_var, uv_var in (
        ("PIP_INDEX_URL", "UV_INDEX_URL"),
        ("PIP_EXTRA_INDEX_URL", "UV_EXTRA_INDEX_URL"),
        ("PIP_FIND_LINKS", "UV_FIND_LINKS"),
        ("PIP_CERT", "SSL_CERT_FILE"),
    ):
        if env.get(pip_var) and uv_var not in env:
            env[uv_var] = env[pip_var]
    return env


def _run(cmd: list[str], timeout: float, what: str) -> None:
    try:
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=_installer_env(),
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as e:
        raise VenvError(f"{what} timed out after {timeout:.0f}s\n{_tail(e.output or b'')}") from None
    except OSError as e:
        raise VenvError(f"{what} could not start: {e}") from None
    if proc.returncode != 0:
        raise VenvError(f"{what} failed (exit code {proc.returncode}):\n{_tail(proc.stdout)}")


def _tail(output: bytes | str) -> str:
    text = output.decode(errors="replace") if isinstance(output, bytes) else output
    return "\n".join(text.rstrip().splitlines()[-OUTPUT_TAIL_LINES:])
