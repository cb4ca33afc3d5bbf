"""plugin.json's category, tags and command (instead of entry_point), and the pure parts of running a
command: placeholders, output parsing, exit errors; the retry decision for an unhealthy plugin."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from plugins import worker_command
from plugins.registry import load_plugin, python_entry_point, worker_target
from plugins.retries import is_dead, wants_retry
from plugins.worker_main import UNHEALTHY_ERROR_TYPE, Plugin
from schemas.errors import ConfigError
from schemas.manifest import COMMAND_PLACEHOLDER, RetryPolicy, load_manifest
from schemas.result import ErrorInfo, Result
from tests.support.results import a_result

COMMAND = {
    "name": "tool",
    "command": ["python", "tool.py", "--id", "{teacher_id}", "--run", "{invocation_id}", "{{literal}}"],
    "parameters": {"teacher_id": {"type": "string", "required": True}},
    "category": " reports ",
    "tags": ["nightly", "example", "nightly"],
}


def _write(tmp_path: Path, data: dict[str, object]) -> Path:
    path = tmp_path / "plugin.json"
    path.write_text(json.dumps(data))
    return path


def test_a_command_plugin_loads_with_its_labels(tmp_path: Path) -> None:
    manifest = load_manifest(_write(tmp_path, COMMAND))
    assert manifest.command == COMMAND["command"] and manifest.entry_point is None
    assert manifest.category == "reports" and manifest.tags == ["nightly", "example"]
    assert (manifest.module, manifest.function) == ("", "")
    (tmp_path / "tool.py").write_text("print(1)\n")
    plugin = load_plugin(tmp_path)
    assert python_entry_point(plugin.manifest) is None
    assert worker_target(plugin.manifest) == "--command=" + json.dumps(COMMAND["command"])


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"entry_point": "main.run"}, "command", "not both"),
        ({"command": None}, "entry_point", "give entry_point (module.function) or command"),
        ({"command": []}, "command", "must start with the program"),
        ({"command": ["python", "{teacher}"]}, "command", "[1] '{teacher}': {teacher} is not a declared parameter"),
        ({"command": ["python", "{a b}"]}, "command", "[1] '{a b}': {a b} is not a placeholder"),
        ({"command": ["python", '{"k": 1}']}, "command", "is not a placeholder (write {{ and }} for literal braces)"),
        ({"command": ["python", "x}"]}, "command", "[1] 'x}': unmatched brace"),
        ({"tags": ["a,b"]}, "tags", "'a,b' is not a label"),
        ({"category": "  "}, "category", "is not a label"),
        ({"command": ["./missing.sh"]}, "command[0]", "'./missing.sh' not found in"),
    ],
)
def test_manifest_errors_are_one_line_naming_the_field(
    tmp_path: Path, change: dict[str, object], field: str, words: str
) -> None:
    data = {k: v for k, v in {**COMMAND, **change}.items() if v is not None}
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as err:
        load_plugin(tmp_path)
    message = str(err.value)
    assert message.count("\n") == 0, message
    assert message.startswith(f"{path}: {field}: ") and words in message, message


def test_neither_entry_point_nor_command_names_entry_point(tmp_path: Path) -> None:
    path = _write(tmp_path, {"name": "nothing"})
    with pytest.raises(ConfigError, match=r"plugin.json: entry_point: missing: give entry_point"):
        load_manifest(path)


def test_the_worker_fills_placeholders_with_the_manifests_pattern() -> None:
    assert worker_command.PLACEHOLDER.pattern == COMMAND_PLACEHOLDER
    values = {"teacher_id": "t 1; rm -rf / $(id) `x` {y}", "n": 3, "flag": True, "doc": {"a": [1]}, "none": None}
    argv = worker_command.fill_command(
        ["tool", "--id={teacher_id}", "{n}", "{flag}", "{doc}", "{none}", "{{x}}", "{missing}"], values
    )
    # each placeholder fills within its one argument; nothing is split or interpreted
    assert argv == ["tool", "--id=t 1; rm -rf / $(id) `x` {y}", "3", "true", '{"a":[1]}', "", "{x}", ""]


@pytest.mark.parametrize(
    "stdout, output",
    [
        (b'{"ok": true, "n": 2}\n', {"ok": True, "n": 2}),
        (b"[1, 2]", [1, 2]),
        (b"plain text\nsecond line\n", "plain text\nsecond line"),
        (b"NaN", "NaN"),
        (b"  \n", None),
        (b"\xff caf\xc3\xa9", "\ufffd café"),
    ],
)
def test_stdout_is_json_when_it_is_json(stdout: bytes, output: object) -> None:
    assert worker_command.parse_output(stdout) == output


def test_exit_errors_carry_the_code_and_the_stderr_tail() -> None:
    error = worker_command.exit_error(3, ["starting", "Traceback ...", "ValueError: no such teacher", ""])
    assert error["exit_code"] == 3 and error["type"] == "CommandFailed"
    assert error["message"] == "command exited with code 3: ValueError: no such teacher"
    assert error["traceback"].startswith("starting\nTraceback")
    killed = worker_command.exit_error(-9, [])
    assert killed["message"] == "command was killed by signal SIGKILL (no stderr)" and killed["traceback"] is None
    assert ErrorInfo(**error).model_dump()["exit_code"] == 3  # the result's error keeps it


def _result(error_type: str, attempt: int = 1) -> Result:
    return a_result("i", plugin="p", status="failed", attempt=attempt, error=ErrorInfo(type=error_type, message="m"))


def test_an_unhealthy_plugins_failure_is_not_retried_but_dead_lettered() -> None:
    policy = RetryPolicy(max_retries=3)
    assert wants_retry(_result("ValueError"), policy) and not is_dead(_result("ValueError"), policy)
    assert not wants_retry(_result(UNHEALTHY_ERROR_TYPE), policy)
    assert is_dead(_result(UNHEALTHY_ERROR_TYPE), policy)


@pytest.mark.parametrize(
    "check, unhealthy",
    [
        ("return True", None),
        ("return None", None),
        ("return False", "validate_execution_environment() returned False"),
        ("return ''", "validate_execution_environment() returned ''"),
        ("raise OSError('no GPU')", "validate_execution_environment() raised OSError: no GPU"),
    ],
)
def test_the_environment_check_decides_health(tmp_path: Path, check: str, unhealthy: str | None) -> None:
    module = f"envcheck_{tmp_path.name}"  # a module name of its own: every case imports its own file
    (tmp_path / f"{module}.py").write_text(f"def validate_execution_environment():\n    {check}\n")
    try:
        plugin = Plugin(str(tmp_path), f"{module}.validate_execution_environment")
        assert plugin.load_error is None, plugin.load_error
        plugin.check_environment()
        assert plugin.unhealthy == unhealthy
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)


def test_a_command_without_its_program_is_unhealthy(tmp_path: Path) -> None:
    missing = worker_command.CommandPlugin(str(tmp_path), ["no-such-program-here", "x"])
    missing.check_environment()
    assert missing.unhealthy is not None and "'no-such-program-here' not found" in missing.unhealthy
    (tmp_path / "tool.sh").write_text("#!/bin/sh\necho 1\n")
    not_executable = worker_command.CommandPlugin(str(tmp_path), ["./tool.sh"])
    not_executable.check_environment()
    assert not_executable.unhealthy is not None and "not executable" in not_executable.unhealthy
    (tmp_path / "tool.sh").chmod(0o755)
    fine = worker_command.CommandPlugin(str(tmp_path), ["./tool.sh"])
    fine.check_environment()
    assert fine.unhealthy is None
