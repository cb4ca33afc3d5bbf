"""What a message on a pipeline topic is, the facts filters look at, and its one-line summary.

The kind is read from the content, not the topic name, so a copy made with `replay --to-topic`
is understood as well as the original.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

from schemas.debezium_payload import unwrapped
from schemas.row_change import OP_TO_OPERATION, debezium_event_id

Kind = Literal["row_change", "invocation", "result", "dead_letter", "trigger", "unknown"]


@dataclass
class EventFacts:
    kind: Kind
    value: Any  # the parsed JSON (None when it is not JSON)
    table: str | None = None  # db.table
    op: str | None = None  # c u d r
    plugin: str | None = None
    rule: str | None = None
    status: str | None = None
    event_id: str | None = None
    invocation_id: str | None = None


def parse(raw: bytes | None) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def kind_of(value: Any) -> Kind:
    if not isinstance(value, dict):
        return "unknown"
    if "op" in value and "source" in value and ("event_id" in value or "after" in value):
        return "row_change"  # cdcflow's envelope, or Debezium's (cdc.format: debezium), which has no event_id
    if "dlq_id" in value and isinstance(value.get("invocation"), dict):
        return "dead_letter"
    if "invocation_id" in value and "trigger" in value and "plugin" in value:
        return "invocation"
    if "invocation_id" in value and "status" in value:
        return "result"
    if "request_id" in value and "plugin" in value:
        return "trigger"
    return "unknown"


# Anyone can write to a topic: the facts read only fields of the type they should have, so filters
# (set membership, comparisons) and summaries never meet a list where they expect a string. A row
# change whose images are not objects (or null) is no row change: conditions could not read it.
def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def facts(raw: bytes | None) -> EventFacts:
    value = parse(raw)
    if isinstance(value, dict) and "payload" in value:  # cdc.format: debezium with schemas.enable
        value = unwrapped(value)
    kind = kind_of(value)
    if kind == "row_change":
        source = value.get("source")
        if not isinstance(source, dict) or any(not isinstance(value.get(k), dict | None) for k in ("before", "after")):
            return EventFacts("unknown", value)
        return EventFacts(
            kind,
            value,
            table=f"{source.get('db')}.{source.get('table')}",
            op=_text(value.get("op")),
            # Debezium's format has none: derived, and put into the value, where replay's matcher reads it
            event_id=_text(
                value.get("event_id") if "event_id" in value else value.setdefault("event_id", debezium_event_id(value))
            ),
        )
    if kind == "invocation":
        return _invocation_facts(kind, value, value)
    if kind == "dead_letter":
        out = _invocation_facts(kind, value, value["invocation"])
        out.status, out.invocation_id = _text(value.get("status")), _text(value.get("dlq_id"))
        return out
    if kind == "result":
        return EventFacts(
            kind,
            value,
            plugin=_text(value.get("plugin")),
            status=_text(value.get("status")),
            invocation_id=_text(value.get("invocation_id")),
        )
    if kind == "trigger":
        return EventFacts(kind, value, plugin=_text(value.get("plugin")))
    return EventFacts(kind, value)


def _invocation_facts(kind: Kind, value: dict[str, Any], invocation: dict[str, Any]) -> EventFacts:
    trigger = _dict(invocation.get("trigger"))
    return EventFacts(
        kind,
        value,
        table=_text(trigger.get("table")),
        op=_text(trigger.get("op")),
        plugin=_text(invocation.get("plugin")),
        rule=_text(trigger.get("rule")),
        invocation_id=_text(invocation.get("invocation_id")),
        event_id=_text(trigger.get("event_id")) or _text(trigger.get("original_event_id")),
    )


def short(value: Any, width: int = 80) -> str:
    if isinstance(value, str):
        text = value
    else:
        try:
            text = orjson.dumps(value).decode()
        except orjson.JSONEncodeError:  # e.g. nesting deeper than orjson writes (it reads deeper)
            text = repr(value)[: width * 2]
    return text if len(text) <= width else text[: width - 1] + "…"


def summary(f: EventFacts, raw: bytes | None, width: int = 80) -> str:
    """One human line for the event (without time and key)."""
    v = f.value
    if f.kind == "row_change":
        op = OP_TO_OPERATION.get(f.op or "", f.op or "?")
        row = v.get("after") if v.get("after") is not None else v.get("before")
        return f"{op:<6} {f.table}  {short(row, width)}"
    if f.kind == "invocation":
        trigger = _dict(v.get("trigger"))
        how = (
            str(trigger.get("kind", "?"))
            + (f"/{trigger['rule']}" if trigger.get("rule") else "")
            + (f"/{trigger['schedule']}" if trigger.get("schedule") else "")
        )
        return f"invoke {f.plugin}  {how}  {short(v.get('params'), width)}  id={f.invocation_id}"
    if f.kind == "result":
        took = v.get("duration_ms")
        detail = v.get("output") if v.get("status") == "success" else _dict(v.get("error")).get("message")
        took_text = f"{took:.0f}ms" if isinstance(took, int | float) else "-"
        return f"result {f.plugin} {f.status} {took_text}  {short(detail, width)}  id={f.invocation_id}"
    if f.kind == "dead_letter":
        message = _dict(v.get("error")).get("message")
        attempts = v.get("attempts")
        count = len(attempts) if isinstance(attempts, list) else "?"
        return f"DEAD   {f.plugin} {f.status} after {count} attempt(s)  {short(message, width)}  id={f.invocation_id}"
    if f.kind == "trigger":
        return f"trigger {f.plugin} by {short(v.get('requested_by'), 40)}  {short(v.get('params'), width)}"
    return short((raw or b"").decode("utf-8", "replace"), width)


def message_time(timestamp: tuple[int, int]) -> str:
    """A Kafka message timestamp (type, ms) as local HH:MM:SS.mmm, or '-' when there is none."""
    kind, ms = timestamp
    if kind == 0 or ms < 0:  # TIMESTAMP_NOT_AVAILABLE
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone().strftime("%H:%M:%S.%f")[:-3]
