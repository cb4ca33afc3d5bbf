"""Corrections to mysql-replication's decoding, applied once on import.

Each fix replaces one private method, so each is checked against the library version it was
written for: a newer version with a different shape fails loudly here instead of decoding wrong.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from pymysqlreplication import row_event

TIMEF_OFS = 0x800000000000
TIMEF_INT_OFS = 0x800000


def time2_from_bytes(data: bytes | memoryview, fsp: int) -> dt.timedelta:
    """Decode a TIME2 value as MySQL's my_time_packed_from_binary does.

    mysql-replication 1.0.17 negates the integer part and the fraction separately, so a negative
    TIME with a fraction is off by almost a second ('-838:59:58.999999' -> '-838:59:58.000001').
    """
    frac_bytes = (fsp + 1) // 2
    if frac_bytes == 3:
        packed = int.from_bytes(data[:6], "big") - TIMEF_OFS
    else:
        intpart = int.from_bytes(data[:3], "big") - TIMEF_INT_OFS
        if frac_bytes == 0:
            packed = intpart << 24
        else:
            frac = int.from_bytes(data[3 : 3 + frac_bytes], "big")
            if intpart < 0 and frac:
                intpart += 1  # the fraction borrows from the integer part of a negative value
                frac -= 1 << (8 * frac_bytes)
            packed = (intpart << 24) + frac * (10_000 if frac_bytes == 1 else 100)
    negative = packed < 0
    packed = abs(packed)
    hms, micros = packed >> 24, packed & 0xFFFFFF
    value = dt.timedelta(hours=(hms >> 12) & 0x3FF, minutes=(hms >> 6) & 0x3F, seconds=hms & 0x3F, microseconds=micros)
    return -value if negative else value


def _read_time2(self: Any, column: Any) -> dt.timedelta:
    fsp = column.fsp or 0
    return time2_from_bytes(self.packet.read(3 + (fsp + 1) // 2), fsp)


def apply() -> None:
    name = "_RowsEvent__read_time2"
    if not hasattr(row_event.RowsEvent, name):
        raise RuntimeError(f"mysql-replication changed: RowsEvent.{name} is gone; re-check cdc/libfixes.py")
    setattr(row_event.RowsEvent, name, _read_time2)


apply()
