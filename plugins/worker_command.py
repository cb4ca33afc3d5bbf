"""A command plugin's calls, inside its worker: fill in the argument list, run the program, report.

Stdlib-only, and loaded by worker_main.py by its path (this folder is not on the worker's sys.path);
the runner never imports it. plugin.json's `command` replaces `entry_point`:

    "command": ["python", "tool.py", "--id", "{teacher_id}"]

The program runs without a shell: each placeholder becomes (part of) one argument, whatever the value
holds, so `; rm -rf /` in a parameter is just text. It runs in the plugin folder as a child of the
warm worker, so it inherits what the worker has: the scrubbed environment with the plugin venv's bin
first on PATH (`python` is the venv's), the memory limit (rlimits pass to children) and the process
group, which the runner kills on a timeout. stdout is the output (parsed when it is JSON); a non-zero
exit is a failure with the exit code and the tail of stderr. stderr also goes to the runner's log.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

# The same pattern as schemas.manifest.COMMAND_PLACEHOLDER, which validated the command at load.
PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")
CONTEXT_NAMES = ("invocation_id", "attempt", "plugin")
STDERR_TAIL_LINES = 20
STDERR_TAIL_CHARS = 4000


def argument_text(value: Any) -> str:
    """A parameter value as one argument: strings as they are, JSON for the rest, "" for none."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def fill_command(template: list[str], values: dict[str, Any]) -> list[str]:
    """The argument list with every `{name}` replaced by its value's text, `{{`/`}}` by one brace."""

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        return argument_text(values.get(match.group(1)))

    return [PLACEHOLDER.sub(one, arg) for arg in template]


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")


def parse_output(stdout: bytes) -> Any:
    """stdout as JSON when it is (strict) JSON, else as text; None when there was none."""
    text = stdout.decode("utf-8", errors="replace").strip()
    if not text:
        return None
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError:
        return text


def _forward_stderr(stream: IO[bytes], tail: collections.deque[str]) -> None:
    # Live to the worker's stderr (the runner logs it, and keeps it for a timeout's report) and kept here.
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", errors="replace").rstrip("\n")
        tail.append(line)
        print(line, file=sys.stderr, flush=True)
    stream.close()


def exit_error(code: int, tail: list[str]) -> dict[str, Any]:
    """The error of a command that did not exit 0: the exit code, the last stderr line in the message
    and the stderr tail as the traceback."""
    text = "\n".join(tail)[-STDERR_TAIL_CHARS:]
    last = next((line.strip() for line in reversed(tail) if line.strip()), "")
    if code < 0:
        try:
            what = f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            what = f"was killed by signal {-code}"
    else:
        what = f"exited with code {code}"
    return {
        "type": "CommandFailed",
        "message": f"command {what}" + (f": {last[:500]}" if last else " (no stderr)"),
        "traceback": text or None,
        "exit_code": code,
    }


class CommandPlugin:
    """Served by worker_main like a Python plugin (see its Servable)."""

    def __init__(self, plugin_dir: str, command: list[str]):
        self.plugin_dir = plugin_dir
        self.command = command
        self.load_error: dict[str, Any] | None = None
        self.unhealthy: str | None = None
        self.takes_context = False
        self.hooks: dict[str, Any] = {}

    def check_environment(self) -> None:
        """The program must exist: in the plugin folder for a path, on PATH (venv first) for a name."""
        program = self.command[0]
        if "{" in program:
            return  # chosen per call: nothing to check yet
        if "/" in program:
            path = os.path.join(self.plugin_dir, program)
            found = os.path.isfile(path) and os.access(path, os.X_OK)
        else:
            found = shutil.which(program) is not None
        if not found:
            where = self.plugin_dir if "/" in program else f"PATH {os.environ.get('PATH', '')}"
            self.unhealthy = f"command program {program!r} not found or not executable ({where})"

    def call(self, request: dict[str, Any]) -> dict[str, Any]:
        context = request.get("context") or {}
        values = {name: context.get(name) for name in CONTEXT_NAMES}
        values.update(request.get("params") or {})
        argv = fill_command(self.command, values)
        resp: dict[str, Any] = {
            "type": "result",
            "invocation_id": request.get("invocation_id"),
            "started_at": time.time(),
            "entry_called_at": time.time(),
            "output": None,
        }
        try:
            proc = subprocess.Popen(
                argv, cwd=self.plugin_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as e:
            error = {"type": "CommandNotStarted", "message": f"cannot run {argv[0]!r}: {e}", "traceback": None}
            resp.update(ok=False, error=error, finished_at=time.time())
            return resp
        assert proc.stdout is not None and proc.stderr is not None
        tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        pump = threading.Thread(target=_forward_stderr, args=(proc.stderr, tail), daemon=True)
        pump.start()
        stdout = proc.stdout.read()
        proc.stdout.close()
        code = proc.wait()
        pump.join()
        if code != 0:
            resp.update(ok=False, error=exit_error(code, list(tail)))
        else:
            resp.update(ok=True, output=parse_output(stdout), error=None)
        resp["finished_at"] = time.time()
        return resp
