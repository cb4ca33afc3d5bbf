"""What every benchmark script needs: the local stack up, a cdcflow command started, percentiles, and
the components' heartbeats as `cdcflow status` reads them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from console.status_report import read_component_views
from schemas.config import Config

ROOT = Path(__file__).resolve().parent.parent


def stack_up() -> None:
    subprocess.run([sys.executable, str(ROOT / "stack" / "stack.py"), "up"], check=True, stdout=subprocess.DEVNULL)


def start_cdcflow(
    config_path: Path, *args: str, log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`cdcflow --config CONFIG ARGS...` in the background, logging at WARNING into `log_path`; `env`
    adds to the environment (e.g. a CDCFLOW_<SECTION>__<KEY> override for this process only)."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "console.cli", "--config", str(config_path), *args],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CDCFLOW_LOG_LEVEL": "WARNING", **(env or {})},
        )


def stop_cdcflow(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
    """SIGINT (a clean stop, as Ctrl-C), then SIGKILL if it has not ended within `timeout`."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def components(config: Config) -> list[dict[str, Any]]:
    """The pipeline's components as `cdcflow status` sees them (kind, liveness, state, details)."""
    return read_component_views(config.settings, timeout=5.0)
