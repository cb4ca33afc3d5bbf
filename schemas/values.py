"""Arbitrary JSON-like values at the boundaries: how deep they nest, and how to name one in a message.

Both work on any value without raising: Python's own recursion (==, repr, json) fails past ~1,000
levels and str() of an integer past 4,300 digits raises ValueError, and either would turn a bad
value into a traceback instead of a message naming it.
"""

from __future__ import annotations

from typing import Any

# Levels of lists/dicts a value may nest to travel through every part: pydantic's JSON parser (the
# runner's, the API's) stops at ~200 levels for a whole document and orjson writes 254; a value sits
# a few levels down in its document (invocation -> params -> value, result -> trigger -> after ->
# column). MySQL's own JSON values nest at most 100 levels, so a row never comes near it.
MAX_NESTING = 128


def deeper_than(value: Any, levels: int) -> bool:
    """Whether `value` nests lists/dicts more than `levels` deep ([[1]] is 2 deep), without recursing."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth == levels:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def shown(value: Any, limit: int = 200) -> str:
    """repr() of `value`, clipped to `limit` characters; its type when repr() itself fails (nesting
    past the recursion limit, an integer past 4,300 digits)."""
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        text = f"<a {type(value).__name__} too deep or too large to show>"
    return text if len(text) <= limit else f"{text[: limit - 3]}..."
