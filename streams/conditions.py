"""Rule conditions compiled once into plain predicates over (before, after).

Shape (YAML/JSON), as in the original design plus operators:
    conditions:
      is_valid: true                  # equality on the row (after; before for a DELETE)
      status: {in: [paid, shipped]}   # operators: eq ne in not_in gt gte lt lte is_null like regex changed
      before.status: {ne: paid}       # `before.` / `after.` pick the image explicitly
      any: [{country: CN}, {vip: true}]
      not: {deleted_at: {is_null: false}}
Entries of one mapping must all hold (an implicit `all`).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from typing import Any

from schemas.values import shown

Row = dict[str, Any] | None
Predicate = Callable[[Row, Row], bool]
Getter = Callable[[Row, Row], Any]

OPERATORS = frozenset({"eq", "ne", "in", "not_in", "gt", "gte", "lt", "lte", "is_null", "like", "regex", "changed"})
COMBINATORS = frozenset({"all", "any", "not"})
_MISSING = object()


class ConditionError(ValueError):
    """A condition that cannot be compiled; `key` is the dotted path inside `conditions`."""

    def __init__(self, key: str, reason: str):
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


def compile_conditions(spec: dict[str, Any] | None, path: str = "conditions") -> Predicate:
    if not spec:
        return lambda before, after: True
    if not isinstance(spec, dict):
        raise ConditionError(path, "must be a mapping")
    preds = [_compile_entry(key, value, f"{path}.{key}") for key, value in spec.items()]
    if len(preds) == 1:
        return preds[0]
    return lambda before, after: all(p(before, after) for p in preds)


def exact_string_conjuncts(spec: dict[str, Any] | None) -> list[tuple[str, str, str]]:
    """(side, column, value) of the top-level conditions that require a column to equal a
    non-numeric string. Such a condition holds exactly when the column's value == the string (see
    _eq), so a matcher may look rules up by that value instead of evaluating each of them."""
    out = []
    for key, value in (spec or {}).items():
        if key in COMBINATORS:
            continue
        if isinstance(value, dict) and set(value) == {"eq"}:
            value = value["eq"]
        if isinstance(value, str) and _number(value) is None:
            side, column = _parse_ref(key, key)
            out.append((side, column, value))
    return out


def numeric_ranges(spec: dict[str, Any] | None) -> list[tuple[str, str, float, float]]:
    """(side, column, low, high) of the top-level conditions that bound a column by numbers
    (gt/gte/lt/lte; a missing bound is -inf/inf). Such a condition can only hold for a value whose
    number (see _number) is within [low, high], so a matcher may look rules up by that number."""
    out = []
    for key, value in (spec or {}).items():
        if key in COMBINATORS or not isinstance(value, dict) or not value or not set(value) <= OPERATORS:
            continue
        low, high = float("-inf"), float("inf")
        for op, arg in value.items():
            if op in ("gt", "gte", "lt", "lte") and isinstance(arg, (int, float)) and not isinstance(arg, bool):
                bound = _integral(arg)
                if op in ("gt", "gte"):
                    low = max(low, bound)
                else:
                    high = min(high, bound)
        if (low, high) != (float("-inf"), float("inf")):
            side, column = _parse_ref(key, key)
            out.append((side, column, low, high))
    return out


def as_number(value: Any) -> float | None:
    """A column value as the number ordered comparisons use (None: not a number)."""
    return _number(value)


def _compile_entry(key: str, value: Any, path: str) -> Predicate:
    if key in COMBINATORS:
        return _compile_combinator(key, value, path)
    side, column = _parse_ref(key, path)
    getter = _getter(side, column)
    if isinstance(value, dict) and value and set(value) <= OPERATORS:
        tests = [_compile_operator(op, arg, side, column, f"{path}.{op}") for op, arg in value.items()]
        if len(tests) == 1:
            return tests[0]
        return lambda before, after: all(t(before, after) for t in tests)
    if isinstance(value, dict):
        unknown = sorted(set(value) - OPERATORS)
        raise ConditionError(path, f"unknown operator(s) {', '.join(unknown)} (known: {', '.join(sorted(OPERATORS))})")
    return lambda before, after: _eq(getter(before, after), value)


def _compile_combinator(key: str, value: Any, path: str) -> Predicate:
    if key == "not":
        inner = compile_conditions(value, path)
        return lambda before, after: not inner(before, after)
    if not isinstance(value, list) or not value:
        raise ConditionError(path, f"`{key}` takes a non-empty list of condition mappings")
    parts = [compile_conditions(v, f"{path}[{i}]") for i, v in enumerate(value)]
    combine = all if key == "all" else any
    return lambda before, after: combine(p(before, after) for p in parts)


def _parse_ref(key: str, path: str) -> tuple[str, str]:
    side, dot, column = key.partition(".")
    if dot and side in ("before", "after"):
        if not column:
            raise ConditionError(path, "missing column name")
        return side, column
    return "row", key


def _getter(side: str, column: str) -> Getter:
    if side == "after":
        return lambda before, after: after.get(column, _MISSING) if after is not None else _MISSING
    if side == "before":
        return lambda before, after: before.get(column, _MISSING) if before is not None else _MISSING
    # "row": the row as it is now, or as it was for a delete.
    return lambda before, after: (after if after is not None else (before or {})).get(column, _MISSING)


def _compile_operator(op: str, arg: Any, side: str, column: str, path: str) -> Predicate:
    build = _OPERATOR_BUILDERS.get(op)
    if build is None:
        raise ConditionError(path, f"unknown operator {op!r}")
    return build(op, arg, _getter(side, column), column, path)


def _op_eq(op: str, arg: Any, get: Getter, column: str, path: str) -> Predicate:
    return lambda b, a: _eq(get(b, a), arg)


def _op_ne(op: str, arg: Any, get: Getter, column: str, path: str) -> Predicate:
    return lambda b, a: (v := get(b, a)) is not _MISSING and not _eq(v, arg)


def _op_in(op: str, arg: Any, get: Getter, column: str, path: str) -> Predicate:
    if not isinstance(arg, list):
        raise ConditionError(path, f"`{op}` takes a list")
    if op == "in":
        return lambda b, a: any(_eq(get(b, a), x) for x in arg)
    return lambda b, a: (v := get(b, a)) is not _MISSING and not any(_eq(v, x) for x in arg)


def _op_ordered(op: str, arg: Any, get: Getter, column: str, path: str) -> Predicate:
    if isinstance(arg, bool) or not isinstance(arg, (int, float, str)):
        raise ConditionError(path, f"`{op}` takes a number or a string")
    compare = _COMPARISONS[op]
    return lambda b, a: _ordered(get(b, a), arg, compare)


def _op_is_null(op: str, arg: Any, get: Getter, column: str, path: str) -> Predicate:
    if not isinstance(arg, bool):
        raise ConditionError(path, "`is_null` takes true or false")
    return lambda b, a: ((v := get(b, a)) is None or v is _MISSING) == arg


def _op_pattern(op: str, arg: Any, get: Getter, column: str, path: str) -> Predicate:
    if not isinstance(arg, str):
        raise ConditionError(path, f"`{op}` takes a string pattern")
    try:
        pattern = re.compile(_like_to_regex(arg) if op == "like" else arg, re.S)
    except re.error as e:
        raise ConditionError(path, f"invalid pattern: {e}") from None
    match = pattern.fullmatch if op == "like" else pattern.search
    return lambda b, a: isinstance(v := get(b, a), str) and match(v) is not None


def _op_changed(op: str, arg: Any, get: Getter, column: str, path: str) -> Predicate:
    if not isinstance(arg, bool):
        raise ConditionError(path, "`changed` takes true or false")
    expected: bool = arg

    def changed(b: Row, a: Row) -> bool:
        # An insert or delete changes every column; an update only those that differ.
        if b is None or a is None:
            return expected
        was, now = b.get(column, _MISSING), a.get(column, _MISSING)
        try:
            differs: bool = was != now
        except RecursionError:  # a JSON column nested past the recursion limit (orjson reads 1,024 levels)
            differs = not _equal_iteratively(was, now)
        return differs == expected

    return changed


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
# operator -> its compiler (the argument checked, the predicate built); OPERATORS lists the same names
_OPERATOR_BUILDERS: dict[str, Callable[[str, Any, Getter, str, str], Predicate]] = {
    "eq": _op_eq,
    "ne": _op_ne,
    "in": _op_in,
    "not_in": _op_in,
    **dict.fromkeys(_COMPARISONS, _op_ordered),
    "is_null": _op_is_null,
    "like": _op_pattern,
    "regex": _op_pattern,
    "changed": _op_changed,
}


def _eq(value: Any, expected: Any) -> bool:
    if value is _MISSING:
        return False
    try:
        if value == expected:
            return True
    except RecursionError:  # containers nested past the recursion limit: never numbers (below)
        return _equal_iteratively(value, expected)
    if isinstance(value, str) and isinstance(expected, str):
        return False  # two different strings: never numerically equal (below), and no float() parse
    # DECIMALs arrive as strings and booleans as TINYINT: compare numerically when one side is numeric.
    num_v, num_e = _number(value), _number(expected)
    return (
        num_v is not None
        and num_e is not None
        and num_v == num_e
        and not (isinstance(value, str) and isinstance(expected, str))
    )


def equal(a: Any, b: Any) -> bool:
    """a == b, also for values nested past the recursion limit (see _equal_iteratively)."""
    try:
        return bool(a == b)
    except RecursionError:
        return _equal_iteratively(a, b)


def _equal_iteratively(a: Any, b: Any) -> bool:
    """a == b for values nested past the recursion limit, where == raises RecursionError: compared
    level by level, without recursing."""
    pairs = [(a, b)]
    while pairs:
        x, y = pairs.pop()
        if type(x) is list and type(y) is list:
            if len(x) != len(y):
                return False
            pairs.extend(zip(x, y, strict=True))
        elif type(x) is dict and type(y) is dict:
            if x.keys() != y.keys():
                return False
            pairs.extend((x[k], y[k]) for k in x)
        elif type(x) in (list, dict) or type(y) in (list, dict) or not (x is y or x == y):
            return False  # as == on containers: an item is equal when it is the same object or ==
    return True


def _ordered(value: Any, arg: Any, compare: Callable[[Any, Any], bool]) -> bool:
    if value is _MISSING or value is None:
        return False
    if type(value) is int and type(arg) is int:
        return compare(value, arg)  # the common case, without two float() conversions
    nv, na = _number(value), _number(arg)
    if nv is not None and na is not None:
        return compare(nv, na)
    # Non-numeric strings (dates in ISO form, names) compare as text.
    return isinstance(arg, str) and isinstance(value, str) and compare(value, arg)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return _integral(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _integral(value: float) -> float:
    """float(value), or an integer past float's range as it is: float() of it raises OverflowError, and
    Python compares an int with a float exactly (10**400 > 1e308, != inf), so it still orders right."""
    try:
        return float(value)
    except OverflowError:
        return value


def _like_to_regex(pattern: str) -> str:
    out = []
    escaped = False
    for ch in pattern:
        if escaped:
            out.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "%":
            out.append(".*")
        elif ch == "_":
            out.append(".")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def explain(spec: dict[str, Any] | None, before: Row, after: Row, path: str = "conditions") -> str | None:
    """None when `spec` holds for (before, after); otherwise why not: the failing key and the value seen.

    For `rules explain` only: it walks the spec and compiles leaves again on every call, so the hot
    path (compile_conditions' closures) pays nothing for it.
    """
    if not spec:
        return None
    for key, value in spec.items():
        where = f"{path}.{key}"
        if key == "not":
            if explain(value, before, after, where) is None:
                return f"{where}: the negated condition holds"
        elif key in ("all", "any"):
            reasons = [explain(v, before, after, f"{where}[{i}]") for i, v in enumerate(value)]
            failed = [r for r in reasons if r is not None]
            if key == "all" and failed:
                return failed[0]
            if key == "any" and len(failed) == len(reasons):
                return f"{where}: none holds ({'; '.join(failed)})"
        else:
            side, column = _parse_ref(key, where)
            seen = _getter(side, column)(before, after)
            seen_text = "(missing)" if seen is _MISSING else shown(seen)
            tests = value.items() if isinstance(value, dict) and value and set(value) <= OPERATORS else [("eq", value)]
            for op, arg in tests:
                if not _compile_operator(op, arg, side, column, f"{where}.{op}")(before, after):
                    if op == "changed":
                        was = "(missing)" if before is None else shown(before.get(column, "(missing)"))
                        return f"{where}.changed: expected {arg}, {column} was {was}, is {seen_text}"
                    return f"{where}.{op}: expected {op} {shown(arg)}, {side}.{column} is {seen_text}"
    return None
