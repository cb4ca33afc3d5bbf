"""Binlog order of event ids, what counts as a re-sent change, and the loop's progress figures (the
row-change loop against the real broker: tests/integration/test_streams_row_changes.py)."""

from __future__ import annotations

import pytest

from streams.row_changes import Progress, binlog_order, is_resent


def test_binlog_order_parses_positions_only() -> None:
    assert binlog_order("1:mysql-bin.000002:120:3") == ("1:mysql-bin.000002", 120, 3)
    assert binlog_order('snapshot:abc:shop.orders:{"id":1}') is None


def test_a_re_send_is_at_or_before_the_mark_in_the_same_file_of_the_same_server() -> None:
    def resent(event_id: str, mark: str | None) -> bool:
        order = binlog_order(event_id)
        assert order is not None
        return is_resent(order, (binlog_order(mark), mark) if mark else None)  # type: ignore[arg-type]

    assert resent("1:mysql-bin.000002:120:0", "1:mysql-bin.000002:120:0")
    assert resent("1:mysql-bin.000002:120:0", "1:mysql-bin.000002:120:1")
    assert resent("1:mysql-bin.000002:100:5", "1:mysql-bin.000002:120:0")
    assert not resent("1:mysql-bin.000002:120:2", "1:mysql-bin.000002:120:1")
    assert not resent("1:mysql-bin.000002:130:0", "1:mysql-bin.000002:120:0")
    assert not resent("1:mysql-bin.000002:100:0", None)
    # after a failover or RESET MASTER positions start over: never dropped
    assert not resent("1:mysql-bin.000001:4:0", "1:mysql-bin.000412:9000:0")
    assert not resent("2:mysql-bin.000002:100:0", "1:mysql-bin.000002:120:0")


def test_the_recent_averages_start_at_the_first_transaction_and_follow_a_change_within_some_tens() -> None:
    progress = Progress()
    progress.record_commit(0, 0.003)  # a debounce flush alone: in the totals, not in the averages
    progress.record_commit(8, 0.004)
    assert (progress.batches, progress.events) == (2, 8)
    assert (progress.recent_batch_events, progress.recent_commit_ms) == (8.0, 4.0)  # not pulled towards 0
    for _ in range(60):  # the broker slows down: bigger batches, slower commits
        progress.record_commit(40, 0.020)
    assert 38 < progress.recent_batch_events < 40 and 19 < progress.recent_commit_ms < 20
    assert progress.events == 8 + 60 * 40 and progress.commit_seconds == pytest.approx(0.007 + 60 * 0.020)
    assert progress.last_commit > 0
