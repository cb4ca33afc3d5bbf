"""Rule `params`: plugin parameters filled from the row change.

A string that is exactly one placeholder keeps the value's type (`"{after.id}"` -> 42, `"{after}"`
-> the row as a dict); placeholders inside longer strings are formatted as text (a dict or list as
JSON, null as nothing). Templates inside nested dicts and lists are filled too. Placeholders:
after.COL, before.COL, row.COL (after, or before for a delete; `data` is the same), changes.COL
([old, new]), the whole after, before, row, data and changes ({col: [old, new]} of the columns the
change changed), db, table, op (c/u/d/r), operation (INSERT/UPDATE/DELETE/READ), event_id, ts_ms.

A `{` followed by a letter or `_` always starts a placeholder: one that is not closed, or is not one
of the above, is an error when the rules are loaded, never literal text sent to a plugin. Everything
is compiled once per rule; per change only the resolvers run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any, cast

import orjson

from schemas.row_change import OP_TO_OPERATION
from schemas.values import MAX_NESTING, deeper_than
from streams.conditions import equal

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[^{}]+)?)\}")
OPENING = re.compile(r"\{[A-Za-z_]")  # what starts a placeholder, closed or not
SCALARS = {"db", "table", "op", "operation", "event_id", "ts_ms"}
ROWS = {"after", "before", "row", "data", "changes"}  # whole values, and heads of {HEAD.COL}
KNOWN = f"after.COL, before.COL, row.COL, changes.COL, {', '.join(sorted(ROWS | SCALARS))}"

Resolver = Callable[[dict[str, Any]], Any]
Event = dict[str, Any]


class MappingError(ValueError):
    def __init__(self, key: str, reason: str):
        self.key = key
        super().__init__(f"{key}: {reason}")


def changed_columns(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, list[Any]]:
    """{col: [old, new]} of the columns whose value the change changed; a missing image (an insert's
    before, a delete's after) changed every column of the other from or to nothing (None)."""
    old, new = before or {}, after or {}
    out = {col: [old.get(col), value] for col, value in new.items() if col not in old or not equal(old[col], value)}
    out.update((col, [value, None]) for col, value in old.items() if col not in new)
    return out


def row_of(event: Event) -> dict[str, Any] | None:
    """The row a change is about: after it, or before it for a delete."""
    after = event.get("after")
    return after if after is not None else event.get("before")


def _whole(head: str) -> Resolver:
    if head in ("after", "before"):
        return lambda ev: ev.get(head)
    if head == "changes":
        return lambda ev: changed_columns(ev.get("before"), ev.get("after"))
    return row_of


def _resolver(ref: str, path: str) -> Resolver:
    head, dot, column = ref.partition(".")
    if ref in SCALARS:
        if ref == "operation":
            return lambda ev: OP_TO_OPERATION.get(ev.get("op", ""), "")
        if ref in ("db", "table"):
            return lambda ev: ev["source"][ref]
        return lambda ev: ev.get(ref)
    if head in ROWS and not dot:
        return _whole(head)
    if head in ("after", "before") and column:
        # The common case, read inline: a call of _whole's resolver per change costs ~0.1 us more.
        return lambda ev: (ev.get(head) or {}).get(column)
    if head in ROWS and column:
        whole = _whole(head)
        return lambda ev: (whole(ev) or {}).get(column)
    raise MappingError(path, f"unknown placeholder {{{ref}}} (use {KNOWN})")


def _pieces(template: str, path: str) -> list[str | tuple[str]]:
    """The template as literal text and (reference,) pieces; an unclosed or malformed one is an error."""
    pieces: list[str | tuple[str]] = []
    last = 0
    for opening in OPENING.finditer(template):
        start = opening.start()
        if start < last:
            continue  # inside the placeholder just read
        found = PLACEHOLDER.match(template, start)
        if found is None:
            close, reopen = template.find("}", start), template.find("{", start + 1)
            if close == -1 or -1 < reopen < close:
                text = template[start : reopen if reopen != -1 else len(template)]
                raise MappingError(path, f"unclosed placeholder {text!r} in {template!r}")
            raise MappingError(path, f"not a placeholder: {template[start : close + 1]!r} (use {KNOWN})")
        pieces += [template[last:start], (found.group(1),)]
        last = found.end()
    pieces.append(template[last:])
    return [p for p in pieces if p != ""]


def _as_text(value: Any) -> str:
    """The value inside a longer text; ValueError/RecursionError when it cannot be written (an int past
    4300 digits, nesting past the recursion limit)."""
    if value is None:
        return ""
    if isinstance(value, dict | list):
        try:
            return orjson.dumps(value).decode()
        except orjson.JSONEncodeError:  # nested past 254 levels or an integer past 64 bits: json writes those
            return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return str(value)


def _compile_string(template: str, path: str) -> Any:
    if "{" not in template:
        return template
    pieces = _pieces(template, path)
    if len(pieces) == 1 and isinstance(pieces[0], tuple):
        return _resolver(pieces[0][0], path)  # the whole value: keeps its type
    parts = [p if isinstance(p, str) else _resolver(p[0], path) for p in pieces]
    if all(isinstance(p, str) for p in parts):
        return "".join(cast(list[str], parts))  # all() does not narrow the list's type

    def fmt(event: Event) -> str:
        try:
            return "".join(p if isinstance(p, str) else _as_text(p(event)) for p in parts)
        except (ValueError, RecursionError) as e:
            raise MappingError(path, f"a value cannot be written into {template[:80]!r}: {str(e)[:120]}") from None

    return fmt


def _compile_value(template: Any, path: str) -> Any:
    """A constant (returned as is) or a function of the event (callable: config values never are)."""
    if isinstance(template, str):
        return _compile_string(template, path)
    if isinstance(template, dict):
        items = [(key, _compile_value(value, f"{path}.{key}")) for key, value in template.items()]
        if not any(callable(fn) for _, fn in items):
            return template
        return lambda ev: {key: (fn(ev) if callable(fn) else fn) for key, fn in items}
    if isinstance(template, list):
        values = [_compile_value(value, f"{path}[{i}]") for i, value in enumerate(template)]
        if not any(callable(fn) for fn in values):
            return template
        return lambda ev: [fn(ev) if callable(fn) else fn for fn in values]
    return template


def compile_params(params: dict[str, Any], path: str = "params") -> Callable[[Event], dict[str, Any]]:
    """Compile a params mapping into a function of the row-change envelope (a plain dict)."""
    _check_nesting(params, path)
    compiled = [(name, _compile_value(template, f"{path}.{name}")) for name, template in params.items()]
    if not any(callable(fn) for _, fn in compiled):
        constant = dict(params)
        return lambda event: constant

    def build(event: Event) -> dict[str, Any]:
        return {name: (fn(event) if callable(fn) else fn) for name, fn in compiled}

    return build


def column_references(template: Any, path: str = "params") -> Iterator[tuple[str, str]]:
    """(where, column) of every {HEAD.COL} placeholder in `template`, nested ones included, to check
    them against the table's columns; a malformed placeholder raises MappingError as compiling does."""
    _check_nesting(template, path)
    return _column_references(template, path)


def _column_references(template: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(template, str) and "{" in template:
        for piece in _pieces(template, path):
            if isinstance(piece, tuple):
                head, dot, column = piece[0].partition(".")
                if head in ROWS and dot and column:
                    yield path, column
    elif isinstance(template, dict):
        for key, value in template.items():
            yield from _column_references(value, f"{path}.{key}")
    elif isinstance(template, list):
        for i, value in enumerate(template):
            yield from _column_references(value, f"{path}[{i}]")


def _check_nesting(params: Any, path: str) -> None:
    """MappingError naming the parameter whose template nests lists/dicts past MAX_NESTING levels (what
    every part reads; compiling recurses per level), measured without recursing."""
    named = params.items() if isinstance(params, dict) else [(None, params)]
    for name, template in named:
        if deeper_than(template, MAX_NESTING):
            where = path if name is None else f"{path}.{name}"
            raise MappingError(where, f"nested more than {MAX_NESTING} levels deep")
