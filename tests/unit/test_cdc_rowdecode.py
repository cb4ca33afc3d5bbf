"""cdc/rowdecode.py's DECIMAL decoder against a reference encoder of MySQL's storage format (the whole
decoder against mysql-replication on the real binlog: tests/integration/test_cdc_rowdecode.py)."""

from __future__ import annotations

import random
from decimal import Decimal

from cdc.rowdecode import DECIMAL_BYTES, decoder_for


def mysql_decimal_bytes(value: Decimal, precision: int, scale: int) -> bytes:
    """MySQL's decimal2bin, written from its storage-format description, as a reference encoder."""
    text = format(value.copy_abs(), f".{scale}f")
    int_digits, _, frac_digits = text.partition(".")
    integral = precision - scale
    int_digits = int_digits.rjust(integral, "0")[-integral:] if integral else ""
    out = b""
    if integral % 9:
        out += int(int_digits[: integral % 9]).to_bytes(DECIMAL_BYTES[integral % 9], "big")
    for i in range(integral % 9, integral, 9):
        out += int(int_digits[i : i + 9]).to_bytes(4, "big")
    for i in range(0, scale - scale % 9, 9):
        out += int(frac_digits[i : i + 9]).to_bytes(4, "big")
    if scale % 9:
        out += int(frac_digits[scale - scale % 9 :]).to_bytes(DECIMAL_BYTES[scale % 9], "big")
    packed = bytearray(b ^ 0xFF for b in out) if value.is_signed() else bytearray(out)
    packed[0] ^= 0x80
    return bytes(packed)


class DecimalColumn:
    type = 246  # NEWDECIMAL
    name = "d"

    def __init__(self, precision: int, decimals: int) -> None:
        self.precision, self.decimals = precision, decimals


def test_decimal_decoder_is_exact_for_every_precision_and_scale() -> None:
    rng = random.Random(7)
    for _ in range(5000):
        precision = rng.randint(1, 65)
        scale = rng.randint(0, min(precision, 30))
        whole = rng.randint(0, 10 ** (precision - scale) - 1) if precision > scale else 0
        frac = rng.randint(0, 10**scale - 1) if scale else 0
        sign = "-" if rng.random() < 0.5 and (whole or frac) else ""
        value = Decimal(f"{sign}{whole}.{frac:0{scale}d}" if scale else f"{sign}{whole}")
        packed = mysql_decimal_bytes(value, precision, scale)
        decoded, end = decoder_for(DecimalColumn(precision, scale))(b"\x00" + packed + b"\x00", 1)
        assert (decoded, end) == (format(value, "f"), 1 + len(packed)), (precision, scale, value)
