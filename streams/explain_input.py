"""The row change a person gives `rules explain` (a file or stdin): read strictly, checked for shape.

Strict JSON (no duplicate keys, NaN or Infinity) and the shape the row-change loop acts on
(streams/row_checks.py), so explain never reasons about a change the worker would skip, and a wrong
one is a one-line error naming the file instead of a traceback deep in the matcher.
"""

from __future__ import annotations

from typing import Any

import orjson

from schemas.documents import decode_utf8, parse_json
from schemas.errors import ConfigError
from streams.row_checks import BadRowChange, parse_change


def hand_written_change(raw: bytes, source: str) -> dict[str, Any]:
    """The change in `raw` (an event id may be left out); ConfigError naming `source` otherwise."""
    parsed = parse_json(decode_utf8(raw, source), source)
    if isinstance(parsed, dict):
        parsed = {"event_id": "explain", **parsed}
    try:
        change, _, _ = parse_change(orjson.dumps(parsed))
    except BadRowChange as e:
        raise ConfigError(source, [("", f"not a row-change event: {e}")]) from None
    except orjson.JSONEncodeError:  # parse_json keeps any integer; the loop reads 64 bits
        raise ConfigError(source, [("", "not a row-change event: an integer beyond 64 bits")]) from None
    if not change["source"]["db"] or not change["source"]["table"]:
        raise ConfigError(source, [("source", "db and table must not be empty")])
    return change
