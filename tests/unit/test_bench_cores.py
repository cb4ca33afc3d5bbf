"""The drain and latency benchmarks' CPU report: cores per part, the same per row, and the ceiling."""

from __future__ import annotations

import pytest

from bench.cores import print_cores


def test_cpu_per_row_and_the_rate_the_cores_can_carry(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1})
    # 10 s, 40,000 rows: 0.6 cores is 150 us of CPU per row, 0.2 is 50; 200 us a row in all.
    print_cores({"runner": 0.6, "redis": 0.2, "idle part": 0.001}, 10.0, 40_000, "during the drain")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("cores used during the drain: runner 0.60, redis 0.20; load average ")
    assert lines[1] == "CPU per row change (us): runner 150, redis 50; all parts 200"
    assert lines[2] == "at these costs 2 core(s) carry at most 10,000 row changes/s through these parts"


def test_no_ceiling_when_no_part_used_a_core(capsys: pytest.CaptureFixture[str]) -> None:
    print_cores({"runner": 0.001}, 10.0, 100, "during the drain")
    assert "carry at most" not in capsys.readouterr().out
