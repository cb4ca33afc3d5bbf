"""Properties of rule `params` templates (streams/mapping.py) over arbitrary data (issue 17, item 6):
any params mapping either compiles or raises MappingError naming the parameter; a compiled one fills
in every change the row-change loop accepts (any column values: NaN, integers past 64 bits, deep
nesting, unicode) without raising; a whole placeholder keeps the value itself; text without a
placeholder is sent as it is."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.mapping import MappingError, column_references, compile_params
from tests.support.strategies import DEEP, HUGE_INTS, HUGEST_INT, JSON, SCALARS, TEXT, expand, json_values, nested

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
COLUMNS = ["id", "status", "é x", ""]
ROW_VALUES = st.one_of(SCALARS, HUGE_INTS, DEEP, json_values(6))
ROWS = st.one_of(
    st.none(),
    st.builds(
        lambda known, other: {**other, **known},
        st.fixed_dictionaries({}, optional=dict.fromkeys(COLUMNS, ROW_VALUES)),
        st.dictionaries(TEXT, ROW_VALUES, max_size=2),
    ),
)
# Changes as parse_change lets them through to the matcher: only source.db/table, event_id and op
# are checked, and before/after are objects or null; anything else may be anything.
EVENTS = st.fixed_dictionaries(
    {
        "before": ROWS,
        "after": ROWS,
        "op": st.sampled_from(["c", "u", "d", "r"]),
        "event_id": TEXT.filter(bool),
        "source": st.fixed_dictionaries({"db": TEXT, "table": TEXT}, optional={"server_id": JSON}),
    },
    optional={"ts_ms": JSON},
)
REFERENCES = st.sampled_from(
    [
        *(f"{{{head}.{col}}}" for head in ("after", "before", "row", "data", "changes") for col in COLUMNS if col),
        *("{after}", "{before}", "{row}", "{data}", "{changes}"),
        *("{db}", "{table}", "{op}", "{operation}", "{event_id}", "{ts_ms}"),
    ]
)
# Pieces that are not placeholders, or are broken ones: literal text, braces, unclosed/unknown names.
ODD_PIECES = st.sampled_from(
    ["{", "}", "{{", "}}", "{a", "{1}", "{after.", "{after.}", "{nope}", "{ x}", "{after.{id}}"]
)
TEMPLATE_STRINGS = st.lists(st.one_of(REFERENCES, REFERENCES, TEXT, ODD_PIECES), max_size=4).map("".join)
TEMPLATES = st.recursive(
    st.one_of(TEMPLATE_STRINGS, TEMPLATE_STRINGS, SCALARS, DEEP),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TEXT, inner, max_size=3)),
    max_leaves=8,
)
PARAMS = st.dictionaries(TEXT, TEMPLATES, max_size=4)


def _compiled(params: dict[str, Any]) -> Any:
    try:
        build = compile_params(params)
    except MappingError as e:
        assert str(e).startswith("params.") and e.key.startswith("params.")
        return None
    return build


@SETTINGS
@given(PARAMS, st.lists(EVENTS, min_size=1, max_size=3))
def test_params_compile_or_name_the_parameter_and_fill_in_on_any_change(params: Any, events: Any) -> None:
    params, events = expand((params, events))
    build = _compiled(params)
    refs_ok = True
    try:
        list(column_references(params))
    except MappingError:
        refs_ok = False
    assert refs_ok or build is None  # what compiles, rules check reads (it leaves unknown names to the compile)
    if build is None:
        return
    for event in events:
        try:
            filled = build(event)
        except MappingError as e:  # a value that cannot be written into a text (nesting past the limit)
            assert str(e).startswith("params.") and "cannot be written into" in str(e)
        else:
            assert type(filled) is dict and list(filled) == list(params)


@SETTINGS
@given(st.sampled_from([c for c in COLUMNS if c]), st.sampled_from(["after", "before", "row", "data"]), EVENTS)
def test_a_whole_placeholder_keeps_the_value_itself(column: str, head: str, event: Any) -> None:
    event = expand(event)
    row = event.get("after") if head in ("after", "row", "data") else event.get("before")
    if head in ("row", "data") and row is None:
        row = event.get("before")
    filled = compile_params({"p": f"{{{head}.{column}}}", "q": f"{{{head}}}"})(event)
    assert filled["p"] is (row or {}).get(column)
    assert filled["q"] is row


@SETTINGS
@given(st.dictionaries(TEXT, st.one_of(TEXT.filter(lambda t: "{" not in t), json_values(6)), max_size=4))
def test_params_without_placeholders_are_sent_as_written(params: dict[str, Any]) -> None:
    params = {k: v for k, v in params.items() if "{" not in repr(v)}
    assert compile_params(params)({"op": "c", "before": None, "after": None, "source": {}}) == params


@pytest.mark.parametrize(
    "value",
    [
        nested(300),  # deeper than orjson writes (254)
        nested(1100, as_dict=True),  # deeper than json.dumps recurses
        [2**64],  # an integer orjson does not write
        {"a": [10**400]},
        HUGEST_INT,  # str() refuses it (past 4300 digits)
    ],
    ids=["list-300", "dict-1100", "uint64-in-list", "int-400-digits", "int-5001-digits"],
)
def test_a_value_inside_text_is_written_or_named(value: Any) -> None:
    build = compile_params({"note": "id {after.v}!", "whole": "{after.v}"})
    event = {"op": "u", "before": {"v": 1}, "after": {"v": value}, "event_id": "e", "source": {"db": "d"}}
    try:
        filled = build(event)
    except MappingError as e:
        assert str(e).startswith("params.note: ") and len(str(e)) < 300
    else:
        assert filled["note"].startswith("id ") and filled["whole"] is value


@pytest.mark.parametrize("template", [nested(129), {"a": nested(600, "{after.id}", as_dict=True)}, nested(5000)])
def test_params_nested_past_the_limit_are_a_named_error(template: Any) -> None:
    """YAML reads lists nested ~900 deep; compiling and rules check recursed per level (RecursionError)."""
    with pytest.raises(MappingError, match=r"^params\.deep: nested more than 128 levels deep$"):
        compile_params({"deep": template})
    with pytest.raises(MappingError, match=r"^params\.deep: nested more than 128 levels deep$"):
        list(column_references({"deep": template}))
    assert compile_params({"deep": nested(128)})({"op": "c", "after": None, "before": None}) == {"deep": nested(128)}
