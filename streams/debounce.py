"""Per-rule debounce, pure part: many changes of one row within a window -> one invocation set.

The window opens at the first matching change of a row and closes `debounce_ms` later (a fixed
window, not one that each change extends: a row updated every second would otherwise never fire).
Each matching change replaces the pending invocations, so the flush carries the latest row and
the latest event id (hence a deterministic invocation id). A change that does not match the rule
leaves the pending entry alone.
"""

from __future__ import annotations

from typing import Any


def pending_key(rule: str, row_key: str) -> str:
    # The row key is part of it, so the entry lives in the table partition of the row's source partition.
    return f"{rule}|{row_key}"


def merge_pending(
    pending: dict[str, Any] | None, invocations: list[dict[str, Any]], window_ms: int, now_ms: int, partition: int
) -> dict[str, Any]:
    """The pending entry after one more matching change."""
    if pending is None:
        return {
            "due_ms": now_ms + window_ms,
            "first_ms": now_ms,
            "changes": 1,
            "partition": partition,
            "invocations": invocations,
        }
    return {**pending, "changes": pending["changes"] + 1, "invocations": invocations}


def is_due(pending: dict[str, Any], now_ms: int) -> bool:
    due_ms: int = pending["due_ms"]
    return due_ms <= now_ms
