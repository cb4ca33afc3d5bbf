"""The `cdcflow` command: one click group, with a subgroup per part loaded only when used.

Each part keeps its own subcommands (cdc/cli.py, streams/cli.py, plugins/cli.py); this module only
maps names to them, so a part never imports the console.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import cast

import click

# name -> "module:attribute"; loaded lazily so `cdcflow cdc ...` never imports Faust.
SUBCOMMANDS: dict[str, str] = {
    "schemas": "console.export_cli:schemas_group",
    "cdc": "cdc.cli:cdc",
    "streams": "streams.cli:streams",
    "rules": "streams.cli:rules",
    "schedules": "streams.cli:schedules",
    "trigger": "streams.cli:trigger",
    "runners": "plugins.cli:runners",
    "plugins": "plugins.cli:plugins_group",
    "runs": "plugins.cli:runs",
    "dlq": "plugins.cli:dlq",
    "run": "console.supervisor:run",
    "replay": "streams.ops_cli:replay",
    "tail": "streams.ops_cli:tail",
    "config": "console.config_cli:config_group",
    "status": "console.status_cli:status",
    "health": "console.health_cli:health",
    "api": "console.api_cli:api",
}


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(SUBCOMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in SUBCOMMANDS:
            module, attr = SUBCOMMANDS[name].split(":")
            try:
                command: click.Command = getattr(importlib.import_module(module), attr)
                return command
            except (ImportError, AttributeError) as e:
                return _unavailable(name, e)
        return super().get_command(ctx, name)


def _unavailable(name: str, error: Exception) -> click.Command:
    """A stand-in that reports why a part's commands could not be loaded, instead of breaking --help."""

    def fail() -> None:
        raise click.ClickException(f"command {name!r} is not available: {error}")

    return click.Command(name, callback=fail, help=f"(unavailable: {error})")


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    envvar="CDCFLOW_CONFIG",
    help="config file (YAML/JSON); default ./cdcflow.yaml",
)
@click.option("--log-level", default="INFO", envvar="CDCFLOW_LOG_LEVEL", show_default=True, help=", ".join(LOG_LEVELS))
@click.option(
    "--log-format",
    default="text",
    envvar="CDCFLOW_LOG_FORMAT",
    show_default=True,
    help="text, or json: one JSON object per line (time, level, component, logger, message, ...)",
)
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, log_level: str, log_format: str) -> None:
    """cdcflow: database changes, schedules and manual triggers -> isolated plugin runs, over Kafka."""
    from schemas.runtime.log_format import LogFormat, component_of, configure_logging

    ctx.ensure_object(dict)["config_path"] = config_path
    level = _one_of(ctx, "log_level", log_level.upper(), LOG_LEVELS)
    fmt = _one_of(ctx, "log_format", log_format.lower(), ("text", "json"))
    configure_logging(level, cast(LogFormat, fmt), component_of(ctx.invoked_subcommand))


def _one_of(ctx: click.Context, name: str, value: str, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`; else an error naming the option, or the variable it came from
    (click's own Choice names the option even when the value came from the environment)."""
    if value in choices:
        return value
    param = next(p for p in ctx.command.params if p.name == name)
    from_env = ctx.get_parameter_source(name) is click.core.ParameterSource.ENVIRONMENT
    hint = f"environment variable {param.envvar}" if from_env else f"'{param.opts[-1]}'"
    raise click.BadParameter(f"{value!r} is not one of {', '.join(choices)}", ctx=ctx, param_hint=hint)


def main() -> None:
    try:
        cli(prog_name="cdcflow")
    except Exception as e:
        if (why := _kafka_option_refused(e)) is None:
            raise
        overrides = [n for n in os.environ if n.upper() in ("CDCFLOW_KAFKA", "CDCFLOW_KAFKA__CLIENT_OPTIONS")]
        where = "kafka.client_options" + (f" (set by {', '.join(overrides)})" if overrides else "")
        click.echo(f"Error: {where}: {why}", err=True)
        sys.exit(1)


def _kafka_option_refused(error: Exception) -> str | None:
    """librdkafka's reason when it refused a client option (the config, or CDCFLOW_KAFKA__CLIENT_OPTIONS),
    which it does only when a command first makes a Kafka client: `config check` names it in advance,
    the other commands would end in a traceback."""
    if type(error).__name__ != "KafkaException" or not error.args:
        return None
    from confluent_kafka import KafkaError

    kafka_error = error.args[0]
    if not isinstance(kafka_error, KafkaError) or kafka_error.code() != KafkaError._INVALID_ARG:
        return None
    return str(kafka_error.str())


if __name__ == "__main__":
    main()
