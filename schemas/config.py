"""Loading the one config file (YAML or JSON): settings, monitored tables and schedules."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_settings import SettingsError

from schemas.documents import parse_json, parse_yaml, read_text
from schemas.env_overrides import env_error
from schemas.errors import ConfigError, from_validation_error
from schemas.rules import Rule, RulesConfig, RuleSpec, Schedule, ScheduleSpec
from schemas.settings import Settings

DEFAULT_CONFIG_ENV = "CDCFLOW_CONFIG"
RULE_KEYS = {"monitored_tables", "schedules"}
SETTINGS_KEYS = set(Settings.model_fields)


@dataclass
class Config:
    path: Path | None
    settings: Settings
    rules: RulesConfig


def default_config_path() -> Path | None:
    env = os.environ.get(DEFAULT_CONFIG_ENV)
    if env:
        return Path(env)
    local = Path("cdcflow.yaml")
    return local if local.exists() else None


def read_config_file(path: Path) -> dict[str, Any]:
    return parse_config_text(read_text(path, "config file"), path, as_json=path.suffix == ".json")


def parse_config_text(text: str, source: str | Path, as_json: bool = False) -> dict[str, Any]:
    """The sections of a config text (YAML, or JSON), checked for shape; errors name `source`."""
    path = source
    data = parse_json(text, path) if as_json else parse_yaml(text, path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, [("", "the top level must be a mapping")])
    unknown = set(data) - RULE_KEYS - SETTINGS_KEYS
    if unknown:
        raise ConfigError(
            path,
            [(k, f"unknown section (known: {', '.join(sorted(RULE_KEYS | SETTINGS_KEYS))})") for k in sorted(unknown)],
        )
    return data


def parse_settings(data: dict[str, Any], source: str | Path, base: Path) -> Settings:
    """The file's settings with the CDCFLOW_* environment on top; an error names the file or the variable."""
    values = {k: v for k, v in data.items() if k in SETTINGS_KEYS}
    try:
        settings = Settings(**values)
    except (ValidationError, SettingsError) as e:
        _check_file_settings(values, source)  # the file's own faults are named first, against the file
        raise env_error(e, os.environ) from None
    return settings.resolve_paths(base)


def _check_file_settings(values: dict[str, Any], source: str | Path) -> None:
    """Each section of the file validated alone: Settings itself would read the environment too."""
    problems: list[tuple[str, str]] = []
    for key, value in values.items():
        try:
            TypeAdapter(Settings.model_fields[key].annotation or Any).validate_python(value)
        except ValidationError as e:
            problems.extend(from_validation_error(source, e, prefix=key).problems)
    if problems:
        raise ConfigError(source, problems)


def parse_rules(data: dict[str, Any], source: str | Path, default_db: str) -> RulesConfig:
    problems: list[tuple[str, str]] = []
    rules: list[Rule] = []
    tables = data.get("monitored_tables") or {}
    if not isinstance(tables, dict):
        raise ConfigError(source, [("monitored_tables", "must be a mapping of table -> rule or list of rules")])
    for table_key, body in tables.items():
        db, dot, table = str(table_key).rpartition(".")
        if not table.strip() or "." in db or (dot and not db):
            problems.append((f"monitored_tables.{table_key or repr(table_key)}", "a table is named TABLE or DB.TABLE"))
            continue
        db = db or default_db
        specs = body if isinstance(body, list) else [body]
        for i, spec in enumerate(specs):
            key = f"monitored_tables.{table_key}" + (f"[{i}]" if isinstance(body, list) else "")
            if not isinstance(spec, dict):
                problems.append((key, "a rule must be a mapping"))
                continue
            try:
                parsed = RuleSpec.model_validate(spec)
            except ValidationError as e:
                problems.extend(from_validation_error(source, e, prefix=key).problems)
                continue
            name = parsed.name or (f"{table}" if len(specs) == 1 else f"{table}#{i}")
            rules.append(Rule(**parsed.model_dump(exclude={"name"}), name=name, db=db, table=table))
    seen: set[str] = set()
    for rule in rules:
        if rule.name in seen:
            problems.append((f"monitored_tables.{rule.table}", f"duplicate rule name {rule.name!r}"))
        seen.add(rule.name)

    schedules: list[Schedule] = []
    raw_schedules = data.get("schedules") or {}
    if not isinstance(raw_schedules, dict):
        problems.append(("schedules", "must be a mapping of name -> schedule"))
        raw_schedules = {}
    for name, spec in raw_schedules.items():
        key = f"schedules.{name}"
        if not isinstance(spec, dict):
            problems.append((key, "a schedule must be a mapping"))
            continue
        try:
            schedules.append(Schedule(**ScheduleSpec.model_validate(spec).model_dump(), name=str(name)))
        except ValidationError as e:
            problems.extend(from_validation_error(source, e, prefix=key).problems)
    if problems:
        raise ConfigError(source, problems)
    return RulesConfig(rules=rules, schedules=schedules)


def config_from_text(text: str, source: str, base: Path) -> Config:
    """A config given as text (e.g. posted to the API), relative paths taken from `base`."""
    data = parse_config_text(text, source)
    settings = parse_settings(data, source, base)
    return Config(path=None, settings=settings, rules=parse_rules(data, source, settings.mysql.database))


def load_config(path: str | Path | None = None) -> Config:
    """Read the config file (or defaults when there is none); raise ConfigError naming file and key."""
    resolved = Path(path) if path is not None else default_config_path()
    if resolved is None:
        return Config(path=None, settings=parse_settings({}, "defaults", Path.cwd()), rules=RulesConfig())
    given = resolved.absolute()
    try:
        resolved = resolved.resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13): read_text says so
        resolved = given
    data = read_config_file(resolved if resolved.exists() else given)  # errors name the path as given
    settings = parse_settings(data, resolved, resolved.parent)
    rules = parse_rules(data, resolved, settings.mysql.database)
    return Config(path=resolved, settings=settings, rules=rules)
