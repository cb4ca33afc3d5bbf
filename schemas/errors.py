"""Errors raised at the boundaries: they always name the place (file, key) and the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError


class ConfigError(ValueError):
    """A config file, plugin.json or event that cannot be accepted.

    The message is meant for a human at a console: `<file>: <key>: <reason>` per problem.
    """

    def __init__(self, source: str | Path, problems: list[tuple[str, str]]):
        self.source = str(source)
        self.problems = problems
        lines = [f"{self.source}: {key}: {reason}" if key else f"{self.source}: {reason}" for key, reason in problems]
        super().__init__("\n".join(lines))


def location(loc: tuple[Any, ...]) -> str:
    """pydantic's loc tuple as a dotted key path, e.g. `monitored_tables.users[0].conditions`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-") or str(part) in {"tagged-union"}:
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def from_validation_error(source: str | Path, err: ValidationError, prefix: str = "") -> ConfigError:
    problems = []
    for e in err.errors(include_url=False):
        key = location(e["loc"])
        if prefix:
            key = f"{prefix}.{key}" if key else prefix
        problems.append((key, e["msg"]))
    return ConfigError(source, problems)
