"""Pure matching: a row-change envelope (plain dict) + the rules -> the invocations it causes."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas.errors import ConfigError
from schemas.invocation import invocation_id_for
from schemas.row_change import OP_TO_OPERATION, OPERATION_TO_OP
from schemas.rules import Rule, RulesConfig
from streams.conditions import ConditionError, Predicate, compile_conditions
from streams.mapping import MappingError, compile_params


@dataclass
class CompiledRule:
    rule: Rule
    ops: frozenset[str]
    predicate: Predicate
    params: Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class PlannedInvocation:
    """What the app sends: kept as a dict so the hot path does not pay for model validation."""

    plugin: str
    invocation: dict[str, Any]
    debounce_ms: int | None = None  # set: the app holds it back (streams/debounce.py) instead of emitting


@dataclass
class Matcher:
    by_table: dict[tuple[str, str], list[CompiledRule]] = field(default_factory=dict)

    @classmethod
    def compile(cls, rules: RulesConfig, source: str = "config") -> "Matcher":
        problems: list[tuple[str, str]] = []
        by_table: dict[tuple[str, str], list[CompiledRule]] = {}
        for rule in rules.rules:
            if not rule.enabled:
                continue
            where = f"monitored_tables.{rule.table} (rule {rule.name})"
            try:
                compiled = CompiledRule(
                    rule=rule,
                    ops=frozenset(OPERATION_TO_OP[o] for o in rule.operations),
                    predicate=compile_conditions(rule.conditions),
                    params=compile_params(rule.params),
                )
            except (ConditionError, MappingError) as e:
                problems.append((where, str(e)))
                continue
            by_table.setdefault((rule.db, rule.table), []).append(compiled)
        if problems:
            raise ConfigError(source, problems)
        return cls(by_table)

    def match(self, event: dict[str, Any]) -> list[PlannedInvocation]:
        source = event["source"]
        rules = self.by_table.get((source["db"], source["table"]))
        if not rules:
            return []
        op = event["op"]
        before, after = event.get("before"), event.get("after")
        out: list[PlannedInvocation] = []
        for cr in rules:
            if op not in cr.ops or not cr.predicate(before, after):
                continue
            params = cr.params(event)
            rule = cr.rule
            for plugin in rule.triggers:
                out.append(PlannedInvocation(plugin, {
                    "invocation_id": invocation_id_for("cdc", rule.name, plugin, event["event_id"]),
                    "plugin": plugin,
                    "params": params,
                    "trigger": {"kind": "cdc", "rule": rule.name, "event_id": event["event_id"],
                                "table": f"{source['db']}.{source['table']}", "op": op},
                    "attempt": 1,
                    "priority": rule.priority,
                }, rule.debounce_ms))
        return out


@dataclass
class Explanation:
    rule: str
    matched: bool
    reason: str  # why not, or the invocations it yields


def explain(matcher: Matcher, rules: RulesConfig, event: dict[str, Any]) -> list[Explanation]:
    """For every rule on the event's table: does it match, and if not, which check failed."""
    from streams.conditions import explain as explain_conditions

    source = event["source"]
    op = event["op"]
    compiled = {cr.rule.name: cr for cr in matcher.by_table.get((source["db"], source["table"]), [])}
    out: list[Explanation] = []
    for rule in rules.rules:
        if (rule.db, rule.table) != (source["db"], source["table"]):
            continue
        cr = compiled.get(rule.name)
        if cr is None:
            out.append(Explanation(rule.name, False, "rule is disabled"))
        elif op not in cr.ops:
            out.append(Explanation(rule.name, False, f"operation {OP_TO_OPERATION.get(op, op)} not in "
                                                     f"{'/'.join(rule.operations)}"))
        elif not cr.predicate(event.get("before"), event.get("after")):
            reason = explain_conditions(rule.conditions, event.get("before"), event.get("after"))
            out.append(Explanation(rule.name, False, reason or "conditions do not hold"))
        else:
            params = cr.params(event)
            out.append(Explanation(rule.name, True, f"-> {', '.join(rule.triggers)} with params {params}"))
    return out
