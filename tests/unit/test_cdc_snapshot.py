"""The earlier of two binlog positions, per GTID domain (the snapshot on the real stack:
tests/integration/test_cdc_snapshot.py)."""

from __future__ import annotations

from cdc.checkpoint import Position
from cdc.snapshot import earlier_position


def test_earlier_position_per_gtid_domain() -> None:
    a = Position(file="mysql-bin.000003", pos=10, gtid_set="0-1-100,1-2-7")
    b = Position(file="mysql-bin.000004", pos=4, gtid_set="0-1-120,1-2-5,2-1-9")
    assert earlier_position(a, b, True).gtid_set == "0-1-100,1-2-5,2-1-9"
    assert earlier_position(b, a, True).gtid_set == "0-1-100,1-2-5,2-1-9"
    mysql_a, mysql_b = Position(file="binlog.000002", pos=900), Position(file="binlog.000003", pos=4)
    assert earlier_position(mysql_b, mysql_a, False) is mysql_a
