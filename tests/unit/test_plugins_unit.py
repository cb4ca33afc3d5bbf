"""Pure logic of the plugins part: framing, discovery, venv cache keys, offset tracking, worker helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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


def test_slim_payload_drops_the_output_but_keeps_the_rest():
    from plugins.sink import slim_payload

    full = json.dumps(
        {"invocation_id": "i", "status": "success", "output": {"blob": "x" * 5000}, "error": None}
    ).encode()
    slim = json.loads(slim_payload(full))
    assert slim["output"] is None and slim["status"] == "success" and slim["invocation_id"] == "i"
    assert slim["output_truncated"]["bytes"] > 5000
