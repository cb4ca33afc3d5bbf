"""`cdcflow config show|check`: the effective configuration (secrets masked), and its validation."""

from __future__ import annotations

from typing import Any

import click
import yaml

from schemas.config import Config
from schemas.errors import ConfigError
from schemas.runtime.cli_support import get_config
from schemas.runtime.secrets import mask_value, masked_settings, redact, secret_values


@click.group("config")
def config_group() -> None:
    """The configuration file as cdcflow sees it."""


def effective_config(config: Config) -> dict[str, Any]:
    """File + environment overrides + defaults, as plain data with every secret masked."""
    rules = config.rules.model_dump(mode="json")
    return {
        "config_file": str(config.path) if config.path else None,
        **masked_settings(config.settings),
        "monitored_tables": mask_value("", rules.get("rules", [])),
        "schedules": mask_value("", rules.get("schedules", [])),
    }


@config_group.command("show")
@click.pass_context
def show(ctx: click.Context) -> None:
    """Print the effective configuration (file + CDCFLOW_* environment + defaults) as YAML, secrets masked."""
    click.echo(yaml.safe_dump(effective_config(get_config(ctx)), sort_keys=False, allow_unicode=True).rstrip())


@config_group.command("check")
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check everything the components check at start (config, rules against plugin.json and the tables,
    table filters, Kafka/Redis/TLS/alert settings, each plugin started once in its venv); exit 1 naming
    each problem. Builds a plugin's missing venv, as the runner would."""
    from streams.startup_checks import startup_report

    config = get_config(ctx)  # a bad file stops here, naming file, key and reason
    source = str(config.path or "config")
    secrets = secret_values(config.settings)
    report = startup_report(config, build_venvs=True)
    if report.problems:
        raise click.ClickException(
            "config check failed:\n" + redact(str(ConfigError(source, report.problems)), secrets)
        )
    for note in report.notes:
        click.echo(f"note: {redact(note, secrets)}", err=True)
    click.echo(
        f"{source}: ok — {len(config.rules.rules)} rule(s), {len(config.rules.schedules)} schedule(s), "
        f"{len(report.plugins)} plugin(s): {', '.join(report.plugins) or 'none'}"
    )
