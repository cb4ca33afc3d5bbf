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
@click.pass_context
def run(ctx: click.Context) -> None:
    """Stream row changes of the monitored tables to Kafka until stopped."""
    from cdc.reader import BinlogReader

    config = get_config(ctx)
    if not config.rules.tables():
        raise click.ClickException("no monitored_tables in the config: nothing to read")
    stop = threading.Event()
    stop_on_signals(stop)
    BinlogReader(config.settings, config.rules, stop).run()
