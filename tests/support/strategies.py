"""Hypothesis strategies shared by the property tests (tests/unit/test_properties_*.py): arbitrary
JSON-like data with the values that break parsers and encoders (integers past 64 bits, NaN and
infinities, unicode incl. surrogates' neighbours, deep nesting), and near-valid shapes of the
project's inputs so that properties also reach the code behind the first type check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

# Integers a JSON document may carry but not every consumer can: both sides of the 64-bit limits,
# and far past them. (Not past 4300 digits: Hypothesis could not print such an example, since str()
# of it raises ValueError in Python >= 3.11; the tests pass those explicitly, as HUGEST_INT.)
EDGE_INTS = st.sampled_from([0, 1, -1, 2**53, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**30])
HUGE_INTS = st.sampled_from([10**400, -(10**400)])
HUGEST_INT = 10**5000
INTS = st.one_of(st.integers(), EDGE_INTS, HUGE_INTS)
FLOATS = st.one_of(st.floats(), st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 1e308]))
TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "nan", "inf", "-Infinity", "1e400", "12", "12.50", "0x10", " 7 ", "\x00", "é", "\u2028"]),
)
SCALARS = st.one_of(st.none(), st.booleans(), INTS, FLOATS, TEXT)


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON-like value (Python's view of a parsed document, NaN and huge integers included)."""
    return st.recursive(
        SCALARS,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
        max_leaves=max_leaves,
    )


def nested(depth: int, leaf: Any = 1, as_dict: bool = False) -> Any:
    """A value `depth` containers deep (built iteratively: the strategy must not recurse itself)."""
    value = leaf
    for _ in range(depth):
        value = {"k": value} if as_dict else [value]
    return value


@dataclass(frozen=True)
class Deep:
    """Stands for nested(depth, leaf, as_dict) in a generated example until expand() builds it:
    Hypothesis prints a failing example with a recursive pretty-printer that a value nested past
    the recursion limit would break (so the failure itself would be lost)."""

    depth: int
    leaf: Any
    as_dict: bool


def expand(value: Any) -> Any:
    """The example with every Deep built."""
    if isinstance(value, Deep):
        return nested(value.depth, expand(value.leaf), value.as_dict)
    if type(value) is list:
        return [expand(v) for v in value]
    if type(value) is dict:
        return {k: expand(v) for k, v in value.items()}
    if type(value) is tuple:
        return tuple(expand(v) for v in value)
    return value


DEEP = st.builds(Deep, st.sampled_from([50, 300, 1100, 5000]), SCALARS, st.booleans())
JSON = st.one_of(json_values(), DEEP)
ROWS = st.one_of(st.none(), st.dictionaries(TEXT, st.one_of(json_values(6), DEEP), max_size=5))
