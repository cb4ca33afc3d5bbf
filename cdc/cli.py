"""`cdcflow cdc ...`"""
from __future__ import annotations

import signal
import threading

import click

from schemas.cli import get_config


def stop_on_signals(stop_event: threading.Event) -> None:
    """SIGTERM/SIGINT end the loop cleanly (flush, checkpoint) instead of killing it mid-write."""
    def handler(signum: int, _frame: object) -> None:
        stop_event.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@click.group()
def cdc() -> None:
    """The binlog reader: row changes -> Kafka."""


@cdc.command("run")
@click.option("--from-now", is_flag=True,
              help="ignore the checkpoint and start at the current end of the binlog (overwrites the "
                   "checkpoint; changes committed before now are not sent)")
@click.pass_context
def run(ctx: click.Context, from_now: bool) -> None:
    """Stream row changes of the monitored tables to Kafka until stopped."""
    from cdc.errors import PositionLost
    from cdc.reader import BinlogReader

    config = get_config(ctx)
    if not config.rules.tables():
        raise click.ClickException("no monitored_tables in the config: nothing to read")
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        BinlogReader(config.settings, config.rules, stop, from_now=from_now).run()
    except PositionLost as e:
        raise click.ClickException(str(e)) from None


@cdc.command("status")
@click.option("--json", "as_json", is_flag=True, help="print the raw status JSON")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Position, GTID set, lag, rows/s and last error of the reader (as it last published them)."""
    import orjson

    from cdc.status import format_status, read_status, status_key

    config = get_config(ctx)
    figures = read_status(config.settings)
    if figures is None:
        raise click.ClickException(f"no status for reader {config.settings.cdc.name!r} "
                                   f"(Redis key {status_key(config.settings)}): has it ever run?")
    click.echo(orjson.dumps(figures).decode() if as_json else format_status(figures))
