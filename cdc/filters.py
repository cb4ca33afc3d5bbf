"""Which tables the reader (and a snapshot without TABLE arguments) selects.

Selected = (the tables the rules monitor ∪ tables matching a `cdc.include` glob) − tables matching a
`cdc.exclude` glob. Exclude wins over include. A table a rule monitors may not be excluded: that
rule would never fire, a silent loss, so it is a configuration error naming rule table and pattern.

Patterns are `db.table` shell globs (fnmatch, case-sensitive like table names on Linux), e.g.
`cdcflow_demo.*`, `shop.order_*`, `*.audit_log`.

mysql-replication decides per row event, before decoding its rows, from `only_schemas` and
`only_tables` (checked separately, by membership). Matcher objects are given there, so a row event
whose schema or table name no rule/include can match is skipped undecoded. What passes that coarse
test (an excluded table whose name an include pattern matches) is dropped by the exact check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from fnmatch import fnmatchcase
from typing import Any

import pymysql

log = logging.getLogger(__name__)

Table = tuple[str, str]


class FilterError(ValueError):
    """A pattern or the combination of patterns and rules cannot be used."""


def parse_pattern(pattern: str, where: str = "table pattern") -> Table:
    db, dot, table = pattern.partition(".")
    if not dot or not db or not table:
        raise FilterError(f"{where}: table pattern {pattern!r}: expected 'db.table' (globs allowed, e.g. 'shop.*')")
    return db, table


class _NameMatcher:
    """`name in matcher` for one part (schema or table) of a set of patterns; what the library can test."""

    def __init__(self, exact: Iterable[str], globs: Iterable[str]):
        self._exact = frozenset(exact)
        self._globs = tuple(globs)
        self._cache: dict[object, bool] = {}  # keyed by what the library asks about (names, in practice)

    def __contains__(self, name: object) -> bool:
        hit = self._cache.get(name)
        if hit is None:
            hit = self._cache[name] = name in self._exact or any(fnmatchcase(str(name), g) for g in self._globs)
        return hit


class TableSelection:
    """A set-like view of the selected tables: `(db, table) in selection`, iteration over those known.

    Known = rule tables plus existing tables an include pattern matched at `resolve()`. A table
    created later that an include pattern matches is selected on its first row event, and
    `on_new_table` is told (the reader creates its topic then).
    """

    def __init__(
        self,
        rule_tables: Iterable[Table],
        include: Iterable[str] = (),
        exclude: Iterable[str] = (),
        on_new_table: Callable[[str, str], None] | None = None,
    ):
        self.rule_tables = frozenset(rule_tables)
        self.include = tuple(include)
        self.exclude = tuple(exclude)
        self._include_parts = [parse_pattern(p, "cdc.include") for p in self.include]
        self._exclude_parts = [parse_pattern(p, "cdc.exclude") for p in self.exclude]
        for db, table in sorted(self.rule_tables):
            pattern = self.excluded_by(db, table)
            if pattern is not None:
                raise FilterError(
                    f"cdc.exclude pattern {pattern!r} excludes {db}.{table}, which a rule monitors: "
                    "remove the pattern or disable the rule"
                )
        self.on_new_table = on_new_table
        self._known: set[Table] = set(self.rule_tables)
        # keyed by what `in` is asked about ((db, table) in practice), so the hot path looks up as given
        self._decided: dict[object, bool] = {t: True for t in self.rule_tables}

    def excluded_by(self, db: str, table: str) -> str | None:
        for pattern, (pdb, ptable) in zip(self.exclude, self._exclude_parts, strict=True):
            if fnmatchcase(db, pdb) and fnmatchcase(table, ptable):
                return pattern
        return None

    def selects(self, db: str, table: str) -> bool:
        if self.excluded_by(db, table) is not None:
            return False
        return (db, table) in self.rule_tables or any(
            fnmatchcase(db, pdb) and fnmatchcase(table, ptable) for pdb, ptable in self._include_parts
        )

    def __contains__(self, key: object) -> bool:
        decided = self._decided.get(key)
        if decided is None:
            decided = self._decided[key] = self._decide(key)
        return decided

    def _decide(self, key: object) -> bool:
        """First time a table is asked about: is it selected? A newly selected one becomes known."""
        if not (isinstance(key, tuple) and len(key) == 2 and all(isinstance(part, str) for part in key)):
            return False  # not a (db, table) name pair: no table of ours
        db, table = key
        if not self.selects(db, table):
            return False
        if (db, table) not in self._known:
            self._known.add((db, table))
            log.info("table %s.%s matches cdc.include: now watched", db, table)
            if self.on_new_table is not None:
                self.on_new_table(db, table)
        return True

    def __iter__(self) -> Iterator[Table]:
        return iter(sorted(self._known))

    def __len__(self) -> int:
        return len(self._known)

    def __bool__(self) -> bool:
        return bool(self._known or self.include)

    def resolve(self, connection_settings: dict[str, Any]) -> None:
        """Add the existing tables the include patterns match (so their topics exist before streaming)."""
        if not self.include:
            return
        conn = pymysql.connect(**connection_settings)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT TABLE_SCHEMA, TABLE_NAME FROM information_schema.TABLES "
                    "WHERE TABLE_TYPE = 'BASE TABLE' "
                    "AND TABLE_SCHEMA NOT IN ('mysql', 'information_schema', 'performance_schema', 'sys')"
                )
                for db, table in cur.fetchall():
                    if self.selects(db, table):
                        self._known.add((db, table))
                        self._decided[(db, table)] = True
        finally:
            conn.close()

    def library_filters(self) -> dict[str, Any]:
        """only_schemas/only_tables for BinLogStreamReader: skip undecodable-by-us row events early."""
        if not self.rule_tables and not self.include:
            return {}
        parts = [*self.rule_tables, *self._include_parts]
        return {
            "only_schemas": _NameMatcher(
                (d for d, _ in parts if not _is_glob(d)), (d for d, _ in parts if _is_glob(d))
            ),
            "only_tables": _NameMatcher((t for _, t in parts if not _is_glob(t)), (t for _, t in parts if _is_glob(t))),
        }


def _is_glob(part: str) -> bool:
    return any(c in part for c in "*?[")


def selection_for(
    rules_tables: Iterable[Table], cdc_settings: Any, on_new_table: Callable[[str, str], None] | None = None
) -> TableSelection:
    return TableSelection(rules_tables, cdc_settings.include, cdc_settings.exclude, on_new_table)


def nothing_to_read(rules_tables: Iterable[Table], cdc_settings: Any) -> str | None:
    """Why the reader would have nothing to read (it refuses to start then), or None."""
    if any(True for _ in rules_tables) or cdc_settings.include:
        return None
    return "no monitored_tables and no cdc.include in the config: nothing to read"


def selection_problems(rules_tables: Iterable[Table], cdc_settings: Any) -> list[tuple[str, str]]:
    """What the reader refuses at start about its tables, as (key, reason): the same checks, made by
    building the selection it builds (a bad pattern, an exclude pattern covering a monitored table)."""
    tables = list(rules_tables)
    if (why := nothing_to_read(tables, cdc_settings)) is not None:
        return [
            (
                "cdc",
                f"{why}: the reader, which `cdcflow run` starts, refuses to start "
                "(schedules only? run `cdcflow run --only streams --only runners`)",
            )
        ]
    try:
        selection_for(tables, cdc_settings)
    except FilterError as e:
        key = "cdc.include" if str(e).startswith("cdc.include") else "cdc.exclude"
        return [(key, str(e))]
    return []
