"""Batch plugins' pure parts: plugin.json `batch`, the worker's per-item answers, the runner's split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plugins.execution import item_outcomes
from plugins.pool import CallOutcome, response_problem
from plugins.registry import load_plugin
from plugins.worker_main import BatchResultError, batch_items, dump_response
from schemas.manifest import ConfigError


def _load(tmp_path: Path, manifest: dict[str, object]) -> str:
    (tmp_path / "plugin.json").write_text(json.dumps({"name": "b", **manifest}))
    (tmp_path / "main.py").write_text("def run(items):\n    return items\n")
    (tmp_path / "x.py").write_text("")
    try:
        plugin = load_plugin(tmp_path)
    except ConfigError as e:
        return str(e)
    return repr(plugin.manifest.batch)


def test_batch_settings_and_their_defaults(tmp_path: Path) -> None:
    assert _load(tmp_path, {"entry_point": "main.run", "batch": {}}) == "BatchSettings(max_size=500, max_wait_ms=20.0)"
    assert _load(tmp_path, {"entry_point": "main.run"}) == "None"


@pytest.mark.parametrize(
    "manifest, words",
    [
        ({"command": ["python", "x.py"], "batch": {}}, "batch: Value error, a command plugin runs one program"),
        ({"entry_point": "main.run", "batch": {"max_size": 0}}, "batch.max_size: Input should be greater than"),
        ({"entry_point": "main.run", "batch": {"max_wait_ms": -1}}, "batch.max_wait_ms: Input should be greater"),
        ({"entry_point": "main.run", "batch": {"size": 5}}, "batch.size: Extra inputs are not permitted"),
        ({"entry_point": "main.run", "batch": 500}, "batch: Input should be a valid dictionary"),
    ],
)
def test_bad_batch_settings_name_the_field(tmp_path: Path, manifest: dict[str, object], words: str) -> None:
    message = _load(tmp_path, manifest)
    assert message.startswith(f"{tmp_path / 'plugin.json'}: ") and words in message, message


def test_each_item_answers_for_itself_and_an_exception_fails_only_its_item() -> None:
    items = batch_items([{"n": 1}, ValueError("bad row"), None], 3)
    assert items[0] == {"ok": True, "output": {"n": 1}} and items[2] == {"ok": True, "output": None}
    assert items[1]["ok"] is False and items[1]["error"]["type"] == "ValueError"
    assert items[1]["error"]["message"] == "bad row"


@pytest.mark.parametrize("outputs", [[1, 2], [1, 2, 3, 4], {"a": 1}, None, "abc"])
def test_anything_but_one_result_per_item_is_an_error_saying_what_came(outputs: object) -> None:
    with pytest.raises(BatchResultError, match="one result per item: got .* for 3 item"):
        batch_items(outputs, 3)


def test_an_item_json_cannot_carry_is_stored_as_its_repr_alone() -> None:
    resp = {"type": "result", "ok": True, "output": None, "items": batch_items([{"a": 1}, {1, 2}, 2**70], 3)}
    sent = json.loads(dump_response(resp))
    assert [i["output"] for i in sent["items"]] == [{"a": 1}, "{1, 2}", str(2**70)]
    assert "note" not in sent["items"][0] and "set" in sent["items"][1]["note"]
    assert "64 bits" in sent["items"][2]["note"]
    assert response_problem(sent) is None


def test_a_malformed_item_is_a_protocol_problem() -> None:
    assert response_problem({"items": [{"ok": True}, "x"]}) == "items[1]: not an object"
    assert response_problem({"items": [{"ok": False, "error": "boom"}]}) == (
        "items[0]: error is not an object with a type and a message"
    )
    assert response_problem({"items": {}}) == "items is not a list"


def test_a_call_splits_into_its_items_outcomes() -> None:
    call = CallOutcome("success", worker_pid=7, sent_at=1.0, received_at=2.0, started_at=1.1, finished_at=1.9)
    call.items = [{"ok": True, "output": 1}, {"ok": False, "error": {"type": "E", "message": "m"}, "output": None}]
    ok, failed = item_outcomes(call, 2)
    assert (ok.status, ok.output, ok.error, ok.worker_pid, ok.items) == ("success", 1, None, 7, None)
    assert (failed.status, failed.error) == ("failed", {"type": "E", "message": "m"})
    assert failed.duration_ms == pytest.approx(800.0)  # the call's duration, for each of its items


def test_a_failed_call_fails_each_item_alike_and_a_miscounted_answer_is_a_protocol_error() -> None:
    timeout = CallOutcome("timeout", error={"type": "Timeout", "message": "did not finish"})
    assert [o.status for o in item_outcomes(timeout, 3)] == ["timeout"] * 3
    short = CallOutcome("success", items=[{"ok": True, "output": 1}])
    outcomes = item_outcomes(short, 2)
    assert [o.status for o in outcomes] == ["failed", "failed"]
    assert outcomes[0].error == {
        "type": "ProtocolError",
        "message": "a batch call of 2 answered 1 items",
        "traceback": None,
    }
