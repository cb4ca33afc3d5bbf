"""`cdcflow streams|rules|schedules|trigger ...`"""
from __future__ import annotations

import click

from schemas.cli import get_config, parse_param_pairs
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


@click.command("trigger")
@click.argument("plugin")
@click.option("-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE", help="a parameter (repeatable)")
@click.option("--json", "json_params", metavar="JSON", help="parameters as a JSON object")
@click.option("--priority", type=click.Choice(["low", "normal", "high"]), default="normal", show_default=True)
@click.option("--wait", is_flag=True, help="wait for the result and print it")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="seconds to wait with --wait")
@click.pass_context
def trigger(ctx: click.Context, plugin: str, pairs: tuple[str, ...], json_params: str | None, priority: str,
            wait: bool, timeout: float) -> None:
    """Run PLUGIN now: parameters are checked against its plugin.json before anything is sent."""
    import getpass
    import socket
    import time
    import uuid

    from confluent_kafka import Producer

    from plugins.registry import discover
    from plugins.store import RunStore
    from schemas.invocation import invocation_id_for
    from schemas.kafka_topics import ensure_topics
    from schemas.manifest import ParamError
    from schemas.trigger_request import ManualTriggerRequest

    config = get_config(ctx)
    settings = config.settings
    found = discover(settings.runners.plugin_dirs)
    if plugin not in found.plugins:
        known = ", ".join(sorted(found.plugins)) or "none"
        raise click.ClickException(f"unknown plugin {plugin!r} (plugins in {', '.join(map(str, settings.runners.plugin_dirs))}: {known})")
    try:
        params = found.plugins[plugin].manifest.validate_params(parse_param_pairs(pairs, json_params))
    except ParamError as e:
        raise click.ClickException(f"refused, nothing was sent:\n{e}") from None
    request = ManualTriggerRequest(request_id=str(uuid.uuid4()), plugin=plugin, params=params, priority=priority,  # type: ignore[arg-type]
                                   requested_by=f"{getpass.getuser()}@{socket.gethostname()}")
    ensure_topics(settings, [settings.topics.triggers])
    producer = Producer(settings.kafka_config(**{"acks": "all", "enable.idempotence": True}))
    producer.produce(settings.topics.triggers, key=request.request_id.encode(), value=request.model_dump_json().encode())
    if producer.flush(30) > 0:
        raise click.ClickException(f"Kafka at {settings.kafka.bootstrap_servers} did not accept the trigger within 30s")
    invocation_id = invocation_id_for("manual", request.request_id, plugin)
    click.echo(f"triggered {plugin}: invocation {invocation_id}", err=True)
    if not wait:
        click.echo(invocation_id)
        return
    store = RunStore(settings)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = store.get_raw(invocation_id)
        if raw is not None:
            click.echo(raw.decode())
            result = store.get(invocation_id)
            ctx.exit(0 if result is not None and result.status == "success" else 1)
        time.sleep(0.1)
    raise click.ClickException(f"no result for invocation {invocation_id} within {timeout:.0f}s "
                               f"(is `cdcflow run` running? see `cdcflow runs show {invocation_id}` later)")
