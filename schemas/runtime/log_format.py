"""Log output: readable text (default) or one JSON object per line (`--log-format json`).

A JSON line has time (UTC ISO 8601), level, component, logger and message, plus whatever the call
passed in `extra=` (plugin, invocation_id, event_id, status...), and the traceback as `exc_info`.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

LogFormat = Literal["text", "json"]
# Attributes every LogRecord has: anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class JsonFormatter(logging.Formatter):
    def __init__(self, component: str):
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "component": self.component,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


def configure_logging(level: str, fmt: LogFormat, component: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(component))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    # Like the plain basicConfig it replaces: a no-op where logging is already set up (e.g. under pytest).
    logging.basicConfig(level=level.upper(), handlers=[handler])


def component_of(subcommand: str | None) -> str:
    """The component a `cdcflow SUBCOMMAND ...` process is (what `cdcflow run` starts as children)."""
    return {"cdc": "reader", "runners": "runner", "run": "supervisor"}.get(subcommand or "", subcommand or "cli")
