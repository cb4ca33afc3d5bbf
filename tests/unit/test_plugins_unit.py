"""Pure logic of the plugins part: framing, discovery, venv cache keys, offset tracking, worker helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from plugins import offsets
from plugins.offsets import Earlier, OffsetTracker
from plugins.registry import code_hash, discover
from plugins.venvs import venv_spec
from plugins.worker_main import (
    HEADER,
    MAX_FRAME_BYTES,
    Context,
    FrameDecoder,
    ProtocolError,
    accepts_context,
    dump_response,
    encode_frame,
)


# -- framing -----------------------------------------------------------------------------------
def test_frames_round_trip_across_arbitrary_chunking():
    payloads = [b"", b"{}", json.dumps({"x": "\u00e9" * 1000}).encode(), b"z" * 200_000]
    stream = b"".join(encode_frame(p) for p in payloads)
    for chunk in (1, 3, 7, 4096, len(stream)):
        dec = FrameDecoder()
        out = []
        for i in range(0, len(stream), chunk):
            dec.feed(stream[i : i + chunk])
            while (frame := dec.next_frame()) is not None:
                out.append(frame)
        assert out == payloads
        assert dec.buffered == 0


def test_incomplete_frame_waits_for_more_bytes():
    dec = FrameDecoder()
    frame = encode_frame(b'{"a":1}')
    dec.feed(frame[:2])
    assert dec.next_frame() is None
    dec.feed(frame[2:-1])
    assert dec.next_frame() is None
    dec.feed(frame[-1:])
    assert dec.next_frame() == b'{"a":1}'


def test_absurd_frame_length_is_a_protocol_error():
    dec = FrameDecoder()
    dec.feed(HEADER.pack(MAX_FRAME_BYTES + 1) + b"x")
    with pytest.raises(ProtocolError):
        dec.next_frame()


def test_unserializable_output_becomes_repr_with_note():
    class Thing:
        def __repr__(self) -> str:
            return "<Thing 42>"

    resp = json.loads(dump_response({"ok": True, "output": {"t": Thing()}, "error": None}))
    assert resp["output"] == "{'t': <Thing 42>}"
    assert "not JSON-serializable" in resp["note"]
    nan = json.loads(dump_response({"ok": True, "output": float("nan")}))
    assert nan["output"] == "nan" and nan["note"]


def test_context_is_a_dict_with_attribute_access():
    ctx = Context({"invocation_id": "abc", "attempt": 2})
    assert ctx.invocation_id == "abc" and ctx["attempt"] == 2
    with pytest.raises(AttributeError):
        _ = ctx.missing


def test_context_detection():
    def plain(a, b=1): ...
    def named(a, context=None): ...
    def var_kw(a, **kw): ...
    def positional_only(context, /): ...

    assert not accepts_context(plain)
    assert accepts_context(named)
    assert accepts_context(var_kw)
    assert not accepts_context(positional_only)


# -- discovery ---------------------------------------------------------------------------------
def _plugin(root: Path, folder: str, manifest: dict | str, code: str = "def run(**kw):\n    return kw\n") -> Path:
    d = root / folder
    d.mkdir(parents=True)
    (d / "plugin.json").write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    (d / "main.py").write_text(code)
    return d


def test_broken_plugin_is_reported_and_does_not_hide_the_good_one(tmp_path):
    _plugin(tmp_path, "good", {"name": "good", "entry_point": "main.run"})
    _plugin(tmp_path, "bad_json", "{ not json")
    _plugin(tmp_path, "bad_field", {"name": "bad field!", "entry_point": "main.run", "concurrency": 0})
    _plugin(tmp_path, "no_module", {"name": "no_module", "entry_point": "missing.run"})
    (tmp_path / "not_a_plugin").mkdir()

    found = discover([tmp_path])

    assert list(found.plugins) == ["good"]
    messages = {p.path.name: p.message for p in found.problems}
    assert set(messages) == {"bad_json", "bad_field", "no_module"}
    assert "invalid JSON" in messages["bad_json"] and "plugin.json" in messages["bad_json"]
    assert "concurrency" in messages["bad_field"] and "name" in messages["bad_field"]
    assert "missing" in messages["no_module"]


def test_duplicate_names_across_dirs_name_both_paths(tmp_path):
    first = _plugin(tmp_path / "a", "p1", {"name": "same", "entry_point": "main.run"})
    second = _plugin(tmp_path / "b", "p2", {"name": "same", "entry_point": "main.run"})

    found = discover([tmp_path / "a", tmp_path / "b", tmp_path / "nowhere"])

    assert found.plugins["same"].path == first.resolve()
    dup = [p.message for p in found.problems if p.message.startswith("duplicate plugin name")]
    assert len(dup) == 1 and str(first) in dup[0] and str(second) in dup[0]
    assert any("nowhere" in p.message for p in found.problems)


def test_code_hash_follows_code_not_bytecode(tmp_path):
    d = _plugin(tmp_path, "p", {"name": "p", "entry_point": "main.run"})
    h1 = code_hash(d)
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"junk")
    (d / "notes.txt").write_text("not code")
    assert code_hash(d) == h1
    (d / "main.py").write_text("def run(**kw):\n    return 1\n")
    h2 = code_hash(d)
    assert h2 != h1
    (d / "sub").mkdir()
    (d / "sub" / "helper.py").write_text("X = 1\n")
    assert code_hash(d) != h2


def test_bundled_examples_load():
    from tests.support import EXAMPLES_DIR

    found = discover([EXAMPLES_DIR])
    assert found.problems == []
    assert {"echo", "data_processor", "hot_reload_demo", "es_indexer"} <= set(found.plugins)
    assert found.plugins["data_processor"].manifest.dependencies


# -- venv cache key ------------------------------------------------------------------------------
def test_venv_key_ignores_order_and_duplicates_but_not_content_or_python():
    a = venv_spec(["requests==2.32.3", "humanize>=4"], python="cpython-3.11.7")
    b = venv_spec([" humanize>=4", "requests==2.32.3", "humanize>=4"], python="cpython-3.11.7")
    assert a.key == b.key
    assert a.key != venv_spec(["requests==2.32.3", "humanize>=5"], python="cpython-3.11.7").key
    assert a.key != venv_spec(["requests==2.32.3", "humanize>=4"], python="cpython-3.12.1").key
    assert venv_spec([], python="cpython-3.11.7").key != a.key


# -- offsets ---------------------------------------------------------------------------------------
def test_commit_position_waits_for_the_oldest_unfinished_message():
    t = OffsetTracker()
    t.assign("t", 0)
    acks = [t.start("t", 0, off) for off in (10, 11, 12, 13)]
    t.finish(acks[1])
    t.finish(acks[3])
    assert t.commits() == []  # 10 still running
    t.finish(acks[0])
    assert t.commits() == [("t", 0, 12)]  # 10, 11 done; 12 running
    assert t.commits() == []  # nothing new
    t.finish(acks[2])
    assert t.commits() == [("t", 0, 14)]
    assert t.in_flight() == 0


def test_completions_of_a_revoked_assignment_move_no_position():
    t = OffsetTracker()
    t.assign("t", 0)
    old = t.start("t", 0, 5)
    t.revoke("t", 0)
    t.assign("t", 0)
    new = t.start("t", 0, 5)
    t.finish(old)
    assert t.commits() == []
    t.finish(new)
    assert t.commits() == [("t", 0, 6)]


def test_a_message_still_out_from_before_a_reassignment_is_held_until_its_earlier_completion():
    t = OffsetTracker()
    t.assign("t", 0)
    first = t.start("t", 0, 5)
    t.revoke("t", 0)
    t.assign("t", 0)
    again = t.start("t", 0, 5)
    assert t.earlier(again) is Earlier.RUNNING
    t.hold(again, "item")
    assert t.released() == []
    t.finish(first)  # the earlier call ended (published): hand the item back, mark the offset ended
    assert t.released() == ["item"]
    assert t.released() == []
    assert t.earlier(again) is Earlier.ENDED
    assert t.commits() == []  # the earlier completion moves nothing: only the new one does
    t.finish(again)
    assert t.commits() == [("t", 0, 6)]
    assert t.earlier(again) is None  # committed past: forgotten


def test_a_message_finished_behind_an_unfinished_one_is_remembered_as_ended_over_a_revoke():
    t = OffsetTracker()
    t.assign("t", 0)
    a, b = t.start("t", 0, 1), t.start("t", 0, 2)
    t.finish(b)  # published, not committable: 1 is still out
    t.revoke("t", 0)
    t.assign("t", 0)
    a2, b2 = t.start("t", 0, 1), t.start("t", 0, 2)
    assert (t.earlier(a2), t.earlier(b2)) == (Earlier.RUNNING, Earlier.ENDED)
    t.finish(a)
    assert t.earlier(a2) is Earlier.ENDED


def test_held_items_of_a_partition_taken_away_again_are_the_new_owners():
    t = OffsetTracker()
    t.assign("t", 0)
    first = t.start("t", 0, 5)
    t.revoke("t", 0)
    t.assign("t", 0)
    again = t.start("t", 0, 5)
    t.hold(again, "item")
    t.revoke("t", 0)  # the held message was never started here: not out
    t.assign("t", 0)
    third = t.start("t", 0, 5)
    assert t.earlier(third) is Earlier.RUNNING  # the first call still runs
    t.finish(first)
    assert t.released() == []  # nothing of this assignment was held
    assert t.earlier(third) is Earlier.ENDED


def test_released_items_of_a_partition_revoked_before_they_were_handed_back_are_dropped():
    t = OffsetTracker()
    t.assign("t", 0)
    first = t.start("t", 0, 5)
    t.revoke("t", 0)
    t.assign("t", 0)
    again = t.start("t", 0, 5)
    t.hold(again, "item")
    t.finish(first)
    t.revoke("t", 0)
    assert t.released() == []
    t.assign("t", 0)
    assert t.earlier(t.start("t", 0, 5)) is Earlier.ENDED  # not out: it was waiting, never started


def test_ended_offsets_remembered_are_bounded(monkeypatch):
    monkeypatch.setattr(offsets, "MAX_REMEMBERED_ENDED", 3)
    t = OffsetTracker()
    t.assign("t", 0)
    acks = [t.start("t", 0, off) for off in range(6)]
    for ack in acks[1:]:
        t.finish(ack)
    t.revoke("t", 0)
    t.assign("t", 0)
    assert [t.earlier(t.start("t", 0, off)) for off in range(6)] == [Earlier.RUNNING, None, None] + [Earlier.ENDED] * 3


def test_partitions_are_independent():
    t = OffsetTracker()
    a = t.start("x", 0, 0)
    t.start("x", 1, 0)
    t.finish(a)
    assert t.commits(only={("x", 0), ("x", 1)}) == [("x", 0, 1)]
    assert t.in_flight("x") == 1


def test_slim_payload_drops_the_output_but_keeps_the_rest():
    from plugins.sink import slim_payload

    full = json.dumps(
        {"invocation_id": "i", "status": "success", "output": {"blob": "x" * 5000}, "error": None}
    ).encode()
    slim = json.loads(slim_payload(full))
    assert slim["output"] is None and slim["status"] == "success" and slim["invocation_id"] == "i"
    assert slim["output_truncated"]["bytes"] > 5000


def test_a_message_dropped_unrun_by_an_earlier_assignment_is_not_taken_as_ended_here():
    """Dropped while queued (revoked): its result, if any, is another runner's, maybe recorded but never
    published before that runner died; fetched again, it must not be settled as if published here."""
    t = OffsetTracker()
    t.assign("t", 0)
    queued = t.start("t", 0, 5)
    t.revoke("t", 0)
    t.assign("t", 0)
    again = t.start("t", 0, 5)
    t.hold(again, "item")
    t.finish(queued, ran=False)
    assert t.released() == ["item"]
    assert t.earlier(again) is None


def test_a_partition_being_revoked_starts_nothing_and_counts_only_its_running_calls():
    t = OffsetTracker()
    t.assign("t", 0)
    running, queued, done = t.start("t", 0, 1), t.start("t", 0, 2), t.start("t", 0, 3)
    t.finish(done)
    t.start_revoking({("t", 0)})
    assert not t.is_current(queued)  # a lane thread drops it rather than start it
    t.finish(queued, ran=False)
    assert t.unsettled({("t", 0)}) == 1  # only the running call is waited for
    t.finish(running)
    assert t.unsettled({("t", 0)}) == 0
    assert t.commits() == [("t", 0, 2)]  # the dropped message is not committed: the new owner runs it
    t.revoke("t", 0)
    t.assign("t", 0)
    assert [t.earlier(t.start("t", 0, o)) for o in (2, 3)] == [None, Earlier.ENDED]
