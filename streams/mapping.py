"""Rule `params`: plugin parameters filled from the row change.

A string that is exactly one placeholder keeps the value's type (`"{after.id}"` -> 42); placeholders
inside longer strings are formatted as text. Placeholders: after.COL, before.COL, row.COL (after, or
before for a delete), db, table, op (c/u/d/r), operation (INSERT/UPDATE/DELETE/READ), event_id, ts_ms.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from schemas.row_change import OP_TO_OPERATION

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[^{}]+)?)\}")
SCALARS = {"db", "table", "op", "operation", "event_id", "ts_ms"}

Resolver = Callable[[dict[str, Any]], Any]


class MappingError(ValueError):
    def __init__(self, key: str, reason: str):
        self.key = key
        super().__init__(f"{key}: {reason}")


def _resolver(ref: str, path: str) -> Resolver:
    head, _, column = ref.partition(".")
    if ref in SCALARS:
        if ref == "operation":
            return lambda ev: OP_TO_OPERATION.get(ev.get("op", ""), "")
        if ref in ("db", "table"):
            return lambda ev: ev["source"][ref]
        return lambda ev: ev.get(ref)
    if head in ("after", "before") and column:
        return lambda ev: (ev.get(head) or {}).get(column)
    if head == "row" and column:
        return lambda ev: (ev.get("after") or ev.get("before") or {}).get(column)
    raise MappingError(
        path, f"unknown placeholder {{{ref}}} (use after.COL, before.COL, row.COL, {', '.join(sorted(SCALARS))})"
    )


def compile_params(params: dict[str, Any], path: str = "params") -> Callable[[dict[str, Any]], dict[str, Any]]:
    """Compile a params mapping into a function of the row-change envelope (a plain dict)."""
    compiled: list[tuple[str, Any]] = []
    for name, template in params.items():
        compiled.append((name, _compile_value(template, f"{path}.{name}")))

    def build(event: dict[str, Any]) -> dict[str, Any]:
        return {name: (fn(event) if callable(fn) else fn) for name, fn in compiled}

    return build


def _compile_value(template: Any, path: str) -> Any:
    if not isinstance(template, str) or "{" not in template:
        return template
    whole = PLACEHOLDER.fullmatch(template)
    if whole:
        return _resolver(whole.group(1), path)
    parts: list[Any] = []
    last = 0
    for m in PLACEHOLDER.finditer(template):
        parts.append(template[last : m.start()])
        parts.append(_resolver(m.group(1), path))
        last = m.end()
    parts.append(template[last:])

    def fmt(event: dict[str, Any]) -> str:
        return "".join(p if isinstance(p, str) else ("" if (v := p(event)) is None else str(v)) for p in parts)

    return fmt
