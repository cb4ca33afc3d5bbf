"""`cdcflow status`: one screen of the whole pipeline (components, reader, lag, plugins, schedules, failures)."""

from __future__ import annotations

import click


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="the same as one JSON object, for scripts")
@click.option(
    "--failures", type=click.IntRange(0, 1000), default=5, show_default=True, help="how many recent failures to show"
)
@click.option("--no-kafka", is_flag=True, help="skip consumer-group lag (which asks Kafka)")
@click.pass_context
def status(ctx: click.Context, as_json: bool, failures: int, no_kafka: bool) -> None:
    """Each component alive or not and where, reader position and lag, consumer lag, plugins, schedules, failures."""
    import orjson

    from console.status_report import expected_kinds, format_report, gather
    from schemas.runtime.cli_support import get_config

    config = get_config(ctx)
    report = gather(config, failures=failures, with_kafka=not no_kafka)
    if as_json:
        click.echo(orjson.dumps(report, default=str).decode())
    else:
        click.echo(format_report(report, expected_kinds(config)))
