"""`cdcflow streams|rules|schedules|trigger ...`"""

from __future__ import annotations

from typing import TYPE_CHECKING, BinaryIO

import click

from schemas.errors import ConfigError
from schemas.runtime.cli_support import get_config, parse_param_pairs

if TYPE_CHECKING:
    from schemas.config import Config
    from schemas.rules import Schedule


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
    """Validate the rules in the config file, and everything else the components check at start (as
    `config check`: streams/startup_checks.py); exit 1 with every problem named."""
    from schemas.runtime.secrets import redact, secret_values
    from streams.startup_checks import startup_report

    config = get_config(ctx)
    secrets = secret_values(config.settings)
    report = startup_report(config, build_venvs=True)
    if report.problems:
        problems = ConfigError(str(config.path or "config"), report.problems)
        raise click.ClickException(f"rules check failed:\n{redact(str(problems), secrets)}")
    for note in report.notes:
        click.echo(f"note: {redact(note, secrets)}", err=True)
    for rule in config.rules.rules:
        click.echo(f"ok  {rule.name}: {rule.qualified_table} {'/'.join(rule.operations)} -> {', '.join(rule.triggers)}")
    click.echo(f"{len(config.rules.rules)} rule(s), {len(config.rules.schedules)} schedule(s): ok")


@rules.command("explain")
@click.argument("event_file", type=click.File("rb"), metavar="EVENT.json")
@click.pass_context
def explain_cmd(ctx: click.Context, event_file: BinaryIO) -> None:
    """Which rules match the row change in EVENT.json (`-` = stdin), and why the others do not."""
    from streams.explain_input import hand_written_change
    from streams.matcher import Matcher, explain
    from streams.validation import discover_manifests

    config = get_config(ctx)
    try:
        event = hand_written_change(event_file.read(), event_file.name)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    table = (event["source"]["db"], event["source"]["table"])
    try:
        manifests, _ = discover_manifests(config.settings.runners.plugin_dirs)  # params bound by name
        matcher = Matcher.compile(config.rules, str(config.path or "config"), manifests)
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
@click.option("--delay", metavar="DURATION", help="run it this much later: 30s, 5m, 1h30m, 2d (at most 30 days)")
@click.option("--at", "at", metavar="TIME", help="run it at this ISO-8601 time with a UTC offset (...Z, ...+08:00)")
@click.option("--key", "idempotency_key", metavar="KEY", help="the same key gives the same invocation, run once")
@click.option("--wait", is_flag=True, help="wait for the result and print it")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=300.0,
    show_default=True,
    help="seconds to wait with --wait (after the due time)",
)
@click.pass_context
def trigger(
    ctx: click.Context,
    plugin: str,
    pairs: tuple[str, ...],
    json_params: str | None,
    priority: str,
    delay: str | None,
    at: str | None,
    idempotency_key: str | None,
    wait: bool,
    timeout: float,
) -> None:
    """Run PLUGIN now, or later (--delay/--at): parameters are checked against its plugin.json before
    anything is sent. A delayed run is kept in Redis and survives restarts of every component."""
    from streams.manual_trigger import TriggerError, trigger_now_or_later, wait_for_result

    settings = get_config(ctx).settings
    params = parse_param_pairs(pairs, json_params)
    try:
        sent = trigger_now_or_later(
            settings, plugin, params, priority=priority, delay=delay, at=at, idempotency_key=idempotency_key
        )
    except TriggerError as e:
        raise click.ClickException(str(e)) from None
    when = f", due {sent.due_at.isoformat(timespec='milliseconds')}" if sent.due_at else ""
    click.echo(f"triggered {plugin}: invocation {sent.invocation_id}{when}", err=True)
    if not wait:
        click.echo(sent.invocation_id)
        return
    found = wait_for_result(settings, sent.invocation_id, timeout + sent.seconds_until_due())
    if found is None:
        raise click.ClickException(
            f"no result for invocation {sent.invocation_id} within {timeout:.0f}s{' of its time' if when else ''} "
            f"(is `cdcflow run` running? see `cdcflow runs show {sent.invocation_id}` later)"
        )
    raw, result = found
    click.echo(raw.decode())
    ctx.exit(0 if result is not None and result.status == "success" else 1)


@click.group()
def schedules() -> None:
    """Schedules: list them, pause, resume or run them now (state in Redis, so it survives restarts)."""


def _schedule_or_fail(config: Config, name: str) -> Schedule:
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
    import orjson

    from schemas.runtime.text_table import text_table
    from streams.schedule_report import schedule_rows
    from streams.schedule_timer import utcnow

    rows = schedule_rows(get_config(ctx), utcnow())
    if as_json:
        for row in rows:
            click.echo(orjson.dumps(row).decode())
        return
    header = ("NAME", "PLUGIN", "WHEN", "NEXT FIRE", "LAST FIRE", "LAST RESULT", "PAUSED", "MISSED")
    cells = [
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
    ]
    click.echo("\n".join(text_table(header, cells)))


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


@schedules.command("run")
@click.argument("name")
@click.option("--key", metavar="KEY", help="the same key gives the same invocation, run once")
@click.pass_context
def schedules_run(ctx: click.Context, name: str, key: str | None) -> None:
    """Fire NAME now, outside its slots (recorded in its history; its next slot fires as planned)."""
    from streams.schedule_run import ScheduleRunError, run_schedule_now

    config = get_config(ctx)
    schedule = _schedule_or_fail(config, name)
    try:
        invocation_id = run_schedule_now(config.settings, schedule, key)
    except ScheduleRunError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"ran {name} -> {schedule.plugin}: invocation {invocation_id}", err=True)
    click.echo(invocation_id)
