"""`cdcflow replay` and `cdcflow tail`: re-feed history, and watch any pipeline topic live."""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from schemas.errors import ConfigError
from schemas.runtime.cli_support import get_config
from schemas.settings import Settings

if TYPE_CHECKING:  # the commands import Kafka and the streams modules only when they run
    from confluent_kafka import Consumer, Message

    from streams.event_filter import EventFilter
    from streams.events import EventFacts
    from streams.replay import ReplayCounts

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
        help="results / dead letters with this status (success failed timeout rejected skipped); invocations whose recorded run has it (or pending)",
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
    from streams.event_filter import EventFilter, FilterError

    try:
        event_filter = EventFilter.build(**kwargs)
    except FilterError as e:
        raise click.BadParameter(str(e)) from None
    if event_filter.statuses:
        # --status on invocations: the status of the run recorded for each (pending when none yet)
        from plugins.store import RunStore

        store = RunStore(settings)
        event_filter.status_lookup = lambda iid: r.status if (r := store.get(iid)) is not None else None
    return event_filter


def _metadata_consumer(settings: Settings) -> Consumer:
    from confluent_kafka import Consumer

    return Consumer(
        settings.kafka_config(**{"group.id": f"cdcflow-meta-{uuid.uuid4().hex}", "enable.auto.commit": False})
    )


def _existing_topics(consumer: Consumer, settings: Settings) -> set[str]:
    from confluent_kafka import KafkaException

    try:
        return set(consumer.list_topics(timeout=10).topics)
    except KafkaException as e:
        raise click.ClickException(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {e.args[0]}") from None


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
    from streams.replay import PlanStore, ReplayError, ReplaySpec, args_fingerprint, derive_replay_id, run_replay
    from streams.replay_range import RangeError, parse_offsets, parse_time, resolve_range, resolve_topic
    from streams.tail import format_json, format_line
    from streams.validation import validated_matcher

    if to_topic and print_only:
        raise click.UsageError("choose --to-topic or --print")
    target = "topic" if to_topic else "print" if print_only else "pipeline"
    config = get_config(ctx)
    settings = config.settings
    event_filter = _event_filter(
        settings, tables=tables, ops=ops, plugins=plugins, rules=rules, statuses=statuses, where=where
    )
    consumer = _metadata_consumer(settings)
    try:
        topic = resolve_topic(settings, source_topic, _existing_topics(consumer, settings))
        if target == "pipeline" and topic == settings.topics.results:
            raise click.UsageError(
                f"{topic}: results carry no parameters, so they cannot be re-run; replay "
                f"{settings.topics.dlq} (failed runs) or invoke:PLUGIN, or use --to-topic/--print"
            )
        if to_topic is not None and to_topic == topic:
            raise click.UsageError("--to-topic must differ from the source topic")
        ranges = resolve_range(
            consumer,
            topic,
            parse_offsets(from_offsets, "--from-offset"),
            parse_offsets(to_offsets, "--to-offset"),
            parse_time(since, "--since") if since else None,
            parse_time(until, "--until") if until else None,
        )
    except RangeError as e:
        raise click.BadParameter(str(e)) from None
    finally:
        consumer.close()

    matcher = None
    is_row_topic = settings.topics.parse_row_changes(topic) is not None
    if target == "pipeline" or plugins or rules:
        try:
            matcher = validated_matcher(config)
        except ConfigError as e:
            if is_row_topic:
                raise click.ClickException(
                    f"row changes are re-matched against the current rules, which are bad:\n{e}"
                ) from None
            from streams.matcher import Matcher

            matcher = Matcher()  # no row changes expected here: an empty matcher replays none

    spec = ReplaySpec(
        topic=topic,
        target=target,
        filter=event_filter,
        to_topic=to_topic,
        rate=rate,  # type: ignore[arg-type]
        batch_size=batch_size,
        dry_run=dry_run,
    )
    fingerprint = (
        None
        if replay_id
        else args_fingerprint(
            spec, {"from": sorted(from_offsets), "to": sorted(to_offsets), "since": since, "until": until}
        )
    )
    store = PlanStore(settings) if spec.sending else None
    if store is not None and fingerprint is not None:
        try:
            replay_id = store.unfinished(fingerprint)
        except Exception as e:
            raise click.ClickException(f"cannot read replay plans from Redis: {e}") from None
        if replay_id:
            click.echo(f"continuing the unfinished replay {replay_id} of this same command", err=True)
    replay_id = replay_id or derive_replay_id(spec, ranges)
    if store is not None:
        try:
            resolved, ranges = ranges, store.load_or_create(replay_id, spec, ranges, fingerprint)
            if ranges != resolved:
                click.echo(f"replay {replay_id} ran before: its range, fixed then, is used", err=True)
        except ReplayError as e:
            raise click.ClickException(str(e)) from None
        except Exception as e:  # redis errors: the plan is what makes a re-run safe, so do not start without it
            raise click.ClickException(f"cannot store the replay plan in Redis: {e}") from None

    total = sum(r.size for r in ranges)
    where_to = {"pipeline": "the pipeline (current rules; invoke topics)", "topic": to_topic, "print": "the screen"}[
        target
    ]
    click.echo(f"replay {replay_id}: {topic} -> {where_to}{' (dry run: nothing is sent)' if dry_run else ''}", err=True)
    for r in ranges:
        click.echo(
            f"  partition {r.partition}: offsets {r.start}..{r.end - 1} ({r.size} message(s))"
            if r.size
            else f"  partition {r.partition}: nothing in range",
            err=True,
        )

    width = max(40, shutil.get_terminal_size((120, 20)).columns - 60)
    started = time.monotonic()
    shown = {"scanned": 0}

    def on_print(msg: Message, f: EventFacts) -> None:
        click.echo(format_json(msg, f) if as_json else format_line(msg, f, width))

    use_bar = target != "print"
    bar_cm = (
        click.progressbar(
            length=max(total, 1),
            label="replaying",
            file=click.get_text_stream("stderr"),
            show_pos=True,
            item_show_func=lambda s: s,
        )
        if use_bar
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
        counts = run_replay(settings, spec, ranges, replay_id, matcher, progress=progress, on_print=on_print)
        progress(counts)
    except ReplayError as e:
        raise click.ClickException(str(e)) from None
    except KeyboardInterrupt:
        raise click.ClickException(
            f"interrupted; run the same command again (--replay-id {replay_id}) to continue: nothing is sent twice"
        ) from None
    finally:
        if bar_cm is not None:
            bar_cm.__exit__(None, None, None)
    if store is not None:
        store.finish(replay_id, fingerprint)
        store.close()

    elapsed = time.monotonic() - started
    click.echo(f"scanned {counts.scanned} message(s) in {elapsed:.1f}s, selected {counts.selected}", err=True)
    if counts.already_done:
        click.echo(
            f"{counts.already_done} message(s) of the range were replayed by an earlier run of {replay_id}", err=True
        )
    verb = "would send" if dry_run else "sent"
    for name, n in sorted(counts.by_topic.items()):
        click.echo(f"  {verb} {n} to {name}", err=True)
    for reason, n in counts.skipped.items():
        click.echo(f"  skipped {n}: {reason}", err=True)
    if dry_run:
        click.echo(
            f"dry run: {counts.selected} selected, {sum(counts.by_topic.values())} message(s) would be sent; nothing sent"
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
    from streams.replay_range import RangeError, resolve_topic
    from streams.tail import tail as run_tail

    settings = get_config(ctx).settings
    event_filter = _event_filter(settings, tables=tables, ops=ops, plugins=plugins, statuses=statuses, where=where)
    consumer = _metadata_consumer(settings)
    try:
        name = resolve_topic(settings, topic, _existing_topics(consumer, settings))
    except RangeError as e:
        raise click.BadParameter(str(e)) from None
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
