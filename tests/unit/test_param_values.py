"""Parameter values that JSON cannot carry to every part and back are refused where they enter,
naming the parameter (issue: `-p n=9999...9` and `-p ratio=nan` used to get through)."""

from __future__ import annotations

import math

import pytest

from schemas.manifest import INT64, ParamError, PluginManifest, json_unsafe

MANIFEST = PluginManifest.model_validate(
    {
        "name": "p",
        "version": "1",
        "entry_point": "main.run",
        "parameters": {"n": {"type": "integer"}, "ratio": {"type": "number"}, "data": {"type": "any"}},
    }
)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"ratio": "nan"}, "ratio"),
        ({"ratio": "-inf"}, "ratio"),
        ({"ratio": float("inf")}, "ratio"),
        ({"n": "99999999999999999999999999999999"}, "n"),
        ({"n": -(INT64 + 1)}, "n"),
        ({"data": {"deep": [1, {"x": math.nan}]}}, "data"),
        ({"data": [2**64]}, "data"),
    ],
)
def test_values_json_cannot_carry_are_refused_naming_the_parameter(params: dict, named: str) -> None:
    with pytest.raises(ParamError) as refused:
        MANIFEST.validate_params(params)
    assert [key for key, _ in refused.value.problems] == [named]


def test_edge_values_that_fit_pass() -> None:
    ok = {"n": str(INT64 - 1), "ratio": "1e308", "data": {"x": [-INT64, True, None, "nan"]}}
    assert MANIFEST.validate_params(ok)["n"] == INT64 - 1


def test_json_unsafe_says_where() -> None:
    assert json_unsafe({"a": [1, {"b": math.inf}]}) == "['a'][1]['b'] is inf, which JSON cannot represent"
    assert json_unsafe({"a": "fine", "b": [1.5, 2**63 - 1]}) is None
