"""Parameters bound by name: what a plugin gets from a rule that gives it no params.

The original design's rules name plugins and nothing else (`triggers: [data_processor, es_indexer]`):
each parameter the plugin declares in its plugin.json is then filled from the change by its name.
A parameter named like a column gets that column of the row (after the change; before it for a
delete); otherwise one of the change's own values below, if the name is one; otherwise nothing is
sent and the runner applies the declared default, as for any invocation (a required parameter with
neither is refused by the rules check when the table's columns are known, and by the runner when a
change does not have it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from schemas.manifest import ParameterSpec
from schemas.row_change import OP_TO_OPERATION
from streams.mapping import changed_columns, row_of

Event = dict[str, Any]

CHANGE_VALUES: dict[str, Callable[[Event], Any]] = {
    "operation": lambda ev: OP_TO_OPERATION.get(ev.get("op", ""), ""),
    "db": lambda ev: ev["source"]["db"],
    "table": lambda ev: ev["source"]["table"],
    "event_id": lambda ev: ev.get("event_id"),
    "ts_ms": lambda ev: ev.get("ts_ms"),
    "row": row_of,
    "data": row_of,
    "before": lambda ev: ev.get("before"),
    "after": lambda ev: ev.get("after"),
    "changes": lambda ev: changed_columns(ev.get("before"), ev.get("after")),
}


def compile_binding(declared: Mapping[str, ParameterSpec]) -> Callable[[Event], dict[str, Any]]:
    """A function of the row-change envelope -> the declared parameters it binds (columns first)."""
    names = tuple(declared)
    own = tuple((name, CHANGE_VALUES[name]) for name in names if name in CHANGE_VALUES)

    def bind(event: Event) -> dict[str, Any]:
        row = row_of(event) or {}
        out = {name: row[name] for name in names if name in row}
        for name, value in own:
            if name not in out:
                out[name] = value(event)
        return out

    return bind


def unbindable(declared: Mapping[str, ParameterSpec], columns: Collection[str] | None) -> list[str]:
    """The required parameters (without a default) nothing can bind: neither a change value nor, when
    the table's `columns` are known, one of them (unknown columns: every name might be one)."""
    return [
        name
        for name, spec in declared.items()
        if spec.required
        and spec.default is None
        and name not in CHANGE_VALUES
        and columns is not None
        and name not in columns
    ]
