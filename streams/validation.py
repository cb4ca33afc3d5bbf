"""Rules and schedules checked against the plugins they name (their plugin.json).

A rule or schedule naming an unknown plugin, or mapping a parameter the plugin does not declare,
is an error; so is a rule that leaves a required parameter (without default) unmapped. A
schedule's params are literal values, so they are validated fully (types included) by the
manifest. Problems are `(key, reason)` pairs for ConfigError, so the message names the file,
the rule and the key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from schemas.config import Config
from schemas.errors import ConfigError
from schemas.manifest import ParamError, PluginManifest
from schemas.rules import RulesConfig
from streams.matcher import Matcher


def rule_where(table: str, name: str) -> str:
    return f"monitored_tables.{table} (rule {name})"


def check_against_plugins(
    rules: RulesConfig, manifests: Mapping[str, PluginManifest], load_problems: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """Every problem of `rules` against `manifests` (plugin name -> manifest).

    `load_problems` (plugin folder -> why it failed to load) is quoted when a name is unknown, as the
    plugin may exist but have a broken plugin.json.
    """
    problems: list[tuple[str, str]] = []
    known = ", ".join(sorted(manifests)) or "none"
    hint = ""
    if load_problems:
        hint = "; plugins that failed to load: " + "; ".join(f"{k}: {v}" for k, v in sorted(load_problems.items()))

    def unknown(key: str, plugin: str) -> None:
        problems.append((key, f"unknown plugin {plugin!r} (known: {known}){hint}"))

    for rule in rules.rules:
        where = rule_where(rule.table, rule.name)
        for i, plugin in enumerate(rule.triggers):
            manifest = manifests.get(plugin)
            if manifest is None:
                unknown(f"{where}.triggers[{i}]", plugin)
                continue
            declared = manifest.parameters
            for pname in rule.params:
                if pname not in declared:
                    problems.append(
                        (
                            f"{where}.params.{pname}",
                            f"plugin {plugin} does not declare parameter "
                            f"{pname!r} (declared: {', '.join(sorted(declared)) or 'none'})",
                        )
                    )
            for pname, spec in declared.items():
                if spec.required and spec.default is None and pname not in rule.params:
                    problems.append(
                        (
                            f"{where}.params",
                            f"plugin {plugin} requires parameter {pname!r}, which the rule does not map",
                        )
                    )
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


def validated_matcher(config: Config) -> Matcher:
    """The compiled rules, after checking them and the schedules against the plugins.

    Raises ConfigError with every problem (bad conditions or mappings, unknown plugins, undeclared
    or missing parameters), each naming the rule or schedule and the key.
    """
    source = str(config.path or "config")
    problems: list[tuple[str, str]] = []
    matcher = Matcher()
    try:
        matcher = Matcher.compile(config.rules, source)
    except ConfigError as e:
        problems += e.problems
    manifests, load_problems = discover_manifests(config.settings.runners.plugin_dirs)
    problems += check_against_plugins(config.rules, manifests, load_problems)
    if problems:
        raise ConfigError(source, problems)
    return matcher
