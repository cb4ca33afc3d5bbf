"""What every part's click commands share: loading the config once per command, and `-p key=value` pairs.

It lives here, not in console/, because each part keeps its own subcommands and a part must not
import the console (console -> parts -> schemas).
"""

from __future__ import annotations

import os
from typing import Any

import click

from schemas.config import Config, default_config_path, load_config
from schemas.documents import parse_json
from schemas.errors import ConfigError
from schemas.runtime.secrets import install_log_masking, redact, secrets_in_file_and_env


def parse_param_pairs(pairs: tuple[str, ...], json_params: str | None) -> dict[str, Any]:
    """`--json '{...}'` then `-p key=value` pairs (which win); values stay strings for the manifest to coerce."""
    params: dict[str, Any] = {}
    if json_params:
        try:
            loaded = parse_json(json_params, "--json")
        except ConfigError as e:
            raise click.BadParameter(
                "; ".join(f"{k}: {r}" if k else r for k, r in e.problems), param_hint="--json"
            ) from None
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
            # A validator may quote the value it refused: never let that be a password.
            hidden = secrets_in_file_and_env(obj.get("config_path") or default_config_path(), os.environ)
            raise click.ClickException(f"bad config:\n{redact(str(e), hidden)}") from None
        # From here on, no log line of this process shows a secret of the config (password, token...).
        install_log_masking(obj["config"].settings)
    config: Config = obj["config"]
    return config
