"""`cdcflow health`: exit 0 when every expected component is alive and ready, 1 otherwise (and why)."""

from __future__ import annotations

import click

from schemas.runtime.components import KINDS


@click.command("health")
@click.option(
    "--expect",
    "expect",
    multiple=True,
    type=click.Choice(KINDS),
    help="check only these kinds (default: reader if tables are monitored, streams, runner)",
)
@click.pass_context
def health(ctx: click.Context, expect: tuple[str, ...]) -> None:
    """Probe for scripts and orchestrators: reads the components' heartbeats in Redis."""
    import redis

    from console.status_report import check_health
    from schemas.runtime.cli_support import get_config

    config = get_config(ctx)
    try:
        ok, lines = check_health(config, list(expect))
    except redis.RedisError as e:
        click.echo(f"FAIL  cannot read heartbeats from Redis: {type(e).__name__}: {e}")
        ctx.exit(1)
    for line in lines:
        click.echo(line)
    ctx.exit(0 if ok else 1)
