"""`cdcflow run`: the reader, the Faust worker and the runner as supervised child processes.

A child that dies is restarted with backoff; Ctrl-C / SIGTERM stops all of them cleanly
(SIGTERM, then SIGKILL after a grace period), so one command is the whole pipeline.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import click

# a logger, not click.echo: with --log-format json the supervisor's own lines are JSON too
log = logging.getLogger("cdcflow.supervisor")

COMPONENTS: dict[str, list[str]] = {
    "cdc": ["cdc", "run"],
    "streams": ["streams", "worker"],
    "runners": ["runners", "run"],
    "api": ["api", "serve"],  # only when api.enabled (or named in --only)
}


@dataclass
class Child:
    name: str
    argv: list[str]
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)


def _pump(name: str, stream: IO[bytes]) -> None:
    """Prefix each line of a child's output with its name, so interleaved logs stay readable."""
    width = max(len(n) for n in COMPONENTS)
    # JSON log lines stay parseable: they name their component themselves
    prefix = "" if os.environ.get("CDCFLOW_LOG_FORMAT") == "json" else f"{name:<{width}} | "
    for line in iter(stream.readline, b""):
        sys.stderr.write(f"{prefix}{line.decode('utf-8', 'replace')}")
        sys.stderr.flush()


def _start(child: Child) -> None:
    child.process = subprocess.Popen(child.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    child.started_at = time.monotonic()
    threading.Thread(target=_pump, args=(child.name, child.process.stdout), daemon=True).start()


def supervise(children: list[Child], grace_seconds: float = 20.0) -> int:
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    for child in children:
        _start(child)
    while not stopping.wait(0.5):
        for child in children:
            assert child.process is not None
            code = child.process.poll()
            if code is None:
                continue
            now = time.monotonic()
            if child.next_start == 0.0:
                # A child that ran a while before dying gets a fresh backoff.
                if now - child.started_at > 60:
                    child.restarts = 0
                delay = min(2**child.restarts, 30)
                child.next_start = now + delay
                log.warning("%s exited with code %s; restarting in %ss", child.name, code, delay)
            elif now >= child.next_start:
                child.restarts += 1
                child.next_start = 0.0
                _start(child)
    log.info("stopping all components")
    for child in children:
        if child.process and child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    for child in children:
        if child.process is None:
            continue
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %ss; killing it", child.name, grace_seconds)
            child.process.kill()
            child.process.wait()
    return 0


@click.command("run")
@click.option("--only", multiple=True, type=click.Choice(sorted(COMPONENTS)), help="run only these components")
@click.pass_context
def run(ctx: click.Context, only: tuple[str, ...]) -> None:
    """Run the whole pipeline (cdc reader, streams worker, runner; the API when api.enabled) until Ctrl-C."""
    from schemas.runtime.cli_support import get_config

    config = get_config(ctx)  # fail here, once, on a bad config rather than in three children
    base = [sys.executable, "-m", "console.cli"]
    if config.path is not None:
        base += ["--config", str(Path(config.path))]
    log_format = ctx.find_root().params.get("log_format") or "text"
    base += ["--log-format", log_format]
    os.environ["CDCFLOW_LOG_FORMAT"] = log_format  # read by _pump; this process only supervises
    names = list(only) or [n for n in COMPONENTS if n != "api" or config.settings.api.enabled]
    children = [Child(name, base + COMPONENTS[name]) for name in names]
    raise SystemExit(supervise(children))
