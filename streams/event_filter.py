"""Filters of `replay` and `tail`: table, operation, plugin, rule, status and `--where` conditions.

A `--where` condition is `FIELD OP VALUE` with OP one of `= != > >= < <= ~` (~: regex search) and VALUE
read as a YAML scalar (`true`, `12`, `null`, `paid`, `'>1'`). It compiles to the rules' own condition
language (streams/conditions.py), so `after.is_valid=true` means on the command line what it means in a
rule: on a row change, a bare column is the row (after; before for a delete) and `before.`/`after.` pick
the image. On other events (invocations, results, dead letters) FIELD is a dotted path into the JSON,
e.g. `params.teacher_id=7` or `trigger.kind=schedule`.

Parsing is strict, as a filter read another way than meant hides or shows the wrong events without a
word: a VALUE that starts with an operator character (`after.id => 1`, `a <> b`, `a =~ x`) is an unknown
operator, not the text `> 1`; a VALUE YAML cannot read, or reads as a list, mapping, comment or NaN, is
refused; dates stay text (columns carry ISO text). `--status` and `--op` take the values of their lists.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, get_args

import yaml

from schemas.result import RunStatus
from schemas.row_change import OPERATION_TO_OP
from streams.conditions import ConditionError, Predicate, compile_conditions
from streams.events import EventFacts

WHERE = re.compile(r"^\s*([A-Za-z_][\w.\-]*)\s*(!=|>=|<=|==|=|>|<|~)\s*(.*?)\s*$", re.S)
OPERATOR_OF = {"=": None, "==": None, "!=": "ne", ">": "gt", ">=": "gte", "<": "lt", "<=": "lte", "~": "regex"}
OPERATOR_CHARS = frozenset("=!<>~")
EXPECTED = "FIELD OP VALUE with OP one of = != > >= < <= ~"
NULL_WORDS = frozenset({"null", "Null", "NULL"})
# The statuses a result or dead letter can have (schemas/result.py), and `pending`: an invocation
# whose run is not recorded yet.
STATUSES: tuple[str, ...] = tuple(dict.fromkeys((*get_args(RunStatus), "pending")))


class FilterError(ValueError):
    """A filter the user typed that cannot be understood; the message names it."""


def parse_where(text: str, option: str = "--where") -> dict[str, Any]:
    """One `--where` condition as a rules condition mapping; FilterError names what is wrong with it."""
    m = WHERE.match(text)
    if not m:
        raise FilterError(f"{option} {text!r}: expected {EXPECTED} (e.g. after.is_valid=true)")
    key, op, raw = m.groups()
    if raw[:1] in OPERATOR_CHARS:
        raise FilterError(
            f"{option} {text!r}: unknown operator {op + raw[:1]!r}: expected {EXPECTED}; "
            f"a value that starts with {raw[:1]!r} must be quoted (e.g. {key}{op}'{raw}')".replace("\n", "\\n")
        )
    # a pattern is text, whatever YAML makes of it
    value = raw if op == "~" else _value(raw, text, option)
    operator = OPERATOR_OF[op]
    if operator is None:
        return {key: {"is_null": True}} if value is None else {key: value}
    if operator == "ne" and value is None:
        return {key: {"is_null": False}}
    return {key: {operator: value}}


def _value(raw: str, text: str, option: str) -> Any:
    """VALUE as YAML reads it, when that is one plain value; FilterError for anything else."""
    if not raw:
        raise FilterError(f"{option} {text!r}: the value is missing (for the empty text write '')")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        reason = str(getattr(e, "problem", None) or "not YAML")
        raise FilterError(f"{option} {text!r}: value {raw!r} cannot be read ({reason}); quote it") from None
    except (RecursionError, ValueError):  # YAML's parser recurses per [ or {; int() of 4,300+ digits refuses
        raise FilterError(
            f"{option} {text[:80]!r}: value cannot be read (nested too deep or too long); quote it"
        ) from None
    if isinstance(value, date):
        return raw  # row changes carry dates as ISO text: compare text with text
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError(f"{option} {text!r}: value {raw!r} is not a finite number")
    if value is None and raw.strip() not in NULL_WORDS:
        raise FilterError(f"{option} {text!r}: value {raw!r} reads as nothing (a comment?); quote it")
    if not isinstance(value, str | int | float | bool | None):
        raise FilterError(
            f"{option} {text!r}: value {raw!r} reads as a {type(value).__name__}, not one value; quote it"
        )
    return value


def compile_where(conditions: Iterable[str], option: str = "--where") -> Predicate | None:
    specs = [parse_where(c, option) for c in conditions]
    if not specs:
        return None
    try:
        return compile_conditions({"all": specs} if len(specs) > 1 else specs[0], option)
    except ConditionError as e:
        raise FilterError(str(e)) from None


def flatten(value: Any, prefix: str = "", out: dict[str, Any] | None = None) -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a": {"b": 1}, "a.b": 1}: every dotted path as a column."""
    out = {} if out is None else out
    if isinstance(value, dict):
        for k, v in value.items():
            path = f"{prefix}.{k}" if prefix else str(k)
            out[path] = v
            flatten(v, path, out)
    return out


def normalise_ops(ops: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for item in ops:
        for op in item.split(","):
            op = op.strip()
            if not op:
                continue
            if op.upper() in OPERATION_TO_OP:
                out.add(OPERATION_TO_OP[op.upper()])
            elif op.lower() in ("c", "u", "d", "r"):
                out.add(op.lower())
            else:
                raise FilterError(f"--op {op!r}: expected INSERT, UPDATE, DELETE, READ or c, u, d, r")
    return frozenset(out)


def _split(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip() for item in values for v in item.split(",") if v.strip())


def normalise_statuses(values: Iterable[str]) -> frozenset[str]:
    """`--status` values, each one of STATUSES: an unknown one would hide every event without a word."""
    statuses = _split(values)
    for status in sorted(statuses):
        if status not in STATUSES:
            raise FilterError(f"--status {status!r}: expected one of {', '.join(STATUSES)}")
    return statuses


@dataclass
class EventFilter:
    tables: frozenset[str] = frozenset()
    ops: frozenset[str] = frozenset()
    plugins: frozenset[str] = frozenset()
    rules: frozenset[str] = frozenset()
    statuses: frozenset[str] = frozenset()
    where: list[str] = field(default_factory=list)
    _predicate: Predicate | None = None
    # invocation id -> status of its recorded run (None: no result yet), for --status on invocations
    status_lookup: Callable[[str], str | None] | None = None

    @classmethod
    def build(
        cls,
        tables: Iterable[str] = (),
        ops: Iterable[str] = (),
        plugins: Iterable[str] = (),
        rules: Iterable[str] = (),
        statuses: Iterable[str] = (),
        where: Iterable[str] = (),
        where_option: str = "--where",
    ) -> EventFilter:
        where = list(where)
        return cls(
            _split(tables),
            normalise_ops(ops),
            _split(plugins),
            _split(rules),
            normalise_statuses(statuses),
            where,
            compile_where(where, where_option),
        )

    def describe(self) -> dict[str, Any]:
        """The filter as plain data (part of a replay's identity)."""
        return {
            "tables": sorted(self.tables),
            "ops": sorted(self.ops),
            "plugins": sorted(self.plugins),
            "rules": sorted(self.rules),
            "statuses": sorted(self.statuses),
            "where": self.where,
        }

    @property
    def selects_all(self) -> bool:
        """No filter given: every event passes."""
        return not (self.tables or self.ops or self.plugins or self.rules or self.statuses or self._predicate)

    def table_matches(self, table: str | None) -> bool:
        if not self.tables:
            return True
        if table is None:
            return False
        return table in self.tables or table.rpartition(".")[2] in self.tables

    def accepts(self, f: EventFacts, *, check_plugin_rule: bool = True) -> bool:
        """Every given filter holds. `check_plugin_rule=False`: a row change's plugin and rule are
        known only after matching, so the caller checks them on the planned invocations."""
        if not self.table_matches(f.table):
            return False
        if self.ops and f.op not in self.ops:
            return False
        if check_plugin_rule:
            if self.plugins and f.plugin not in self.plugins:
                return False
            if self.rules and f.rule not in self.rules:
                return False
        if self.statuses and f.kind == "invocation" and f.status is None and f.invocation_id and self.status_lookup:
            f.status = self.status_lookup(f.invocation_id) or "pending"
        if self.statuses and f.status not in self.statuses:
            return False
        if self._predicate is not None:
            if f.kind == "row_change":
                return self._predicate(f.value.get("before"), f.value.get("after"))
            return self._predicate(None, flatten(f.value) if isinstance(f.value, dict) else {})
        return True
