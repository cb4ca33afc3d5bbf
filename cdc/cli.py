"""`cdcflow cdc ...`

Each command imports what it uses inside its function (lazy loading, not an import circle): the
reader and the snapshot pull in mysql-replication and confluent-kafka (~0.3 s), which `cdc status`
and `--help` do not need.
"""

from __future__ import annotations

import signal
import threading

import click

from schemas.runtime.cli_support import get_config


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
@click.option(
    "--from-now",
    is_flag=True,
    help="ignore the checkpoint and start at the current end of the binlog (overwrites the "
    "checkpoint; changes committed before now are not sent)",
)
@click.pass_context
def run(ctx: click.Context, from_now: bool) -> None:
    """Stream row changes of the monitored tables to Kafka until stopped."""
    import pymysql  # lazy: see the module docstring

    from cdc.errors import PositionLost
    from cdc.filters import FilterError, nothing_to_read
    from cdc.reader import BinlogReader
    from cdc.snapshot import SnapshotUnfinished

    config = get_config(ctx)
    if (why := nothing_to_read(config.rules.tables(), config.settings.cdc)) is not None:
        raise click.ClickException(why)
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        BinlogReader(config.settings, config.rules, stop, from_now=from_now).run()
    except (PositionLost, FilterError, SnapshotUnfinished) as e:
        raise click.ClickException(str(e)) from None
    except pymysql.err.OperationalError as e:
        # Refused login, unknown host, server down at start: say where, not a traceback (the supervisor
        # restarts the reader with backoff; a wrong password needs a person).
        mysql = config.settings.mysql
        raise click.ClickException(
            f"MySQL at {mysql.host}:{mysql.port} as {mysql.user!r} (config section mysql): {e.args[-1]}"
        ) from None


@cdc.command("snapshot")
@click.argument("tables", nargs=-1)
@click.option(
    "--where",
    default=None,
    metavar="SQL",
    help="only rows matching this SQL condition (applied to every table), as Maxwell's bootstrap",
)
@click.option(
    "--chunk-size",
    default=2000,
    show_default=True,
    type=click.IntRange(min=1),
    help="rows per keyset-paginated chunk; progress is saved after each acknowledged chunk",
)
@click.option("--restart", is_flag=True, help="discard an unfinished snapshot instead of resuming it")
@click.pass_context
def snapshot(ctx: click.Context, tables: tuple[str, ...], where: str | None, chunk_size: int, restart: bool) -> None:
    """Send the existing rows of TABLES (db.table or table; default: every table the reader reads) as op=r
    events, then hand the snapshot's binlog position over to the reader. Run it while the reader is
    stopped; after a crash, the same command resumes where the acknowledged rows end."""
    import time

    import pymysql  # lazy: see the module docstring

    from cdc.filters import FilterError
    from cdc.snapshot import Snapshot, SnapshotError

    config = get_config(ctx)
    stop = threading.Event()
    stop_on_signals(stop)
    job = Snapshot(config.settings, config.rules, list(tables), where, chunk_size, restart, stop)
    try:
        estimate = job.prepare()
        if job.resumed and job.progress is not None:
            click.echo(f"resuming snapshot {job.progress.snapshot_id}: {job.rows_done} rows already sent", err=True)
        started = time.monotonic()
        sent_at_start = job.rows_done
        shown = {"table": ""}

        def rate(_item: object) -> str:
            elapsed = max(time.monotonic() - started, 1e-6)
            return f"{(job.rows_done - sent_at_start) / elapsed:,.0f} rows/s  {shown['table']}"

        with click.progressbar(
            length=max(estimate, 1),
            label="snapshot",
            show_pos=True,
            show_eta=True,
            item_show_func=rate,
            file=click.get_text_stream("stderr"),
        ) as bar:
            bar.update(job.rows_done)

            def advance(rows: int, table: str) -> None:
                shown["table"] = table
                bar.update(rows, table)

            result = job.run(advance)
    except (SnapshotError, FilterError) as e:
        raise click.ClickException(str(e)) from None
    except pymysql.err.MySQLError as e:
        raise click.ClickException(
            f"source server {config.settings.mysql.host}:{config.settings.mysql.port}: {e.args[-1] if e.args else e}"
        ) from None
    click.echo(
        f"snapshot {result.snapshot_id}: {job.rows_done} rows of {len(job.plans)} table(s) sent "
        f"({result.rows} in this run, {result.rows / max(result.seconds, 1e-6):,.0f} rows/s); "
        f"reader resumes from {result.checkpoint.describe()}"
    )


@cdc.command("status")
@click.option("--json", "as_json", is_flag=True, help="print the raw status JSON")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Position, GTID set, lag, rows/s and last error of the reader (as it last published them)."""
    import orjson  # lazy: see the module docstring

    from cdc.status import format_status, read_status, status_key

    config = get_config(ctx)
    figures = read_status(config.settings)
    if figures is None:
        raise click.ClickException(
            f"no status for reader {config.settings.cdc.name!r} "
            f"(Redis key {status_key(config.settings)}): has it ever run?"
        )
    click.echo(orjson.dumps(figures).decode() if as_json else format_status(figures))
