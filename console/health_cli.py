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

    from console.status_report import component_views, expected_kinds
    from console.status_report import health as judge
    from schemas.runtime.cli_support import get_config
    from schemas.runtime.components import now_ms, read_records, redis_client

    config = get_config(ctx)
    settings = config.settings
    try:
        client = redis_client(settings, timeout=5.0)
        try:
            records = read_records(client, settings.redis.key_prefix)
        finally:
            client.close()
    except redis.RedisError as e:
        click.echo(f"FAIL  cannot read heartbeats from Redis: {type(e).__name__}: {e}")
        ctx.exit(1)
    ok, lines = judge(component_views(records, settings, now_ms()), list(expect) or expected_kinds(config))
    for line in lines:
        click.echo(line)
    ctx.exit(0 if ok else 1)
