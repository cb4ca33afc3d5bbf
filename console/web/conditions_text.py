"""A rule's conditions in words, for the Rules page: `{status: paid, amount: {gt: 100}}` reads
`status = "paid" and amount > 100` (the shapes of streams/conditions.py: column entries with
operators, and the combinators all / any / not)."""

from __future__ import annotations

import json
from typing import Any

_SYMBOLS = {"eq": "=", "ne": "≠", "gt": ">", "gte": "≥", "lt": "<", "lte": "≤"}


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _operator(column: str, op: str, arg: Any) -> str:
    if op in _SYMBOLS:
        return f"{column} {_SYMBOLS[op]} {_value(arg)}"
    if op in ("in", "not_in"):
        items = ", ".join(_value(a) for a in arg) if isinstance(arg, list) else _value(arg)
        return f"{column} {'in' if op == 'in' else 'not in'} ({items})"
    if op == "is_null":
        return f"{column} is {'' if arg else 'not '}null"
    if op == "changed":
        return f"{column} {'changed' if arg else 'unchanged'}"
    return f"{column} {op.replace('_', ' ')} {_value(arg)}"


def describe(spec: Any) -> str:
    """The conditions as one readable expression ('always' when there are none)."""
    if not spec:
        return "always"
    if isinstance(spec, list):
        return " and ".join(describe(s) for s in spec)
    if not isinstance(spec, dict):
        return _value(spec)
    parts = [_entry(key, value) for key, value in spec.items()]
    return " and ".join(parts)


def _entry(key: str, value: Any) -> str:
    if key == "all":
        return "(" + " and ".join(describe(v) for v in value) + ")" if isinstance(value, list) else describe(value)
    if key == "any":
        items = value if isinstance(value, list) else [value]
        return "(" + " or ".join(describe(v) for v in items) + ")"
    if key == "not":
        return f"not ({describe(value)})"
    if isinstance(value, dict) and value and all(isinstance(k, str) for k in value):
        return " and ".join(_operator(key, op, arg) for op, arg in value.items())
    return f"{key} = {_value(value)}"
