"""Retry backoff and the retry of an invocation (pure logic; retries, dead letters and replay in a running
runner: tests/integration/test_plugins_retries.py)."""

from __future__ import annotations

from plugins.retries import backoff_seconds, retry_of
from schemas.manifest import RetryPolicy
from tests.support.plugins import new_invocation


def test_backoff_is_exponential_and_capped():
    policy = RetryPolicy(max_retries=5, retry_delay=1.0, backoff_factor=3.0, max_delay=5.0)
    assert [backoff_seconds(policy, a) for a in (1, 2, 3)] == [1.0, 3.0, 5.0]


def test_a_retry_keeps_the_id_and_points_at_the_original():
    from plugins.execution import rejected_result

    inv = new_invocation("flaky", {"succeed_on": 3})
    failed = rejected_result(inv.invocation_id, "flaky", "1", "RuntimeError", "boom").model_copy(
        update={"status": "failed"}
    )
    retry, not_before = retry_of(inv, failed, RetryPolicy(max_retries=2, retry_delay=2.0), now=1000.0)
    assert (retry.invocation_id, retry.attempt, retry.trigger.kind) == (inv.invocation_id, 2, "retry")
    assert retry.trigger.original_invocation_id == inv.invocation_id and "boom" in retry.trigger.previous_error
    assert not_before == 1002.0
    again, not_before = retry_of(retry, failed, RetryPolicy(max_retries=2, retry_delay=2.0), now=1000.0)
    assert again.attempt == 3 and again.trigger.original_invocation_id == inv.invocation_id and not_before == 1004.0
