"""`cdcflow replay` and `cdcflow tail`: re-feed history, and watch any pipeline topic live."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from schemas.runtime.cli_support import get_config
from schemas.settings import Settings

if TYPE_CHECKING:  # the commands import Kafka and the streams modules only when they run
    from confluent_kafka import Message

    from schemas.config import Config
    from streams.event_filter import EventFilter
    from streams.events import EventFacts
    from streams.replay import ReplayCounts, ReplayPlan, ReplayRequest, Target

F = TypeVar("F", bound=Callable[..., Any])

FILTER_OPTIONS = [
    click.option(
        "--table", "tables", multiple=True, metavar="[DB.]TABLE", help="row changes (or cdc invocations) of this table"
    ),
    click.option(
        "--op",
        "ops",
        multiple=True,
        metavar="OP",
        help="INSERT UPDATE DELETE READ (or c u d r); repeatable or comma-separated",
    ),
    click.option(
        "--plugin",
        "plugins",
        multiple=True,
        help="invocations/results of this plugin; for row changes, what the current rules send to it",
    ),
    click.option(
        "--rule",
        "rules",
        multiple=True,
        help="invocations of this rule; for row changes, what this current rule matches",
    ),
    click.option(
        "--status",
        "statuses",
        multiple=True,
        help="results / dead letters with this status (success failed timeout rejected skipped); "
        "invocations whose recorded run has it (or pending)",
    ),
    click.option(
        "--where",
        "where",
        multiple=True,
        metavar="COND",
        help="FIELD OP VALUE, e.g. after.is_valid=true, params.id>=7 (repeatable: all must hold)",
    ),
]


def filter_options(f: F) -> F:
    for option in reversed(FILTER_OPTIONS):
        f = option(f)
    return f


def _event_filter(settings: Settings, **kwargs: Any) -> EventFilter:
    from streams.event_filter import FilterError
    from streams.replay import event_filter

    try:
        return event_filter(settings, **kwargs)
    except FilterError as e:
        raise click.BadParameter(str(e)) from None


@click.command("replay")
@click.argument("source_topic", metavar="SOURCE_TOPIC")
@click.option(
    "--from-offset",
    "from_offsets",
    multiple=True,
    metavar="[P:]OFFSET",
    help="start (inclusive) per partition, e.g. 0:100; a bare offset = every partition",
)
@click.option("--to-offset", "to_offsets", multiple=True, metavar="[P:]OFFSET", help="end (exclusive) per partition")
@click.option(
    "--since", metavar="TIME", help="start at the first message at or after TIME (ISO-8601, or 2h / 30m / 1d ago)"
)
@click.option("--until", metavar="TIME", help="end before the first message at or after TIME")
@filter_options
@click.option("--to-topic", metavar="TOPIC", help="copy the selected messages (key, value, headers) to TOPIC instead")
@click.option("--print", "print_only", is_flag=True, help="print the selected messages, send nothing")
@click.option("--json", "as_json", is_flag=True, help="with --print: one JSON object per message")
@click.option("--dry-run", is_flag=True, help="count what would be replayed, send nothing")
@click.option(
    "--replay-id",
    help="name of this replay (default: derived from the arguments and resolved range); re-run with it to continue",
)
@click.option("--rate", type=click.FloatRange(min=0.1), help="read at most this many source messages per second")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="at most this many source messages (and at most 1 s) per transaction",
)
@click.pass_context
def replay(
    ctx: click.Context,
    source_topic: str,
    from_offsets: tuple[str, ...],
    to_offsets: tuple[str, ...],
    since: str | None,
    until: str | None,
    tables: tuple[str, ...],
    ops: tuple[str, ...],
    plugins: tuple[str, ...],
    rules: tuple[str, ...],
    statuses: tuple[str, ...],
    where: tuple[str, ...],
    to_topic: str | None,
    print_only: bool,
    as_json: bool,
    dry_run: bool,
    replay_id: str | None,
    rate: float | None,
    batch_size: int,
) -> None:
    """Re-feed a range of SOURCE_TOPIC through the pipeline (or to another topic, or the screen).

    SOURCE_TOPIC: a topic, or results, dlq, triggers, invoke:PLUGIN, or a [DB.]TABLE for its row
    changes. Row changes are matched against the current rules and their invocations published to
    the plugins' topics; invocations, dead letters and trigger requests are re-run. Replayed
    invocations get trigger kind `replay` with the original ids, and new ids. Safe to interrupt:
    the same command (or --replay-id) continues where it stopped and never sends a message twice.
    """
    from streams.replay import ReplayRequest

    if to_topic and print_only:
        raise click.UsageError("choose --to-topic or --print")
    target: Target = "topic" if to_topic else "print" if print_only else "pipeline"
    config = get_config(ctx)
    request = ReplayRequest(
        source=source_topic,
        target=target,
        filter=_event_filter(
            config.settings, tables=tables, ops=ops, plugins=plugins, rules=rules, statuses=statuses, where=where
        ),
        to_topic=to_topic,
        from_offsets=from_offsets,
        to_offsets=to_offsets,
        since=since,
        until=until,
        rate=rate,
        batch_size=batch_size,
        dry_run=dry_run,
        replay_id=replay_id,
    )
    plan = _plan(config, request)
    _echo_plan(plan)
    started = time.monotonic()
    counts = _run_with_progress(config.settings, plan, as_json, started)
    _echo_summary(plan, counts, time.monotonic() - started)


def _plan(config: Config, request: ReplayRequest) -> ReplayPlan:
    from streams.replay import ReplayError, ReplayUsageError, plan_replay
    from streams.replay_range import KafkaUnreachable, RangeError

    try:
        return plan_replay(config, request)
    except RangeError as e:
        raise click.BadParameter(str(e)) from None
    except ReplayUsageError as e:
        raise click.UsageError(str(e)) from None
    except (ReplayError, KafkaUnreachable) as e:
        raise click.ClickException(str(e)) from None


def _echo_plan(plan: ReplayPlan) -> None:
    for note in plan.notes:
        click.echo(note, err=True)
    spec = plan.spec
    where_to = {
        "pipeline": "the pipeline (current rules; invoke topics)",
        "topic": spec.to_topic,
        "print": "the screen",
    }
    click.echo(
        f"replay {plan.replay_id}: {spec.topic} -> {where_to[spec.target]}"
        f"{' (dry run: nothing is sent)' if spec.dry_run else ''}",
        err=True,
    )
    for r in plan.ranges:
        click.echo(
            f"  partition {r.partition}: offsets {r.start}..{r.end - 1} ({r.size} message(s))"
            if r.size
            else f"  partition {r.partition}: nothing in range",
            err=True,
        )


def _run_with_progress(settings: Settings, plan: ReplayPlan, as_json: bool, started: float) -> ReplayCounts:
    """The replay with a progress bar on stderr (none when printing the messages to stdout)."""
    from streams.replay import ReplayError, execute_replay
    from streams.tail import format_json, format_line

    width = max(40, shutil.get_terminal_size((120, 20)).columns - 60)
    shown = {"scanned": 0}

    def on_print(msg: Message, f: EventFacts) -> None:
        click.echo(format_json(msg, f) if as_json else format_line(msg, f, width))

    bar_cm = (
        click.progressbar(
            length=max(plan.total, 1),
            label="replaying",
            file=click.get_text_stream("stderr"),
            show_pos=True,
            item_show_func=lambda s: s,
        )
        if plan.spec.target != "print"
        else None
    )
    bar = bar_cm.__enter__() if bar_cm is not None else None

    def progress(counts: ReplayCounts) -> None:
        if bar is None:
            return
        done = counts.scanned + counts.already_done
        step, shown["scanned"] = done - shown["scanned"], done
        elapsed = max(time.monotonic() - started, 1e-6)
        bar.update(step, f"selected {counts.selected}  sent {counts.sent}  {counts.scanned / elapsed:,.0f} msg/s")

    try:
        counts = execute_replay(settings, plan, progress=progress, on_print=on_print)
        progress(counts)
        return counts
    except ReplayError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        raise click.ClickException(
            f"interrupted; run the same command again (--replay-id {plan.replay_id}) to continue: nothing is sent twice"
        ) from None
    finally:
        if bar_cm is not None:
            bar_cm.__exit__(None, None, None)


def _echo_summary(plan: ReplayPlan, counts: ReplayCounts, elapsed: float) -> None:
    click.echo(f"scanned {counts.scanned} message(s) in {elapsed:.1f}s, selected {counts.selected}", err=True)
    if counts.already_done:
        click.echo(
            f"{counts.already_done} message(s) of the range were replayed by an earlier run of {plan.replay_id}",
            err=True,
        )
    verb = "would send" if plan.spec.dry_run else "sent"
    for name, n in sorted(counts.by_topic.items()):
        click.echo(f"  {verb} {n} to {name}", err=True)
    for reason, n in counts.skipped.items():
        click.echo(f"  skipped {n}: {reason}", err=True)
    if plan.spec.dry_run:
        click.echo(
            f"dry run: {counts.selected} selected, {sum(counts.by_topic.values())} message(s) would be sent; "
            "nothing sent"
        )


@click.command("tail")
@click.argument("topic")
@click.option(
    "--filter",
    "where",
    multiple=True,
    metavar="COND",
    help="FIELD OP VALUE, e.g. after.is_valid=true, status=failed (repeatable)",
)
@click.option("--table", "tables", multiple=True, metavar="[DB.]TABLE")
@click.option("--op", "ops", multiple=True, metavar="OP")
@click.option("--plugin", "plugins", multiple=True)
@click.option("--status", "statuses", multiple=True)
@click.option("--from-beginning", is_flag=True, help="start at the oldest message instead of the next new one")
@click.option("-n", "--count", "limit", type=click.IntRange(min=1), help="exit after printing N events")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per event")
@click.pass_context
def tail(
    ctx: click.Context,
    topic: str,
    where: tuple[str, ...],
    tables: tuple[str, ...],
    ops: tuple[str, ...],
    plugins: tuple[str, ...],
    statuses: tuple[str, ...],
    from_beginning: bool,
    limit: int | None,
    as_json: bool,
) -> None:
    """Live view of TOPIC (a topic, results, dlq, triggers, invoke:PLUGIN or a [DB.]TABLE): one line per event."""
    from streams.replay_range import KafkaUnreachable, RangeError, existing_topics, metadata_consumer, resolve_topic
    from streams.tail import tail as run_tail

    settings = get_config(ctx).settings
    event_filter = _event_filter(
        settings, tables=tables, ops=ops, plugins=plugins, statuses=statuses, where=where, where_option="--filter"
    )
    consumer = metadata_consumer(settings)
    try:
        name = resolve_topic(settings, topic, existing_topics(consumer, settings))
    except RangeError as e:
        raise click.BadParameter(str(e)) from None
    except KafkaUnreachable as e:
        raise click.ClickException(str(e)) from None
    finally:
        consumer.close()
    click.echo(
        f"tail {name} from {'the beginning' if from_beginning else 'now'} ({datetime.now().astimezone():%H:%M:%S %Z}); "
        "Ctrl-C stops",
        err=True,
    )
    width = max(40, shutil.get_terminal_size((120, 20)).columns - 60)
    try:
        run_tail(
            settings,
            name,
            event_filter,
            click.echo,
            from_beginning=from_beginning,
            limit=limit,
            as_json=as_json,
            width=width,
        )
    except KeyboardInterrupt:
        pass
