"""Rules and schedules checked against the plugins they name (their plugin.json), and against the
tables' columns when those are known.

A rule or schedule naming an unknown plugin, or giving a plugin a parameter it does not declare,
is an error; so is a rule that gives a plugin params (its own or the rule's) but leaves a required
one (without default) out. A rule that gives a plugin no params binds them by name
(streams/binding.py): a required one that is neither a change value nor, when the table's columns
are known, a column is an error. {after.COL} placeholders must name columns of the table, when known.
A schedule's params are literal values, so they are validated fully (types included) by the
manifest. Problems are `(key, reason)` pairs for ConfigError, so the message names the file,
the rule and the key.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path

from schemas.config import Config
from schemas.errors import ConfigError
from schemas.manifest import ParamError, PluginManifest
from schemas.rules import Rule, RulesConfig
from streams.binding import CHANGE_VALUES, unbindable
from streams.mapping import MappingError, column_references
from streams.matcher import Matcher

Problems = list[tuple[str, str]]
ColumnsOf = Callable[[str, str], Collection[str] | None]  # (db, table) -> its columns; None: unknown


def rule_where(table: str, name: str) -> str:
    return f"monitored_tables.{table} (rule {name})"


def _trigger_problems(rule: Rule, i: int, manifest: PluginManifest, columns: Collection[str] | None) -> Problems:
    """Problems of the params `rule` gives its trigger i (the plugin of `manifest`)."""
    where, plugin = rule_where(rule.table, rule.name), manifest.name
    declared = manifest.parameters
    params = rule.params_for(plugin)
    own = rule.trigger_settings.get(plugin)
    problems: Problems = []
    if not params:
        known = f"a column of {rule.qualified_table} nor " if columns is not None else ""
        for pname in unbindable(declared, columns):
            problems.append(
                (
                    f"{where}.triggers[{i}]",
                    f"plugin {plugin} requires parameter {pname!r}, which the rule does not give and which is "
                    f"neither {known}one of {', '.join(sorted(CHANGE_VALUES))}: give it in params",
                )
            )
        return problems
    for pname in params:
        if pname not in declared:
            key = f"triggers[{i}].params.{pname}" if own is not None and pname in own.params else f"params.{pname}"
            problems.append(
                (
                    f"{where}.{key}",
                    f"plugin {plugin} does not declare parameter "
                    f"{pname!r} (declared: {', '.join(sorted(declared)) or 'none'})",
                )
            )
    for pname, spec in declared.items():
        if spec.required and spec.default is None and pname not in params:
            key = f"triggers[{i}].params" if own is not None and own.params else "params"
            problems.append(
                (f"{where}.{key}", f"plugin {plugin} requires parameter {pname!r}, which the rule does not map")
            )
    return problems


def _column_problems(rule: Rule, columns: Collection[str]) -> Problems:
    """{after.COL} placeholders (rule and trigger params, nested ones too) naming no column of the table."""
    where = rule_where(rule.table, rule.name)
    templates = [("params", rule.params)]
    templates += [(f"triggers[{rule.triggers.index(p)}].params", s.params) for p, s in rule.trigger_settings.items()]
    problems: Problems = []
    for path, params in templates:
        try:
            refs = list(column_references(params, path))
        except MappingError:
            continue  # a malformed placeholder: reported by the compile already
        problems += [
            (f"{where}.{at}", f"no column {column!r} in {rule.qualified_table} (columns: {', '.join(sorted(columns))})")
            for at, column in refs
            if column not in columns
        ]
    return problems


def check_against_plugins(
    rules: RulesConfig,
    manifests: Mapping[str, PluginManifest],
    load_problems: Mapping[str, str] | None = None,
    columns: ColumnsOf | None = None,
) -> Problems:
    """Every problem of `rules` against `manifests` (plugin name -> manifest), and against the tables'
    columns when `columns` knows them.

    `load_problems` (plugin folder -> why it failed to load) is quoted when a name is unknown, as the
    plugin may exist but have a broken plugin.json.
    """
    problems: Problems = []
    known = ", ".join(sorted(manifests)) or "none"
    hint = ""
    if load_problems:
        hint = "; plugins that failed to load: " + "; ".join(f"{k}: {v}" for k, v in sorted(load_problems.items()))

    def unknown(key: str, plugin: str) -> None:
        problems.append((key, f"unknown plugin {plugin!r} (known: {known}){hint}"))

    for rule in rules.rules:
        table_columns = columns(rule.db, rule.table) if columns is not None and rule.enabled else None
        if table_columns is not None:
            problems += _column_problems(rule, table_columns)
        for i, plugin in enumerate(rule.triggers):
            manifest = manifests.get(plugin)
            if manifest is None:
                unknown(f"{rule_where(rule.table, rule.name)}.triggers[{i}]", plugin)
                continue
            problems += _trigger_problems(rule, i, manifest, table_columns)
    for schedule in rules.schedules:
        where = f"schedules.{schedule.name}"
        manifest = manifests.get(schedule.plugin)
        if manifest is None:
            unknown(f"{where}.plugin", schedule.plugin)
            continue
        try:
            manifest.validate_params(schedule.params)
        except ParamError as e:
            problems.extend((f"{where}.params.{key}", reason) for key, reason in e.problems)
    return problems


def discover_manifests(plugin_dirs: Iterable[Path]) -> tuple[dict[str, PluginManifest], dict[str, str]]:
    """(name -> manifest, folder -> load problem) of the plugins in `plugin_dirs` (read-only)."""
    from plugins.registry import discover

    found = discover(plugin_dirs)
    return (
        {name: p.manifest for name, p in found.plugins.items()},
        {str(pr.path): pr.message for pr in found.problems},
    )


def validated_matcher(config: Config, columns: ColumnsOf | None = None) -> Matcher:
    """The compiled rules, after checking them and the schedules against the plugins (and against
    the tables' columns, when `columns` is given: streams/table_columns.py reads them).

    Raises ConfigError with every problem (bad conditions or mappings, unknown plugins, undeclared
    or missing parameters, unknown columns), each naming the rule or schedule and the key.
    """
    source = str(config.path or "config")
    problems: Problems = []
    matcher = Matcher()
    manifests, load_problems = discover_manifests(config.settings.runners.plugin_dirs)
    try:
        matcher = Matcher.compile(config.rules, source, manifests)
    except ConfigError as e:
        problems += e.problems
    problems += check_against_plugins(config.rules, manifests, load_problems, columns)
    if problems:
        raise ConfigError(source, problems)
    return matcher
