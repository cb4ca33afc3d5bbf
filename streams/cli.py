"""`cdcflow streams|rules|schedules|trigger ...`"""

from __future__ import annotations

import click

from schemas.errors import ConfigError
from schemas.runtime.cli_support import get_config, parse_param_pairs


@click.group()
def streams() -> None:
    """The Faust app: rules, schedules and manual triggers -> invocations."""


@streams.command("worker")
@click.option("--loglevel", default="INFO", show_default=True)
@click.option(
    "--consume-only",
    is_flag=True,
    hidden=True,
    help="benchmarks: consume and ack row changes without matching (Faust's own ceiling)",
)
@click.pass_context
def worker(ctx: click.Context, loglevel: str, consume_only: bool) -> None:
    """Run one Faust worker (start several for more throughput; they share partitions)."""
    from streams.app import run_worker

    try:
        run_worker(get_config(ctx), loglevel=loglevel, consume_only=consume_only)
    except ConfigError as e:
        # Rules checked against the plugins at start: refuse to run rather than emit bad invocations.
        raise click.ClickException(f"bad rules:\n{e}") from None


@click.group()
def rules() -> None:
    """Monitored-table rules."""


@rules.command("check")
@click.pass_context
def check(ctx: click.Context) -> None:
    """Validate the rules in the config file; exit 1 with every problem named."""
    from streams.validation import validated_matcher

    config = get_config(ctx)
    try:
        validated_matcher(config)
    except ConfigError as e:
        raise click.ClickException(f"bad rules:\n{e}") from None
    for rule in config.rules.rules:
        click.echo(f"ok  {rule.name}: {rule.qualified_table} {'/'.join(rule.operations)} -> {', '.join(rule.triggers)}")
    click.echo(f"{len(config.rules.rules)} rule(s), {len(config.rules.schedules)} schedule(s): ok")


@rules.command("explain")
@click.argument("event_file", type=click.File("rb"), metavar="EVENT.json")
@click.pass_context
def explain_cmd(ctx: click.Context, event_file) -> None:  # type: ignore[no-untyped-def]
    """Which rules match the row change in EVENT.json (`-` = stdin), and why the others do not."""
    import orjson

    from streams.matcher import Matcher, explain

    config = get_config(ctx)
    try:
        event = orjson.loads(event_file.read())
        table = (event["source"]["db"], event["source"]["table"])
        event["op"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as e:
        raise click.ClickException(f"{event_file.name}: not a row-change event (need source.db, source.table, op): {e}")
    try:
        matcher = Matcher.compile(config.rules, str(config.path or "config"))
    except ConfigError as e:
        raise click.ClickException(f"bad rules:\n{e}") from None
    results = explain(matcher, config.rules, event)
    if not results:
        click.echo(f"no rule on {table[0]}.{table[1]}")
    for r in results:
        click.echo(f"{'MATCH' if r.matched else 'no   '}  {r.rule}: {r.reason}")
    ctx.exit(0 if any(r.matched for r in results) else 1)


@click.command("trigger")
@click.argument("plugin")
@click.option("-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE", help="a parameter (repeatable)")
@click.option("--json", "json_params", metavar="JSON", help="parameters as a JSON object")
@click.option("--priority", type=click.Choice(["low", "normal", "high"]), default="normal", show_default=True)
@click.option("--wait", is_flag=True, help="wait for the result and print it")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="seconds to wait with --wait")
@click.pass_context
def trigger(
    ctx: click.Context,
    plugin: str,
    pairs: tuple[str, ...],
    json_params: str | None,
    priority: str,
    wait: bool,
    timeout: float,
) -> None:
    """Run PLUGIN now: parameters are checked against its plugin.json before anything is sent."""
    import getpass
    import socket
    import time
    import uuid

    from confluent_kafka import Producer

    from plugins.registry import discover
    from plugins.store import RunStore
    from schemas.invocation import invocation_id_for
    from schemas.manifest import ParamError
    from schemas.runtime.kafka_topics import ensure_topics
    from schemas.trigger_request import ManualTriggerRequest

    config = get_config(ctx)
    settings = config.settings
    found = discover(settings.runners.plugin_dirs)
    if plugin not in found.plugins:
        known = ", ".join(sorted(found.plugins)) or "none"
        raise click.ClickException(
            f"unknown plugin {plugin!r} (plugins in {', '.join(map(str, settings.runners.plugin_dirs))}: {known})"
        )
    try:
        params = found.plugins[plugin].manifest.validate_params(parse_param_pairs(pairs, json_params))
    except ParamError as e:
        raise click.ClickException(f"refused, nothing was sent:\n{e}") from None
    request = ManualTriggerRequest(
        request_id=str(uuid.uuid4()),
        plugin=plugin,
        params=params,
        priority=priority,  # type: ignore[arg-type]
        requested_by=f"{getpass.getuser()}@{socket.gethostname()}",
    )
    ensure_topics(settings, [settings.topics.triggers])
    producer = Producer(settings.kafka_config(**{"acks": "all", "enable.idempotence": True}))
    producer.produce(
        settings.topics.triggers, key=request.request_id.encode(), value=request.model_dump_json().encode()
    )
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
    raise click.ClickException(
        f"no result for invocation {invocation_id} within {timeout:.0f}s "
        f"(is `cdcflow run` running? see `cdcflow runs show {invocation_id}` later)"
    )


@click.group()
def schedules() -> None:
    """Schedules: list them, pause and resume them (state in Redis, so it survives restarts)."""


def _schedule_or_fail(config, name: str):  # type: ignore[no-untyped-def]
    for schedule in config.rules.schedules:
        if schedule.name == name:
            return schedule
    known = ", ".join(s.name for s in config.rules.schedules) or "none"
    raise click.ClickException(f"unknown schedule {name!r} (schedules in {config.path}: {known})")


@schedules.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per schedule")
@click.pass_context
def schedules_list(ctx: click.Context, as_json: bool) -> None:
    """Name, plugin, next fire, last fire, last result, paused, missed."""
    from zoneinfo import ZoneInfo

    import orjson

    from plugins.store import RunStore
    from streams.schedule_state import ScheduleStore
    from streams.schedule_timer import utcnow
    from streams.schedule_times import next_slot

    config = get_config(ctx)
    store, runs = ScheduleStore(config.settings), RunStore(config.settings)
    now = utcnow()
    rows = []
    for s in config.rules.schedules:
        state = store.load(s.name)
        anchor = state.anchor or now.replace(microsecond=0)  # what the timer will store on first sight
        nxt = None if state.paused or not s.enabled else next_slot(s, anchor, max(filter(None, [state.last, now])))
        tz = ZoneInfo(s.timezone)  # times shown in the schedule's own timezone
        result = runs.get(state.last_invocation) if state.last_invocation else None
        rows.append(
            {
                "name": s.name,
                "plugin": s.plugin,
                "when": s.cron
                and f"cron {s.cron} {s.timezone}"
                or (f"every {s.interval_seconds:g}s" if s.interval_seconds else f"at {s.at}"),
                "next_fire": nxt.astimezone(tz).isoformat() if nxt else None,
                "last_fire": state.last.astimezone(tz).isoformat() if state.last else None,
                "last_result": result.status if result else ("pending" if state.last_invocation else None),
                "paused": state.paused,
                "enabled": s.enabled,
                "missed": state.missed_total,
            }
        )
    if as_json:
        for row in rows:
            click.echo(orjson.dumps(row).decode())
        return
    from schemas.runtime.text_table import text_table

    header = ("NAME", "PLUGIN", "WHEN", "NEXT FIRE", "LAST FIRE", "LAST RESULT", "PAUSED", "MISSED")
    click.echo(
        "\n".join(
            text_table(
                header,
                [
                    (
                        r["name"],
                        r["plugin"],
                        r["when"],
                        r["next_fire"] or "-",
                        r["last_fire"] or "-",
                        r["last_result"] or "-",
                        "yes" if r["paused"] else "no",
                        r["missed"],
                    )
                    for r in rows
                ],
            )
        )
    )


@schedules.command("pause")
@click.argument("name")
@click.pass_context
def schedules_pause(ctx: click.Context, name: str) -> None:
    """Stop firing NAME (takes effect within a second; survives restarts)."""
    from streams.schedule_state import ScheduleStore

    config = get_config(ctx)
    _schedule_or_fail(config, name)
    ScheduleStore(config.settings).pause(name)
    click.echo(f"paused {name}")


@schedules.command("resume")
@click.argument("name")
@click.pass_context
def schedules_resume(ctx: click.Context, name: str) -> None:
    """Fire NAME again from its next slot (slots passed while paused are not caught up)."""
    from streams.schedule_state import ScheduleStore
    from streams.schedule_timer import utcnow

    config = get_config(ctx)
    _schedule_or_fail(config, name)
    ScheduleStore(config.settings).resume(name, utcnow())
    click.echo(f"resumed {name}")
