"""What the row-change loop will not act on, and what becomes of an invocation too large to send.

A row change is checked only as far as acting on it needs: an envelope whose parts have the wrong
shape, or a number orjson would silently round, is skipped with a log line naming its topic,
partition and offset (there is no plugin to record it against). A well-formed change whose
invocation is larger than a plugin's topic takes is not garbage (a large TEXT column mapped into a
parameter): the invocation goes whole to the dead-letter topic, which takes large entries, with the
reason, in the batch's transaction. Either way the partition moves on.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.debezium_payload import unwrapped
from schemas.row_change import debezium_event_id

OPS = frozenset({"c", "u", "d", "r"})
# Digits enough to be an integer past 64 bits (or a negative one past -2**63): only then are the
# change's integer literals read exactly, to tell (a DECIMAL string of 20 digits is fine, for instance).
_LONG_DIGITS = re.compile(rb"-\d{19}|\d{20}")
# The pre-check on every matched change: each digit mapped to b"0", every other byte to b" ", then a
# plain substring search for a run of 19. ~0.35 us for the bench's ~230-byte change, where the
# regex's search alone took ~4 us (re has no fast scan for a digit class: it tries every position),
# ~20% of a matched change's cost in the worker. A run of 19 is necessary for either pattern above.
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_RUN_19 = b"0" * 19
INT64, UINT64 = 2**63, 2**64


class BadRowChange(ValueError):
    """A row change the loop skips; the message says what is wrong with it."""


def parse_change(raw: bytes) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(change, its source, its event id), or BadRowChange saying what is wrong (not JSON, or its shape).

    On the hot path (every change): one condition of exact type checks; the reason is worked out only
    for a change that fails it."""
    try:
        change = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise BadRowChange(f"not JSON: {e}") from None
    if type(change) is dict:
        if "payload" in change:  # cdc.format: debezium with schemas.enable
            change = unwrapped(change)
        source, event_id, op = change.get("source"), change.get("event_id"), change.get("op")
        if event_id is None and "event_id" not in change:  # cdc.format: debezium writes none
            event_id = change["event_id"] = debezium_event_id(change)  # the matcher reads it from the change
        if (
            type(source) is dict
            and type(event_id) is str
            and event_id
            and type(op) is str
            and op in OPS
            and type(source.get("db")) is str
            and type(source.get("table")) is str
            and type(change.get("before")) in _IMAGES
            and type(change.get("after")) in _IMAGES
        ):
            return change, source, event_id
    raise BadRowChange(_wrong(change))


_IMAGES = frozenset({dict, type(None)})


def _wrong(change: Any) -> str:
    """What parse_change found wrong with a parsed change."""
    if not isinstance(change, dict):
        return f"not a JSON object but a {type(change).__name__}"
    source, event_id, op = change.get("source"), change.get("event_id"), change.get("op")
    if event_id is None and "event_id" not in change:
        event_id = debezium_event_id(change)
    if (
        not isinstance(source, dict)
        or not isinstance(source.get("db"), str)
        or not isinstance(source.get("table"), str)
    ):
        return "source is not an object naming db and table"
    if not isinstance(event_id, str) or not event_id:
        return "event_id is not a non-empty string (nor, in Debezium's format, source.file/pos/row)"
    if not isinstance(op, str) or op not in OPS:
        return f"op is {str(op)[:40]!r}, not one of c, u, d, r"
    image = "before" if type(change.get("before")) not in _IMAGES else "after"
    return f"{image} is neither an object nor null"


def inexact_number(raw: bytes) -> str | None:
    """Why the change holds a number orjson read inexactly (an integer past 64 bits becomes a float),
    or None. The reader writes none: MySQL's integers fit 64 bits and DECIMALs travel as strings."""
    if _RUN_19 not in raw.translate(_DIGITS_ONLY) or _LONG_DIGITS.search(raw) is None:
        return None
    # The integer literals outside strings, by a scan of the (valid: orjson read it) JSON: json.loads
    # with parse_int recursed per level and raised RecursionError on a change ~1,000 levels deep.
    for token in _TOKEN.finditer(raw):
        digits, fraction = token.group(1), token.group(2)
        if digits is None or fraction or len(digits) < 19:
            continue  # a string, a float, or an integer too short to matter
        # JSON has no leading zeros: past 21 characters it is past 64 bits (and int() of it may refuse).
        if len(digits) > 21 or not -INT64 <= int(digits) < UINT64:
            text = digits[:24].decode()
            return f"an integer beyond 64 bits ({text}...), which would not arrive as it was sent"
    return None


# A JSON string (skipped whole, so digits inside it are never read as a number) or a number: its
# integer part and its fraction/exponent, if any.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|(-?[0-9]+)((?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)', re.S)


def too_large_dead_letter(
    invocation: dict[str, Any], size: int, topic: str, limit: int, source: tuple[str, int, int] | None
) -> dict[str, Any]:
    """The dead letter of an invocation `topic` cannot take, in the runner's DLQ entry shape."""
    return {
        "dlq_id": invocation["invocation_id"],
        "plugin": invocation["plugin"],
        "invocation": invocation,
        "status": "rejected",
        "error": {
            "type": "InvocationTooLarge",
            "message": f"{topic} takes messages of up to {limit} bytes; this invocation is {size} bytes",
            "traceback": None,
        },
        "attempts": [],
        "source_topic": source[0] if source else None,
        "source_partition": source[1] if source else None,
        "source_offset": source[2] if source else None,
        "dead_at": datetime.now(UTC).isoformat(),
        "runner": None,
        "plugin_version": None,
        "code_hash": None,
    }
