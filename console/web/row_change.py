"""A row-change run's row, before and after, column by column with the changed ones marked.

A cdc run's trigger carries the row's images when the change was small (streams/row_changes.py,
ROW_IN_TRIGGER_MAX_BYTES); a larger change's run shows no row: its trigger names the table, the
operation and the event id, which the run page shows instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.result import Result


@dataclass(frozen=True)
class ColumnChange:
    column: str
    before: Any
    after: Any
    changed: bool
    in_before: bool
    in_after: bool


def row_change(result: Result) -> tuple[dict[str, Any] | None, dict[str, Any] | None] | None:
    trigger = result.trigger or {}
    before, after = trigger.get("before"), trigger.get("after")
    if isinstance(before, dict | None) and isinstance(after, dict | None) and (before or after):
        return before, after
    return None


def column_changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[ColumnChange]:
    """Every column of either image, in the row's own order; an insert or delete changes every column."""
    old, new = before or {}, after or {}
    columns = list(dict.fromkeys([*new, *old]))
    return [
        ColumnChange(c, old.get(c), new.get(c), c not in old or c not in new or old[c] != new[c], c in old, c in new)
        for c in columns
    ]
