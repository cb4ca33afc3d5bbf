"""The TIME2 decoder against MySQL's packing (every type family through the real reader:
tests/integration/test_cdc_types.py)."""

from __future__ import annotations

from cdc.libfixes import time2_from_bytes


def test_time2_decoder_matches_mysql_packing() -> None:
    # '-00:00:01.5' at fsp 1: MySQL stores floor(packed >> 24) = -2 -> 0x7ffffe and the fraction -50 -> 0xce
    assert str(time2_from_bytes(bytes([0x7F, 0xFF, 0xFE, 0xCE]), 1)) == "-1 day, 23:59:58.500000"
    assert time2_from_bytes(bytes([0x80, 0x10, 0x00]), 0).total_seconds() == 3600
