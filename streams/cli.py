"""`cdcflow streams|rules|schedules|trigger ...`"""
from __future__ import annotations

import click

from schemas.cli import get_config
from schemas.errors import ConfigError


@click.group()
def streams() -> None:
    """The Faust app: rules, schedules and manual triggers -> invocations."""


@streams.command("worker")
@click.option("--loglevel", default="INFO", show_default=True)
@click.pass_context
def worker(ctx: click.Context, loglevel: str) -> None:
    """Run one Faust worker (start several for more throughput; they share partitions)."""
    from streams.app import run_worker

    run_worker(get_config(ctx), loglevel=loglevel)


@click.group()
def rules() -> None:
    """Monitored-table rules."""


@rules.command("check")
@click.pass_context
def check(ctx: click.Context) -> None:
    """Validate the rules in the config file; exit 1 with every problem named."""
    from streams.matcher import Matcher

    config = get_config(ctx)
    try:
        Matcher.compile(config.rules, str(config.path or "config"))
    except ConfigError as e:
        raise click.ClickException(f"bad rules:\n{e}") from None
    for rule in config.rules.rules:
        click.echo(f"ok  {rule.name}: {rule.qualified_table} {'/'.join(rule.operations)} -> {', '.join(rule.triggers)}")
    click.echo(f"{len(config.rules.rules)} rule(s), {len(config.rules.schedules)} schedule(s): ok")
