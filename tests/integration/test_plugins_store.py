"""Run history and done markers in the real Redis of the local stack."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from plugins.store import RunStore
from schemas.result import ErrorInfo, Result, RunStatus
from tests.support import isolated_settings, remove_test_resources
from tests.support.results import a_result


@pytest.fixture
def store(stack):
    settings = isolated_settings("store")
    s = RunStore(settings)
    yield s
    s.close()
    remove_test_resources(settings, [])


def _result(iid: str, plugin: str, status: RunStatus, finished: datetime) -> Result:
    error = ErrorInfo(type="E", message="m") if status != "success" else None
    return a_result(
        iid, plugin=plugin, status=status, at=finished, duration_ms=5.0, output={"n": iid}, error=error, code_hash="abc"
    )


def test_record_get_done_and_ttl(store):
    now = datetime.now(UTC)
    r = _result("a1", "echo", "success", now)
    assert store.done_ids(["a1", "a2"]) == set()
    store.record(r)
    assert store.done_ids(["a1", "a2"]) == {"a1"}
    got = store.get("a1")
    assert got == r and got.code_hash == "abc"  # extra fields survive the round trip
    assert store.get("nope") is None
    assert 0 < store.client.ttl(store.run_key("a1")) <= store.ttl
    assert 0 < store.client.ttl(store.done_key("a1")) <= store.ttl


def test_list_is_newest_first_and_filters(store):
    now = datetime.now(UTC)
    rows: list[tuple[str, str, RunStatus]] = [
        ("r1", "echo", "success"),
        ("r2", "echo", "failed"),
        ("r3", "data_processor", "success"),
        ("r4", "echo", "success"),
        ("r5", "data_processor", "rejected"),
    ]
    store.record_many([_result(i, p, s, now + timedelta(seconds=n)) for n, (i, p, s) in enumerate(rows)])

    assert [r.invocation_id for r in store.list(limit=10)] == ["r5", "r4", "r3", "r2", "r1"]
    assert [r.invocation_id for r in store.list(limit=2)] == ["r5", "r4"]
    assert [r.invocation_id for r in store.list(plugin="echo")] == ["r4", "r2", "r1"]
    assert [r.invocation_id for r in store.list(status="success")] == ["r4", "r3", "r1"]
    assert [r.invocation_id for r in store.list(plugin="echo", status="success")] == ["r4", "r1"]
    assert store.list(plugin="unknown") == []


def test_expired_runs_leave_the_index(store):
    old = datetime.now(UTC) - timedelta(seconds=store.ttl + 60)
    store.record(_result("old", "echo", "success", old))
    store.client.delete(store.run_key("old"))  # as if it had expired
    assert store.list() == []  # a dangling index entry is skipped
    store.record(_result("new", "echo", "success", datetime.now(UTC)))
    members = store.client.zrange(store.index_key(), 0, -1)
    assert members == [b"new"]  # the write trimmed entries older than the TTL


def test_done_and_tried_markers_are_separate(store):
    """A failed attempt that was retried marks only (id, attempt): the retry itself is not 'done'."""
    now = datetime.now(UTC)
    store.record_many([_result("a", "echo", "failed", now)], finals=[False])
    assert store.seen([("a", 1), ("a", 2)]) == (set(), {("a", 1)})
    assert [x["attempt"] for x in store.attempts("a")] == [1]
    assert store.attempts("a")[0]["error"] == {"type": "E", "message": "m", "traceback": None}
    store.record_many([_result("a", "echo", "success", now).model_copy(update={"attempt": 2})])
    assert store.seen([("a", 2)]) == ({"a"}, set())
    assert [x["attempt"] for x in store.attempts("a")] == [1]  # a success is not an attempt summary


def test_runs_list_since(stack, tmp_path):
    import json

    from click.testing import CliRunner

    from console.cli import cli
    from tests.support import isolated_config_data, write_config

    cfg = write_config(tmp_path, isolated_config_data("since"))
    store = RunStore(cfg.settings)
    now = datetime.now(UTC)
    ages = {
        "h3": timedelta(hours=3),
        "m90": timedelta(minutes=90),
        "m10": timedelta(minutes=10),
        "m1": timedelta(minutes=1),
    }
    store.record_many([_result(i, "echo", "failed" if i == "m10" else "success", now - age) for i, age in ages.items()])
    try:

        def listed(*args: str) -> list[str]:
            out = CliRunner().invoke(cli, ["-c", str(cfg.path), "runs", "list", "--json", *args])
            assert out.exit_code == 0, out.output
            return [json.loads(line)["invocation_id"] for line in out.stdout.splitlines()]

        assert listed() == ["m1", "m10", "m90", "h3"]
        assert listed("--since", "2h") == ["m1", "m10", "m90"]
        assert listed("--since", "30m") == ["m1", "m10"]
        assert listed("--since", "30m", "--plugin", "echo", "--status", "success") == ["m1"]
        assert listed("--since", "30m", "--status", "failed") == ["m10"]
        iso = (now - timedelta(minutes=100)).replace(tzinfo=None).isoformat()  # naive = UTC
        assert listed("--since", iso) == ["m1", "m10", "m90"]
        assert listed("--since", "1s") == []

        out = CliRunner().invoke(cli, ["-c", str(cfg.path), "runs", "list", "--since", "last tuesday"])
        assert out.exit_code == 2 and "--since" in out.output and "neither a duration" in out.output, out.output
    finally:
        store.close()
        remove_test_resources(cfg.settings, [])


def test_results_with_states_in_one_round_trip_survive_a_flushed_script_cache(store):
    """The writer's states + results pipeline calls both scripts by sha; when Redis does not know them
    (a restart, SCRIPT FLUSH) they are loaded again and the batch is stored, once."""
    now = datetime.now(UTC)
    store.client.script_flush()
    failed = _result("f1", "echo", "failed", now)
    states = [("s1", now.timestamp(), b'{"status": "running"}', "running", 1)]
    store.record_many([failed, _result("ok1", "echo", "success", now)], states=states)
    assert store.done_ids(["f1", "ok1"]) == {"f1", "ok1"}
    assert len(store.attempts("f1")) == 1  # the failed attempt's summary, not twice
    assert store.client.get(store.state_key("s1")) == b'{"status": "running"}'
    store.client.script_flush()
    store.record_many([_result("ok2", "echo", "success", now)], states=[("ok2", now.timestamp(), b"{}", "running", 1)])
    assert store.done_ids(["ok2"]) == {"ok2"} and store.client.get(store.state_key("ok2")) is None  # ended


def test_no_state_is_written_for_an_attempt_already_over(store):
    """A runner that took an attempt before a rebalance may write its held state after another runner
    recorded that attempt: failed and retried (its `tried` marker), or done. Neither shows in progress
    again; the next attempt's state still does."""
    now = datetime.now(UTC)
    store.record_many([_result("r", "echo", "failed", now), _result("d", "echo", "success", now)], finals=[False, True])
    late = [(iid, now.timestamp(), b'{"attempt":1}', "pending", 1) for iid in ("r", "d")]
    store.record_states([*late, ("n", now.timestamp(), b'{"attempt":1}', "pending", 1)])
    pending = store.index_key(status="pending")
    assert [store.client.get(store.state_key(iid)) for iid in ("r", "d", "n")] == [None, None, b'{"attempt":1}']
    assert store.client.zrange(pending, 0, -1) == [b"n"]
    store.record_states([("r", now.timestamp(), b'{"attempt":2}', "pending", 2)])
    assert store.client.get(store.state_key("r")) == b'{"attempt":2}'
    assert set(store.client.zrange(pending, 0, -1)) == {b"n", b"r"}


def test_the_scripts_keys_are_the_ones_the_key_methods_name(store):
    """The Lua scripts build their per-run keys from the prefix; the readers use RunStore's key methods.
    Every key the scripts write, and every key they read, must be the one the methods name."""
    now = datetime.now(UTC)
    states = [("st", now.timestamp(), b"{}", "running", 1), ("pe", now.timestamp(), b"{}", "pending", 1)]
    store.record_many(
        [_result("ok", "echo", "success", now), _result("tr", "crawler", "failed", now)], finals=[True, False]
    )
    store.record_states(states)
    written = {k.decode() for k in store.client.scan_iter(match=f"{store.prefix}:*")}
    assert written == {
        store.run_key("ok"),
        store.done_key("ok"),
        store.run_key("tr"),
        store.tried_key("tr", 1),
        store.attempts_key("tr"),
        store.state_key("st"),
        store.state_key("pe"),
        store.index_key(),
        store.index_key(plugin="echo"),
        store.index_key(plugin="crawler"),
        store.index_key(status="success"),
        store.index_key(status="failed"),
        store.index_key(status="running"),
        store.index_key(status="pending"),
    }
    store.client.set(store.done_key("d"), "1")
    store.client.set(store.tried_key("t", 3), "1")
    store.client.set(store.cancel_key("c"), "{}")
    assert store.accept([("d", 1), ("t", 3), ("t", 4), ("c", 1), ("new", 1)]) == [1, 2, 0, 3, 0]
