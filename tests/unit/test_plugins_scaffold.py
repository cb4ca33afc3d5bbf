"""`cdcflow plugins new`: a scaffolded plugin runs as it is, in its own venv and worker."""

from __future__ import annotations

import json

from click.testing import CliRunner

from console.cli import cli
from plugins.registry import discover
from tests.support import isolated_config_data, write_config


def _cli(cfg, *args: str):
    return CliRunner().invoke(cli, ["-c", str(cfg.path), *args])


def test_new_plugin_runs_with_plugins_test(tmp_path):
    plugins_dir = tmp_path / "plugins"
    cfg = write_config(tmp_path, isolated_config_data("scaffold", plugin_dirs=[plugins_dir]))

    out = _cli(cfg, "plugins", "new", "greeter")
    assert out.exit_code == 0, out.output
    folder = plugins_dir / "greeter"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "main.py", "plugin.json"]
    found = discover([plugins_dir])
    assert not found.problems and found.plugins["greeter"].manifest.entry_point == "main.run"
    assert set(found.plugins["greeter"].manifest.parameters) == {"message", "repeat"}

    out = _cli(cfg, "plugins", "test", "greeter", "-p", "message=hi", "-p", "repeat=3")
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert result["status"] == "success" and result["plugin"] == "greeter"
    assert result["output"] == {"echo": "hi hi hi", "invocation_id": result["invocation_id"]}

    out = _cli(cfg, "plugins", "test", "greeter")  # the required parameter is enforced, in one line
    assert out.exit_code == 1 and out.output.strip().splitlines() == [
        "Error: plugin greeter parameters: message: required parameter is missing"
    ]


def test_new_refuses_to_overwrite_and_bad_names(tmp_path):
    cfg = write_config(tmp_path, isolated_config_data("scaffold", plugin_dirs=[tmp_path / "plugins"]))
    other = tmp_path / "elsewhere"
    out = _cli(cfg, "plugins", "new", "mine", "--dir", str(other))
    assert out.exit_code == 0, out.output
    (other / "mine" / "main.py").write_text("# my edits\n")

    out = _cli(cfg, "plugins", "new", "mine", "--dir", str(other))
    assert out.exit_code == 1 and "already exists" in out.output and "not overwriting" in out.output
    assert (other / "mine" / "main.py").read_text() == "# my edits\n"

    for bad in ("has space", "with.dot", "../escape", "-dash", "x" * 65, "9lives"):
        out = _cli(cfg, "plugins", "new", "--dir", str(other), "--", bad)
        assert out.exit_code == 1 and "invalid plugin name" in out.output, (bad, out.output)
    assert sorted(p.name for p in other.iterdir()) == ["mine"]
