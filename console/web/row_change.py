"""A row-change run's row, before and after, column by column with the changed ones marked.

A result carries the change only if something put it there: `row_change` or `change` (an object with
`before`/`after`, as on a cdc topic) among the result's extra fields, or `before`/`after` in its
trigger. Results that carry none show no row (the cdc trigger names the table, the operation and the
event id, which the run page shows instead).
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
    for holder in (extra_field(result, "row_change"), extra_field(result, "change"), extra_field(result, "trigger")):
        if isinstance(holder, dict) and ("before" in holder or "after" in holder):
            before, after = holder.get("before"), holder.get("after")
            if isinstance(before, dict | None) and isinstance(after, dict | None) and (before or after):
                return before, after
    return None


def extra_field(result: Result, name: str) -> Any:
    """A field the contract does not declare (params, trigger...): pydantic keeps extras in
    `model_extra` or, in some versions, as plain attributes; getattr finds both."""
    return (result.model_extra or {}).get(name, getattr(result, name, None))


def column_changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> list[ColumnChange]:
    """Every column of either image, in the row's own order; an insert or delete changes every column."""
    old, new = before or {}, after or {}
    columns = list(dict.fromkeys([*new, *old]))
    return [
        ColumnChange(c, old.get(c), new.get(c), c not in old or c not in new or old[c] != new[c], c in old, c in new)
        for c in columns
    ]
