"""Per-plugin venvs: built once per dependency set, atomically, and isolated from the runner."""

from __future__ import annotations

import subprocess
import threading

import pytest

from plugins.venvs import MARKER, VenvError, ensure_venv, venv_path, venv_python, venv_spec, venv_state


def test_build_once_then_reuse(tmp_path):
    spec = venv_spec([])
    assert venv_state(tmp_path, spec) == "missing"
    venv = ensure_venv(tmp_path, [])
    assert venv == venv_path(tmp_path.absolute(), spec) and venv_state(tmp_path, spec) == "ready"
    assert (venv / MARKER).is_file()
    stamp = (venv / MARKER).stat().st_mtime_ns
    assert ensure_venv(tmp_path, []) == venv
    assert (venv / MARKER).stat().st_mtime_ns == stamp  # not rebuilt
    # isolation: the runner's packages are not importable in the plugin venv
    probe = subprocess.run([str(venv_python(venv)), "-c", "import pydantic"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'pydantic'" in probe.stderr


def test_concurrent_builds_of_one_key_build_once(tmp_path):
    results, errors = [], []

    def build():
        try:
            results.append(ensure_venv(tmp_path, []))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    assert not list(tmp_path.glob(".tmp-*"))


def test_unfinished_venv_is_rebuilt(tmp_path):
    spec = venv_spec([])
    half = venv_path(tmp_path.absolute(), spec)
    (half / "bin").mkdir(parents=True)  # as if a build died before writing its marker
    (tmp_path / f".tmp-{spec.key}-dead").mkdir()
    assert venv_state(tmp_path, spec) == "missing"
    venv = ensure_venv(tmp_path, [])
    assert venv_state(tmp_path, spec) == "ready" and venv_python(venv).exists()
    assert not (tmp_path / f".tmp-{spec.key}-dead").exists()


def test_failed_build_leaves_nothing_and_shows_the_installer_output(tmp_path):
    deps = ["humanize>=not-a-version"]  # rejected by the installer itself, without any download
    with pytest.raises(VenvError) as info:
        ensure_venv(tmp_path, deps)
    assert "failed" in str(info.value) and "not-a-version" in str(info.value)
    assert venv_state(tmp_path, venv_spec(deps)) == "missing"
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_without_uv_falls_back_to_venv_and_pip(tmp_path, monkeypatch):
    import plugins.venvs as venvs

    monkeypatch.setattr(venvs, "_uv_bin", lambda: None)
    venv = ensure_venv(tmp_path, [])
    assert venv_state(tmp_path, venv_spec([])) == "ready"
    assert '"installer": "pip"' in (venv / MARKER).read_text()
    probe = subprocess.run(
        [str(venv_python(venv)), "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True
    )
    assert probe.stdout.strip() == str(venv)
