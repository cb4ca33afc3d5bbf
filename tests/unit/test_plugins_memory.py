"""memory_limit_mb: a plugin that allocates past its limit fails with a clear result; nothing else does."""

from __future__ import annotations

import pytest

from tests.support import plugin_pool
from tests.support.plugins import hog_plugin, worker_request


@pytest.mark.parametrize("mode", ["bytes", "grow"])
def test_allocating_2gb_with_a_256mb_limit_fails_and_the_worker_is_replaced(tmp_path, mode):
    with plugin_pool(hog_plugin(tmp_path)) as pool:
        assert pool.startup_error is None
        (before,) = pool.pids()
        out = pool.call(worker_request({"mode": mode, "mb": 2048}), timeout=30)
        assert out.status == "failed"
        assert out.error["type"] == "MemoryLimitExceeded", out.error
        assert "memory limit of 256 MB" in out.error["message"]
        assert out.worker_pid == before and before not in pool.pids() and len(pool.pids()) == 1
        ok = pool.call(
            worker_request({"mode": "small", "mb": 50}), timeout=30
        )  # the fresh worker works, under its limit
        assert ok.status == "success", ok.error
        assert ok.output == {"mb": 50, "limit": 256 * 1024 * 1024}


def test_without_a_limit_nothing_is_capped(tmp_path):
    with plugin_pool(hog_plugin(tmp_path, limit_mb=None)) as pool:
        out = pool.call(worker_request({"mode": "small", "mb": 300}), timeout=30)
        assert out.status == "success" and out.output["mb"] == 300 and out.output["limit"] == -1  # RLIM_INFINITY
