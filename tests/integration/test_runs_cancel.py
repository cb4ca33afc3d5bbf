"""Cancelling runs (issue 14): cancel marks in the real Redis, and what runners do with them."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from plugins.cancel import CancelError, Cancels, cancel_with, is_cancelled
from plugins.store import RunStore
from schemas.result import Result
from tests.support import isolated_settings, remove_test_resources


@pytest.fixture
def settings(stack):
    s = isolated_settings("cancel")
    yield s
    remove_test_resources(s, [])


def test_marks_are_kept_once_listed_for_runners_and_expire(settings):
    store = RunStore(settings)
    cancels = Cancels(store.client, store.prefix, store.ttl)
    try:
        before = time.time() - 0.001
        first = cancel_with(store, cancels, "inv-1", "cli:alice")
        again = cancel_with(store, cancels, "inv-1", "api:bob")
        assert again == first and first.by == "cli:alice"  # the first request is the one kept
        assert is_cancelled(settings, "inv-1") and not is_cancelled(settings, "inv-2")
        assert cancels.cancelled(["inv-1", "inv-2", "inv-1"]) == {"inv-1"}
        assert [i for i, _ in cancels.requested_since(before)] == ["inv-1"]
        assert cancels.requested_since(first.at) == []
        assert 0 < store.client.ttl(cancels.key("inv-1")) <= store.ttl
        with pytest.raises(CancelError, match="blank"):
            cancel_with(store, cancels, "  ", "cli")
    finally:
        store.close()


def test_a_finished_run_cannot_be_cancelled(settings):
    store = RunStore(settings)
    cancels = Cancels(store.client, store.prefix, store.ttl)
    try:
        now = datetime.now(UTC)
        store.record(
            Result(
                invocation_id="done-1",
                plugin="echo",
                plugin_version="1",
                status="success",
                started_at=now,
                finished_at=now,
                duration_ms=1.0,
            )
        )
        with pytest.raises(CancelError, match=r"done-1 already finished \(success\)"):
            cancel_with(store, cancels, "done-1", "cli")
        assert not cancels.is_cancelled("done-1")
    finally:
        store.close()
