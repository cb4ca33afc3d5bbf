"""Properties of the runner <-> plugin worker wire protocol over arbitrary data (issue 17, item 6).

Framing round-trips over any chunking and garbage is a ProtocolError; the worker answers any frame
(not JSON, not a request, nesting past the recursion limit) with a result, never by dying; whatever a
plugin returns (NaN, integers past 64 bits, deep nesting, objects) is written so that the runner
reads it as it is or as its repr() with a note; the runner takes any answer it reads or names the
broken protocol; parameters are accepted exactly as JSON carries them or refused with ParamError.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugins.pool import CallOutcome, response_problem
from plugins.worker_main import MAX_OUTPUT_NESTING, FrameDecoder, Plugin, ProtocolError, dump_response, encode_frame
from plugins.worker_main import handle_frame as worker_handle_frame
from schemas.manifest import ParamError, PluginManifest, json_unsafe
from schemas.result import ErrorInfo
from schemas.values import MAX_NESTING, deeper_than
from tests.support.strategies import DEEP, HUGE_INTS, HUGEST_INT, JSON, SCALARS, TEXT, expand, json_values, nested

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
VALUES = st.one_of(SCALARS, HUGE_INTS, DEEP, json_values(8))

ECHO = '''
def run(**params):
    """Returns what it is asked to: the value of `value`, or a Python object named by `make`."""
    kinds = {"nan": float("nan"), "set": {1, 2}, "bytes": b"x", "huge": 10**5000, "deep": None}
    if params.get("make") == "deep":
        out = 1
        for _ in range(5000):
            out = [out]
        return out
    return kinds[params["make"]] if "make" in params else params.get("value")
'''


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Plugin:
    folder = tmp_path_factory.mktemp("echo_plugin")
    (folder / "cdcflow_prop_echo.py").write_text(ECHO)
    plugin = Plugin(str(folder), "cdcflow_prop_echo.run")
    assert plugin.load_error is None, plugin.load_error
    yield plugin
    sys.path.remove(str(folder))


def _runner_reads(data: bytes) -> dict[str, Any]:
    """What the runner makes of the worker's answer (Worker.read_frame, then _call_on's check)."""
    decoder = FrameDecoder()
    decoder.feed(encode_frame(data))
    message = orjson.loads(decoder.next_frame() or b"")
    assert type(message) is dict and response_problem(message) is None, message
    outcome = CallOutcome("success" if message.get("ok") else "failed", output=message.get("output"))
    if message.get("error"):
        ErrorInfo(**message["error"])
    assert outcome.duration_ms >= 0
    return message


def _carried(value: Any) -> bool:
    """Whether JSON brings `value` to the runner and into a result as it is."""
    return not deeper_than(value, MAX_OUTPUT_NESTING) and json_unsafe(value, max_int=2**64) is None


# -- framing -----------------------------------------------------------------------------------
@SETTINGS
@given(st.lists(st.binary(max_size=300), max_size=5), st.lists(st.integers(1, 50), min_size=1, max_size=8))
def test_frames_round_trip_over_any_chunking(payloads: list[bytes], chunks: list[int]) -> None:
    stream, out, decoder, at = b"".join(encode_frame(p) for p in payloads), [], FrameDecoder(), 0
    for i in range(len(stream)):
        size = chunks[i % len(chunks)]
        decoder.feed(stream[at : at + size])
        at += size
        while (frame := decoder.next_frame()) is not None:
            out.append(frame)
    assert out == payloads and decoder.buffered == 0


@SETTINGS
@given(st.binary(max_size=64))
def test_a_garbage_stream_gives_frames_or_a_protocol_error(stream: bytes) -> None:
    decoder = FrameDecoder()
    decoder.feed(stream)
    try:
        while decoder.next_frame() is not None:
            pass
    except ProtocolError as e:
        assert "exceeds" in str(e)


# -- the worker's side ---------------------------------------------------------------------------
def _frames() -> st.SearchStrategy[bytes]:
    requests = st.fixed_dictionaries(
        {},
        optional={
            "invocation_id": st.one_of(TEXT, JSON),
            "params": st.one_of(st.dictionaries(st.sampled_from(["value", "x", "context"]), VALUES), JSON),
            "context": st.one_of(st.dictionaries(TEXT, JSON, max_size=3), JSON),
        },
    )
    documents = st.one_of(requests, requests, JSON).map(expand)
    return st.one_of(documents.map(_json_text), st.binary(max_size=40))


def _json_text(doc: Any) -> bytes:
    try:
        return json.dumps(doc).encode()  # NaN, huge ints: what a broken writer might send
    except (RecursionError, ValueError):
        return b"[" * 3000 + b"]" * 3000


@SETTINGS
@given(_frames())
def test_the_worker_answers_any_frame_and_the_runner_reads_the_answer(echo: Plugin, frame: bytes) -> None:
    resp = worker_handle_frame(echo, frame)
    assert resp["type"] == "result"
    if not resp["ok"]:
        assert resp["error"]["type"] and resp["error"]["message"]
    _runner_reads(dump_response(resp))


@SETTINGS
@given(VALUES)
def test_an_output_arrives_as_it_is_or_as_its_repr_with_a_note(echo: Plugin, value: Any) -> None:
    value = expand(value)
    read = _runner_reads(dump_response(echo.call({"invocation_id": "i", "params": {"value": value}})))
    assert read["ok"] is True
    if _carried(value):
        assert read["output"] == value and "note" not in read
    else:
        assert type(read["output"]) is str and "not JSON-serializable" in read["note"]


@pytest.mark.parametrize("make", ["nan", "set", "bytes", "huge", "deep"])
def test_outputs_json_cannot_carry_become_their_repr(echo: Plugin, make: str) -> None:
    read = _runner_reads(dump_response(echo.call({"invocation_id": "i", "params": {"make": make}})))
    assert type(read["output"]) is str and read["note"]


def test_the_output_nesting_limit_is_the_schemas_one() -> None:
    assert MAX_OUTPUT_NESTING == MAX_NESTING  # worker_main.py cannot import schemas/values.py


# -- the runner's side ---------------------------------------------------------------------------
ANSWER_FIELDS = st.sampled_from(["started_at", "finished_at", "entry_called_at", "error", "note", "ok", "output"])


@SETTINGS
@given(st.one_of(st.dictionaries(ANSWER_FIELDS, JSON).map(expand).map(_json_text), _frames()))
def test_the_runner_takes_an_answer_or_names_the_broken_protocol(frame: bytes) -> None:
    try:
        message = orjson.loads(frame)  # as Worker.read_frame: JSONDecodeError is a crash of the worker
    except orjson.JSONDecodeError:
        return
    if type(message) is not dict:
        return  # read_frame raises ProtocolError (test_plugins_unit covers it)
    problem = response_problem(message)
    if problem is not None:
        assert problem
        return
    outcome = CallOutcome("failed", error=message.get("error"), started_at=message.get("started_at"))
    outcome.finished_at = message.get("finished_at")
    assert outcome.duration_ms >= 0
    if message.get("error"):
        ErrorInfo(**message["error"])


# -- parameters ----------------------------------------------------------------------------------
MANIFEST = PluginManifest.model_validate(
    {
        "name": "p",
        "entry_point": "main.run",
        "parameters": {t: {"type": t} for t in ("string", "integer", "number", "boolean", "object", "array", "any")},
    }
)
PARAM_VALUES = st.one_of(VALUES, st.sampled_from(["[" * 3000, "1" * 5000, "nan", "1e400", '{"a": NaN}', "[[1]]"]))


@SETTINGS
@given(st.dictionaries(st.one_of(st.sampled_from(sorted(MANIFEST.parameters)), TEXT), PARAM_VALUES, max_size=4))
def test_parameters_are_taken_as_json_carries_them_or_refused_naming_them(params: dict[str, Any]) -> None:
    params = expand(params)
    try:
        checked = MANIFEST.validate_params(params)
    except ParamError as e:
        assert all(key and reason for key, reason in e.problems) and str(e)
        return
    assert set(checked) <= set(params)
    for name, value in checked.items():
        assert json_unsafe(value) is None and not deeper_than(value, MAX_NESTING), name
        assert orjson.loads(orjson.dumps(value)) == value


@pytest.mark.parametrize(
    "value",
    [HUGEST_INT, -HUGEST_INT, nested(5000), nested(5000, as_dict=True), [nested(2000), float("nan")]],
    ids=["int-5001-digits", "negative", "list-5000", "dict-5000", "deep-then-nan"],
)
def test_json_unsafe_names_any_value(value: Any) -> None:
    why = json_unsafe({"v": value})
    assert why is not None and why.startswith("['v']") and len(why) < 1000


@pytest.mark.parametrize(
    ("ptype", "value"),
    [
        *((t, HUGEST_INT) for t in ("string", "integer", "number", "any")),
        *((t, nested(5000)) for t in ("array", "any")),
        ("object", {"a": nested(5000)}),
        *((t, "[" * 3000 + "]" * 3000) for t in ("array", "object", "integer")),
        ("array", "[" * 200 + "]" * 200),  # JSON text nested past MAX_NESTING
        ("integer", "9" * 5000),
        ("number", "9" * 5000),  # float() of it is inf
    ],
    ids=lambda case: case if isinstance(case, str) and len(case) < 10 else type(case).__name__,
)
def test_a_parameter_json_cannot_carry_is_refused_by_name(ptype: str, value: Any) -> None:
    with pytest.raises(ParamError, match=f"parameters: {ptype}: "):
        MANIFEST.validate_params({ptype: value})


# -- the runner's side: invocations in -------------------------------------------------------------
CDC_TRIGGERS = st.fixed_dictionaries(
    {"kind": st.just("cdc"), "rule": TEXT, "event_id": TEXT, "table": TEXT, "op": TEXT},
    optional={"before": st.one_of(st.none(), st.dictionaries(TEXT, VALUES)), "after": st.dictionaries(TEXT, VALUES)},
)
MANUAL_TRIGGER = {"kind": "manual", "requested_by": "me", "requested_at": "2026-01-01T00:00:00Z", "request_id": "r"}
INVOCATIONS = st.fixed_dictionaries(
    {
        # mostly well-formed around the part under test, so that most messages get past the model
        "invocation_id": st.one_of(st.just("id-1"), st.just("id-1"), TEXT, st.just("   "), st.just("x" * 300)),
        "plugin": st.sampled_from(["p", "p", "p", "q"]),
        "params": st.one_of(
            *[st.dictionaries(st.sampled_from(sorted(MANIFEST.parameters)), PARAM_VALUES, max_size=3)] * 3, JSON
        ),
        "trigger": st.one_of(CDC_TRIGGERS, CDC_TRIGGERS, st.just(MANUAL_TRIGGER), JSON),
    },
    optional={"attempt": st.one_of(st.integers(1, 10), HUGE_INTS, JSON)},
)


@SETTINGS
@given(INVOCATIONS.map(expand).map(_json_text))
def test_an_invocation_is_run_or_rejected_and_either_is_recorded(raw: bytes) -> None:
    """As the runner's _parse then execute: any message is refused with a ValidationError, rejected
    with a reason, or becomes a request the worker reads back equal; a rejection always encodes."""
    from pydantic import ValidationError

    from plugins.execution import build_request, rejected_result
    from plugins.runner import _trigger_of, _unrunnable
    from schemas.invocation import Invocation

    try:
        invocation = Invocation.model_validate_json(raw)
    except ValidationError as e:
        assert str(e)
        return
    problem = _unrunnable(invocation, "p")
    reason = problem[1] if problem else None
    if problem is None:
        try:
            params = MANIFEST.validate_params(invocation.params)
        except ParamError as e:
            reason = str(e)
        else:
            payload = orjson.dumps(build_request(invocation, params))  # what WorkerPool.call sends
            assert json.loads(payload)["params"] == params
            return
    assert reason
    result = rejected_result(
        invocation.invocation_id,
        "p",
        "1",
        "InvalidInvocation",
        reason,
        attempt=invocation.attempt,
        params=invocation.params,
        trigger=_trigger_of(invocation),
    )
    orjson.loads(result.model_dump_json())  # the sink writes it: it must encode, whatever was asked
