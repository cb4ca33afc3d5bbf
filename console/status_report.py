"""Everything `cdcflow status` shows, gathered from Redis and Kafka (so it works from any host).

Each part is gathered on its own: one that cannot be read (Kafka down, say) is reported by name
under `problems`, and the rest is still shown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._listoffsets import OffsetSpec  # the package re-exports it without __all__

from schemas.config import Config
from schemas.runtime.components import KINDS, ComponentRecord, now_ms, read_records_once, redis_client
from schemas.runtime.text_table import text_table
from schemas.settings import Settings

KAFKA_TIMEOUT_SECONDS = 10.0


def read_component_views(settings: Settings, at_ms: int | None = None, timeout: float = 2.0) -> list[dict[str, Any]]:
    """Every component's view from its heartbeat record in Redis (a Redis error is raised)."""
    records = read_records_once(settings, timeout)
    return component_views(records, settings, now_ms() if at_ms is None else at_ms)


def component_views(records: list[ComponentRecord], settings: Settings, at_ms: int) -> list[dict[str, Any]]:
    stale = settings.observability.stale_after_seconds
    return [
        {**r.model_dump(), "liveness": r.liveness(at_ms, stale), "heartbeat_age_s": round(r.age_seconds(at_ms), 1)}
        for r in records
    ]


def consumer_lag(settings: Settings, groups: list[str]) -> list[dict[str, Any]]:
    """Per group and topic: committed offsets against the high watermarks (sum over partitions)."""
    admin = AdminClient(settings.kafka_config())
    partitions = _project_partitions(admin)
    committed = {group: _committed(settings, group, partitions) for group in groups}
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]  # confluent-kafka leaves latest() unannotated
    wanted = {TopicPartition(tp.topic, tp.partition): latest for tps in committed.values() for tp in tps}
    ends: dict[tuple[str, int], int] = {}
    if wanted:
        for tp, future in admin.list_offsets(wanted, request_timeout=KAFKA_TIMEOUT_SECONDS).items():
            ends[(tp.topic, tp.partition)] = future.result(timeout=KAFKA_TIMEOUT_SECONDS).offset
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for group, tps in committed.items():
        for tp in tps:
            row = rows.setdefault((group, tp.topic), {"group": group, "topic": tp.topic, "lag": 0, "partitions": 0})
            end = ends.get((tp.topic, tp.partition))
            if end is not None:
                row["lag"] += max(0, end - tp.offset)
            row["partitions"] += 1
    return sorted(rows.values(), key=lambda r: (r["group"], r["topic"]))


def _project_partitions(admin: AdminClient) -> list[TopicPartition]:
    """Every partition of the cluster's topics but Kafka's own (`__consumer_offsets`...)."""
    metadata = admin.list_topics(timeout=KAFKA_TIMEOUT_SECONDS)
    return [
        TopicPartition(name, p)
        for name, topic in metadata.topics.items()
        if not name.startswith("__") and topic.error is None
        for p in topic.partitions
    ]


def _committed(settings: Settings, group: str, partitions: list[TopicPartition]) -> list[TopicPartition]:
    """The group's committed offsets, read by a consumer of that group that never joins it. Not the
    admin API's list_consumer_group_offsets: librdkafka (2.16) dereferences a null group handle when
    the coordinator answers NOT_COORDINATOR (a broker just started), killing the process with
    SIGSEGV; a group consumer handles that answer (it looks the coordinator up again)."""
    if not partitions:
        return []
    consumer = Consumer(settings.kafka_config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        offsets = consumer.committed(partitions, timeout=KAFKA_TIMEOUT_SECONDS)
    finally:
        consumer.close()
    return [tp for tp in offsets if tp.error is None and tp.offset >= 0]


def schedule_views(config: Config) -> list[dict[str, Any]]:
    from streams.schedule_report import schedule_rows

    return schedule_rows(config, datetime.now(UTC))


def delayed_views(settings: Settings, limit: int = 10) -> dict[str, Any]:
    """Delayed triggers (`cdcflow trigger --delay/--at`) waiting in Redis: how many, and the first due."""
    from plugins.delayed_store import DelayedStore, utc_from_ms

    store = DelayedStore(settings)
    try:
        first = [
            {
                "invocation_id": w.invocation_id,
                "plugin": w.request.plugin if w.request else None,
                "due_at": utc_from_ms(w.due_ms).isoformat(timespec="milliseconds"),
                "requested_by": w.request.requested_by if w.request else None,
            }
            for w in store.earliest(limit)
        ]
        return {"waiting": store.count(), "first": first}
    finally:
        store.close()


def recent_failures(settings: Settings, limit: int) -> list[dict[str, Any]]:
    from plugins.store import RunStore

    store = RunStore(settings)
    try:
        results = store.list(status="failed", limit=limit) + store.list(status="timeout", limit=limit)
    finally:
        store.close()
    results.sort(key=lambda r: r.finished_at, reverse=True)
    return [
        {
            "finished_at": r.finished_at.isoformat(),
            "plugin": r.plugin,
            "invocation_id": r.invocation_id,
            "status": r.status,
            "attempt": r.attempt,
            "error": f"{r.error.type}: {r.error.message.splitlines()[0] if r.error.message else ''}"
            if r.error
            else None,
        }
        for r in results[:limit]
    ]


def plugin_views(settings: Settings) -> dict[str, dict[str, Any]]:
    from plugins.state import PluginStates

    client = redis_client(settings)
    try:
        return PluginStates(client, settings.redis.key_prefix).all()
    finally:
        client.close()


def gather(config: Config, failures: int = 5, with_kafka: bool = True) -> dict[str, Any]:
    settings = config.settings
    at = now_ms()
    report: dict[str, Any] = {"generated_at": datetime.fromtimestamp(at / 1000, UTC).isoformat(), "problems": []}

    def part(name: str, fn: Callable[[], Any], empty: Any) -> None:
        try:
            report[name] = fn()
        except Exception as e:  # shown, not raised: the other parts are still worth seeing
            report[name] = empty
            report["problems"].append(f"{name}: {type(e).__name__}: {e}")

    def reader() -> dict[str, Any] | None:
        from cdc.status import read_status

        return read_status(settings)

    part("components", lambda: read_component_views(settings, at), [])
    part("reader", reader, None)
    if with_kafka:
        # the Faust app's group (manual triggers), its row-change consumer's group, the runners'
        groups = [settings.streams.app_id, settings.streams.rows_group_id, settings.runners.group_id]
        part("consumer_lag", lambda: consumer_lag(settings, groups), [])
    part("plugins", lambda: plugin_views(settings), {})
    part("schedules", lambda: schedule_views(config), [])
    part("delayed", lambda: delayed_views(settings), {"waiting": 0, "first": []})
    part("recent_failures", lambda: recent_failures(settings, failures), [])
    return report


# -- health -----------------------------------------------------------------------------------
def expected_kinds(config: Config) -> list[str]:
    """A reader only when something is monitored; the Faust worker (manual triggers) and runners always;
    the API server when `api.enabled` (then `cdcflow run` starts it)."""
    kinds = ["streams", "runner"]
    if config.rules.tables() or getattr(config.settings.cdc, "include", None):
        kinds.insert(0, "reader")
    if config.settings.api.enabled:
        kinds.append("api")
    return kinds


def health(components: list[dict[str, Any]], expected: list[str]) -> tuple[bool, list[str]]:
    """(healthy, one line per expected kind): healthy when each kind has an instance up and ready."""
    ok_all, lines = True, []
    for kind in expected:
        mine = [c for c in components if c["kind"] == kind]
        good = [c for c in mine if c["liveness"] == "up" and c["state"] == "ready"]
        if good:
            lines.append(f"ok    {kind}: " + ", ".join(f"{c['instance']} ready" for c in good))
            others = [c for c in mine if c not in good and c["liveness"] == "down"]
            for c in others:
                lines.append(f"      (also {c['instance']}: down, no heartbeat for {c['heartbeat_age_s']:.0f}s)")
            continue
        ok_all = False
        if not mine:
            lines.append(f"FAIL  {kind}: no instance has reported (never started, or gone for over 10 minutes)")
        for c in mine:
            lines.append(f"FAIL  {kind}: {c['instance']} {_why(c)}")
    return ok_all, lines


def check_health(config: Config, expect: list[str] | None = None) -> tuple[bool, list[str]]:
    """What `cdcflow health` and `GET /api/health` say; a Redis error is raised (the caller says how)."""
    return health(read_component_views(config.settings, timeout=5.0), expect or expected_kinds(config))


def _why(c: dict[str, Any]) -> str:
    if c["liveness"] == "stopped":
        return f"stopped ({c['heartbeat_age_s']:.0f}s ago)"
    if c["liveness"] == "down":
        return f"down: no heartbeat for {c['heartbeat_age_s']:.0f}s (killed or hung)"
    return f"{c['state']}: {c.get('reason') or '?'}"


# -- text --------------------------------------------------------------------------------------
def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    return text_table(header, rows, indent="  ")


def _age(ms: int | None, at_ms: int) -> str:
    return "-" if not ms else f"{max(0.0, (at_ms - ms) / 1000):.1f}s ago"


def _summary(kind: str, d: dict[str, Any]) -> str:
    """What a ready component is doing, in a few words."""
    if kind == "reader":
        return f"{d.get('name')} at {d.get('position') or '-'}, lag {d.get('lag_ms')} ms"
    if kind == "streams":
        text = f"{'leader, ' if d.get('leader') else ''}{d.get('assigned', '?')} partition(s)"
        rows = d.get("row_changes")
        if rows:
            text += (
                f"; row changes: {rows.get('assigned', 0)} partition(s), {rows.get('events', 0)} read, "
                f"{rows.get('invocations', 0)} invocation(s), {rows.get('duplicates', 0)} duplicate(s) dropped"
            )
            if "recent_commit_ms" in rows and rows.get("batches"):  # absent from an older worker's heartbeat
                text += (
                    f"; last ~20 transactions: {rows['recent_batch_events']:.1f} change(s) each, "
                    f"offsets + commit {rows['recent_commit_ms']:.1f} ms"
                )
        return text
    if kind == "runner":
        plugins = d.get("plugins") or {}
        return ", ".join(f"{n} q={p.get('queued')} w={p.get('workers')}" for n, p in sorted(plugins.items())) or "-"
    return ""


def format_report(report: dict[str, Any], expected: list[str]) -> str:
    at = now_ms()
    out = [f"cdcflow status at {report['generated_at']}"]
    out += ["", "COMPONENTS", *_components_section(report, expected)]
    out += ["", "READER", *_reader_section(report.get("reader"), at)]
    out += ["", "CONSUMER LAG", *_lag_section(report.get("consumer_lag") or [])]
    out += _plugins_section(report, at)
    out += ["", "SCHEDULES", *_schedules_section(report.get("schedules") or [])]
    out += _delayed_section(report.get("delayed") or {})
    out += ["", "RECENT FAILURES", *_failures_section(report.get("recent_failures") or [])]
    if report["problems"]:
        out += ["", "COULD NOT READ"] + [f"  {p}" for p in report["problems"]]
    return "\n".join(out)


def _component_row(c: dict[str, Any]) -> tuple[str, ...]:
    state = {"up": c["state"], "down": "DOWN", "stopped": "stopped"}[c["liveness"]]
    detail = c.get("reason") or _summary(c["kind"], c.get("details") or {})
    if c["liveness"] == "down":
        detail = "no heartbeat: killed or hung"
    elif c["liveness"] == "stopped":
        detail = "stopped cleanly"
    return (
        c["kind"],
        state.upper() if state == "not ready" else state,
        c["host"],
        str(c["pid"]),
        str(c["port"] or "-"),
        f"{c['heartbeat_age_s']:.1f}s ago",
        detail,
    )


def _components_section(report: dict[str, Any], expected: list[str]) -> list[str]:
    rows = [_component_row(c) for c in report["components"]]
    seen = {c["kind"] for c in report["components"]}
    for kind in KINDS:
        if kind in expected and kind not in seen:
            rows.append((kind, "MISSING", "-", "-", "-", "-", "no heartbeat ever (or over 10 min ago)"))
    return _table(("KIND", "STATE", "HOST", "PID", "PORT", "HEARTBEAT", "DETAIL"), rows)


def _reader_section(reader: dict[str, Any] | None, at: int) -> list[str]:
    if not reader:
        return ["  (no reader status)"]
    lag = reader.get("lag_ms")
    out = [
        f"  {reader.get('name')}  {reader.get('state')}  position {reader.get('position') or '-'}  "
        f"lag {'-' if lag is None else f'{lag} ms'}  rows/s {reader.get('rows_per_s', 0):.1f}  "
        f"rows acked {reader.get('rows_acked', 0)}  updated {_age(reader.get('updated_ms'), at)}",
        f"  checkpoint {reader.get('checkpoint') or '-'}",
    ]
    if reader.get("last_error"):
        out.append(f"  last error: {reader['last_error']}")
    return out


def _lag_section(lags: list[dict[str, Any]]) -> list[str]:
    rows = [(r["group"], r["topic"], str(r["lag"])) for r in lags]
    return _table(("GROUP", "TOPIC", "LAG"), rows) if rows else ["  (no committed offsets)"]


def _plugins_section(report: dict[str, Any], at: int) -> list[str]:
    plugins = report.get("plugins") or {}
    runner_up = any(c["kind"] == "runner" and c["liveness"] == "up" for c in report.get("components", []))
    # Plugin states are what the runners last wrote: without a live runner they are history, not service.
    title = "PLUGINS" if runner_up or not plugins else "PLUGINS (as the last runner left them: no runner is up)"
    if not plugins:
        return ["", title, "  (no runner has reported plugins)"]
    rows = [
        (
            name,
            str(p.get("state", "?")),
            str(p.get("version") or "-"),
            _age(int(p["loaded_at"] * 1000) if p.get("loaded_at") else None, at),
            (str(p.get("last_error") or "").splitlines() or [""])[0][:80],
        )
        for name, p in sorted(plugins.items())
    ]
    return ["", title, *_table(("NAME", "STATE", "VERSION", "LOADED", "LAST ERROR"), rows)]


def _schedules_section(schedules: list[dict[str, Any]]) -> list[str]:
    rows = [
        (s["name"], s["plugin"], s["next_fire"] or "-", s["last_fire"] or "-", "yes" if s["paused"] else "no")
        for s in schedules
    ]
    return _table(("NAME", "PLUGIN", "NEXT FIRE", "LAST FIRE", "PAUSED"), rows) if rows else ["  (none)"]


def _delayed_section(delayed: dict[str, Any]) -> list[str]:
    waiting, first = delayed.get("waiting", 0), delayed.get("first") or []
    rows = [(d["due_at"], d["plugin"] or "?", d["invocation_id"], d["requested_by"] or "?") for d in first]
    more = [f"  ... and {waiting - len(rows)} more"] if waiting > len(rows) else []
    table = _table(("DUE", "PLUGIN", "INVOCATION", "REQUESTED BY"), rows) if rows else ["  (none)"]
    return ["", f"DELAYED TRIGGERS ({waiting} waiting)", *table, *more]


def _failures_section(failures: list[dict[str, Any]]) -> list[str]:
    rows = [
        (
            f["finished_at"][:19],
            f["plugin"],
            f["invocation_id"],
            f"{f['status']} #{f['attempt']}",
            (f["error"] or "")[:80],
        )
        for f in failures
    ]
    return _table(("FINISHED", "PLUGIN", "INVOCATION", "STATUS", "ERROR"), rows) if rows else ["  (none)"]
