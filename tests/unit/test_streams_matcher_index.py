"""The matcher's indexes only narrow which rules are evaluated: over random rules and events, the
indexed match yields exactly what evaluating every rule yields, in the rules file's order."""

from __future__ import annotations

import random
from typing import Any

from schemas.config import parse_rules
from schemas.invocation import invocation_id_for
from streams.matcher import Matcher, cdc_invocation_id

VALUES: list[Any] = [
    "paid",
    "new",
    "12",
    "12.0",
    "1",
    "",
    "x y",
    12,
    12.0,
    1,
    0,
    -3,
    2.5,
    True,
    False,
    None,
    [1, 2],
    {"a": 1},
    "1e3",
    1000,
    "nan",
]
COLUMNS = ["status", "amount", "flag", "note"]


def random_condition(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for _ in range(rng.randint(1, 3)):
        column = rng.choice(COLUMNS)
        key = rng.choice(["", "after.", "before."]) + column
        kind = rng.randrange(9 if depth < 2 else 7)
        if kind == 0:
            out[key] = rng.choice([v for v in VALUES if not isinstance(v, (list, dict))])
        elif kind == 1:
            out[key] = {"eq": rng.choice(["paid", "new", "12", 12])}
        elif kind == 2:
            bounds = {}
            for op in rng.sample(["gt", "gte", "lt", "lte"], rng.randint(1, 2)):
                bounds[op] = rng.choice([0, 1, 12, 2.5, -3, 1000, "12", "m"])
            out[key] = bounds
        elif kind == 3:
            out[key] = {rng.choice(["in", "not_in"]): rng.sample(["paid", "new", 12, "12", 1, True], 2)}
        elif kind == 4:
            out[key] = {"is_null": rng.choice([True, False])}
        elif kind == 5:
            out[column] = {"changed": rng.choice([True, False])}
        elif kind == 6:
            out[key] = {"ne": rng.choice(["paid", 12, None])}
        elif kind == 7:
            out[rng.choice(["any", "all"])] = [random_condition(rng, depth + 1) for _ in range(2)]
        else:
            out["not"] = random_condition(rng, depth + 1)
    return out


def random_row(rng: random.Random) -> dict[str, Any] | None:
    if rng.random() < 0.15:
        return None
    return {c: rng.choice(VALUES) for c in COLUMNS if rng.random() < 0.85}


def brute_force(matcher: Matcher, event: dict[str, Any]) -> list[str]:
    out = []
    for cr in matcher.by_table.get((event["source"]["db"], event["source"]["table"]), []):
        if event["op"] in cr.ops and cr.predicate(event.get("before"), event.get("after")):
            out += [invocation_id_for("cdc", cr.rule.name, plugin, event["event_id"]) for plugin in cr.rule.triggers]
    return out


def test_indexed_match_equals_evaluating_every_rule() -> None:
    rng = random.Random(4)
    compared = matched = 0
    for round_ in range(40):
        specs = [
            {
                "name": f"r{i}",
                "triggers": ["echo", "other"][: rng.randint(1, 2)],
                "operations": rng.sample(["INSERT", "UPDATE", "DELETE"], rng.randint(1, 3)),
                "conditions": random_condition(rng),
            }
            for i in range(rng.randint(1, 30))
        ]
        matcher = Matcher.compile(parse_rules({"monitored_tables": {"orders": specs}}, "test.yaml", "db"))
        for n in range(300):
            event = {
                "op": rng.choice(["c", "u", "d"]),
                "before": random_row(rng),
                "after": random_row(rng),
                "event_id": f"1:mysql-bin.000001:{round_ * 1000 + n}:0",
                "source": {"db": "db", "table": "orders"},
            }
            got = [p.invocation["invocation_id"] for p in matcher.match(event)]
            assert got == brute_force(matcher, event), (specs, event)
            compared += 1
            matched += bool(got)
    assert matched > compared // 10  # the random rules do match, so the comparison means something


def test_cdc_invocation_id_is_invocation_id_for() -> None:
    rng = random.Random(7)
    for n in range(2000):
        rule, plugin = f"rule_{rng.random()}", rng.choice(["echo", "données", "a\x1fb"])
        event_id = f"{rng.randint(1, 9)}:mysql-bin.{n:06d}:{rng.randint(0, 10**9)}:{rng.randint(0, 9)}"
        assert cdc_invocation_id(rule, plugin, event_id) == invocation_id_for("cdc", rule, plugin, event_id)
