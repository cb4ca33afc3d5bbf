"""Run history and done markers in the real Redis of the local stack."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from plugins.store import RunStore
from tests.support import isolated_settings, remove_test_resources
from schemas.result import ErrorInfo, Result

pytestmark = pytest.mark.integration


@pytest.fixture
def store(stack):
    settings = isolated_settings("store")
    s = RunStore(settings)
    yield s
    s.close()
    remove_test_resources(settings, [])


def _result(iid: str, plugin: str, status: str, finished: datetime) -> Result:
    return Result(invocation_id=iid, plugin=plugin, plugin_version="1.0.0", status=status,
                  started_at=finished - timedelta(milliseconds=5), finished_at=finished, duration_ms=5.0,
                  output={"n": iid}, error=ErrorInfo(type="E", message="m") if status != "success" else None,
                  code_hash="abc")


def test_record_get_done_and_ttl(store):
    now = datetime.now(timezone.utc)
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
    now = datetime.now(timezone.utc)
    rows = [("r1", "echo", "success"), ("r2", "echo", "failed"), ("r3", "data_processor", "success"),
            ("r4", "echo", "success"), ("r5", "data_processor", "rejected")]
    store.record_many([_result(i, p, s, now + timedelta(seconds=n)) for n, (i, p, s) in enumerate(rows)])

    assert [r.invocation_id for r in store.list(limit=10)] == ["r5", "r4", "r3", "r2", "r1"]
    assert [r.invocation_id for r in store.list(limit=2)] == ["r5", "r4"]
    assert [r.invocation_id for r in store.list(plugin="echo")] == ["r4", "r2", "r1"]
    assert [r.invocation_id for r in store.list(status="success")] == ["r4", "r3", "r1"]
    assert [r.invocation_id for r in store.list(plugin="echo", status="success")] == ["r4", "r1"]
    assert store.list(plugin="unknown") == []


def test_expired_runs_leave_the_index(store):
    old = datetime.now(timezone.utc) - timedelta(seconds=store.ttl + 60)
    store.record(_result("old", "echo", "success", old))
    store.client.delete(store.run_key("old"))  # as if it had expired
    assert store.list() == []  # a dangling index entry is skipped
    store.record(_result("new", "echo", "success", datetime.now(timezone.utc)))
    members = store.client.zrange(store.index_key(), 0, -1)
    assert members == [b"new"]  # the write trimmed entries older than the TTL



def test_done_and_tried_markers_are_separate(store):
    """A failed attempt that was retried marks only (id, attempt): the retry itself is not 'done'."""
    now = datetime.now(timezone.utc)
    store.record_many([_result("a", "echo", "failed", now)], finals=[False])
    assert store.seen([("a", 1), ("a", 2)]) == (set(), {("a", 1)})
    assert [x["attempt"] for x in store.attempts("a")] == [1]
    assert store.attempts("a")[0]["error"] == {"type": "E", "message": "m", "traceback": None}
    store.record_many([_result("a", "echo", "success", now).model_copy(update={"attempt": 2})])
    assert store.seen([("a", 2)]) == ({"a"}, set())
    assert [x["attempt"] for x in store.attempts("a")] == [1]  # a success is not an attempt summary
