"""The `cdcflow` command: one click group, with a subgroup per part loaded only when used."""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import click

from schemas.config import Config, load_config
from schemas.errors import ConfigError

# name -> "module:attribute"; loaded lazily so `cdcflow cdc ...` never imports Faust.
SUBCOMMANDS: dict[str, str] = {
    "schemas": "schemas.export_cli:schemas_group",
    "cdc": "cdc.cli:cdc",
    "streams": "streams.cli:streams",
    "rules": "streams.cli:rules",
    "schedules": "streams.cli:schedules",
    "trigger": "streams.cli:trigger",
    "runners": "plugins.cli:runners",
    "plugins": "plugins.cli:plugins_group",
    "runs": "plugins.cli:runs",
    "dlq": "plugins.cli:dlq",
    "run": "schemas.supervisor:run",
    "replay": "streams.ops_cli:replay",
    "tail": "streams.ops_cli:tail",
    "config": "schemas.config_cli:config_group",
    "status": "schemas.status_cli:status",
    "health": "schemas.health_cli:health",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(SUBCOMMANDS))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in SUBCOMMANDS:
            module, attr = SUBCOMMANDS[name].split(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                return _unavailable(name, e)
        return super().get_command(ctx, name)


def _unavailable(name: str, error: Exception) -> click.Command:
    """A stand-in that reports why a part's commands could not be loaded, instead of breaking --help."""

    def fail() -> None:
        raise click.ClickException(f"command {name!r} is not available: {error}")

    return click.Command(name, callback=fail, help=f"(unavailable: {error})")


def parse_param_pairs(pairs: tuple[str, ...], json_params: str | None) -> dict[str, Any]:
    """`--json '{...}'` then `-p key=value` pairs (which win); values stay strings for the manifest to coerce."""
    import json

    params: dict[str, Any] = {}
    if json_params:
        try:
            loaded = json.loads(json_params)
        except ValueError as e:
            raise click.BadParameter(f"not valid JSON: {e}", param_hint="--json") from None
        if not isinstance(loaded, dict):
            raise click.BadParameter("must be a JSON object", param_hint="--json")
        params.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="-p")
        params[key] = value
    return params


def get_config(ctx: click.Context) -> Config:
    """The config named by --config / CDCFLOW_CONFIG, loaded once per command."""
    root = ctx.find_root()
    obj: dict[str, Any] = root.ensure_object(dict)
    if "config" not in obj:
        try:
            obj["config"] = load_config(obj.get("config_path"))
        except ConfigError as e:
            import os

            from schemas.config import default_config_path
            from schemas.secrets import redact, secrets_in_file_and_env

            # A validator may quote the value it refused: never let that be a password.
            hidden = secrets_in_file_and_env(obj.get("config_path") or default_config_path(), os.environ)
            raise click.ClickException(f"bad config:\n{redact(str(e), hidden)}") from None
        from schemas.secrets import install_log_masking

        # From here on, no log line of this process shows a secret of the config (password, token...).
        install_log_masking(obj["config"].settings)
    return obj["config"]


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-c", "--config", "config_path", type=click.Path(path_type=Path), envvar="CDCFLOW_CONFIG",
              help="config file (YAML/JSON); default ./cdcflow.yaml")
@click.option("--log-level", default="INFO", envvar="CDCFLOW_LOG_LEVEL", show_default=True)
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", envvar="CDCFLOW_LOG_FORMAT",
              show_default=True, help="json: one JSON object per line (time, level, component, logger, message, ...)")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, log_level: str, log_format: str) -> None:
    """cdcflow: database changes, schedules and manual triggers -> isolated plugin runs, over Kafka."""
    from schemas.log_format import component_of, configure_logging

    ctx.ensure_object(dict)["config_path"] = config_path
    configure_logging(log_level, log_format, component_of(ctx.invoked_subcommand))  # type: ignore[arg-type]


def main() -> None:
    cli(prog_name="cdcflow")


if __name__ == "__main__":
    main()
