"""Faust's surface as this app uses it, behind typed functions.

faust-streaming declares `App.task` and `App.timer` with @no_type_check (so as decorators they make
the decorated function untyped), and `App.tables` as the abstract TableManagerT, which lacks the
recovery service of its implementation. The app is built and everything is registered with it
through the functions here; the rest of streams/ is checked against their signatures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import faust
import mode
from faust.tables.manager import TableManager

from schemas.settings import Settings
from streams.kafka_auth import faust_credentials

Task = Callable[[], Awaitable[None]]
Agent = Callable[["faust.StreamT[bytes]"], Awaitable[None]]


def kafka_brokers(bootstrap: str) -> list[str]:
    return [f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip()]


def new_app(settings: Settings) -> faust.App:
    settings.streams.state_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
        settings.streams.app_id,
        broker=kafka_brokers(settings.kafka.bootstrap_servers),
        # SASL/SSL from kafka.client_options, the same block every confluent-kafka client uses.
        broker_credentials=faust_credentials(settings.kafka.client_options),
        store="rocksdb://",
        datadir=str(settings.streams.state_dir),
        topic_partitions=settings.kafka.partitions,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # The de-dup table's changelog messages go out in batches (one produce request each, not
        # one per message); invocations of row changes have their own producer.
        producer_linger=0.005,
        web_enabled=False,
        # Faust's default (60 s) leaves a kill -9'd worker's partitions (and the leader role, so the
        # schedule timer) unserved for a minute before the group rebalances.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=2.0,
        autodiscover=False,
        # Our topics are created up front with the right partition counts.
        topic_allow_declare=True,
    )


def raw_topic(app: faust.App, *names: str) -> faust.TopicT:
    """Keys and values as bytes, no serializer (the app reads and writes JSON itself)."""
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def add_task(app: faust.App, task: Task) -> None:
    """Run `task` once the worker is up (a plain task: `on_leader=True` checks leadership once, at
    start-up, before any partition is assigned, so such a task would never run)."""
    register: Callable[[Task], object] = app.task  # @no_type_check in Faust; this is its documented use
    register(task)


def add_timer(app: faust.App, interval: float, name: str, tick: Task) -> None:
    """Run `tick` every `interval` seconds while the worker is up."""
    timer: Callable[..., Callable[[Task], object]] = app.timer  # @no_type_check in Faust
    timer(interval=interval, name=name)(tick)


def add_agent(app: faust.App, topic: faust.TopicT, name: str, agent: Agent) -> None:
    app.agent(topic, name=name)(agent)


def add_thread_service(app: faust.App, start: Callable[[], None], stop: Callable[[], None]) -> None:
    """Call `start` when the app's services start and `stop` (in a thread: it may block) when they stop."""

    @app.service
    class ThreadService(mode.Service):
        async def on_start(self) -> None:
            start()

        async def on_stop(self) -> None:
            await asyncio.to_thread(stop)


def crash_from_thread(app: faust.App, reason: BaseException) -> None:
    """Stop the worker with `reason`, from a thread other than the event loop's."""
    asyncio.run_coroutine_threadsafe(app.crash(reason), app.loop)


def tables_recovered(app: faust.App) -> bool:
    """Whether Faust has recovered its tables (the first assignment's changelog replay is done)."""
    tables = app.tables
    # TableManagerT does not declare the Recovery service; the one implementation has it.
    assert isinstance(tables, TableManager)
    return tables.recovery.completed.is_set()
