"""`cdcflow config show|check`: the effective configuration (secrets masked), and its validation."""

from __future__ import annotations

from pathlib import Path
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


def settings_problems(config: Config) -> list[tuple[str, str]]:
    """What the infrastructure settings would fail on at first use, found without connecting."""
    from confluent_kafka import KafkaException, Producer

    settings = config.settings
    problems: list[tuple[str, str]] = []
    try:
        # librdkafka checks every property name and value when a client is created (no connection yet).
        Producer(settings.kafka_config(**{"socket.connection.setup.timeout.ms": 1000}))
    except KafkaException as e:
        problems.append(("kafka.client_options", str(e.args[0])))
    try:
        import redis

        redis.Redis.from_url(settings.redis.url.get_secret_value())
    except ValueError as e:
        problems.append(("redis.url", str(e)))
    tls = getattr(settings.mysql, "ssl", None)
    if tls is not None:
        for name in ("ca", "cert", "key"):
            path = getattr(tls, name, None)
            if path is not None and not Path(path).is_file():
                problems.append((f"mysql.ssl.{name}", f"no such file: {path}"))
    for i, directory in enumerate(settings.runners.plugin_dirs):
        if not directory.is_dir():
            problems.append((f"runners.plugin_dirs[{i}]", f"no such directory: {directory}"))
    return problems


@config_group.command("check")
@click.pass_context
def check(ctx: click.Context) -> None:
    """Validate the config, the rules and schedules against the plugins, and the plugins; exit 1 naming each problem."""
    from streams.table_columns import TableColumns
    from streams.validation import discover_manifests, validated_matcher

    config = get_config(ctx)  # a bad file stops here, naming file, key and reason
    source = str(config.path or "config")
    secrets = secret_values(config.settings)
    problems = settings_problems(config)
    manifests, load_problems = discover_manifests(config.settings.runners.plugin_dirs)
    problems += [(f"plugin {folder}", reason) for folder, reason in sorted(load_problems.items())]
    columns = TableColumns(config.settings)  # placeholders and bound parameters against existing tables
    try:
        validated_matcher(config, columns)
    except ConfigError as e:
        problems += e.problems
    finally:
        columns.close()
    if problems:
        raise click.ClickException("config check failed:\n" + redact(str(ConfigError(source, problems)), secrets))
    if columns.unreachable:
        click.echo(f"note: {redact(columns.unreachable, secrets)}", err=True)
    click.echo(
        f"{source}: ok — {len(config.rules.rules)} rule(s), {len(config.rules.schedules)} schedule(s), "
        f"{len(manifests)} plugin(s): {', '.join(sorted(manifests)) or 'none'}"
    )
