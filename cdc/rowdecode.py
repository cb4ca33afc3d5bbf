"""Rows-event bodies decoded straight into the envelope's JSON values, one plan per table map.

mysql-replication decodes each value through a chain of generic calls (a type switch, packet reads
through a wrapper, a Decimal or datetime object the converter in cdc/types.py then turns back into
a string); that is most of a Python reader's time. Here each column gets one small function,
chosen once per table map, that reads the bytes and yields the JSON value cdc/types.py documents,
so a row costs a few slices and unpacks. Columns whose encoding has no plan here (JSON in MySQL's
binary form, GEOMETRY, pre-5.6 temporal types, ...) make the whole table fall back to the library
and RowConverter, which stay the reference: tests/test_cdc_types.py checks both give the same.
"""

from __future__ import annotations

import codecs
import datetime as dt
import struct
from binascii import b2a_base64
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import orjson
from pymysql.charset import charset_by_name
from pymysqlreplication.constants import BINLOG, FIELD_TYPE

from cdc.libfixes import time2_from_bytes
from cdc.types import EPOCH, _float32, _fraction, _time

# A rows event's body: bytes, or for a large event a view of pymysql's packet (no copy).
Buffer = bytes | memoryview
# A column decoder: (buffer, offset) -> (JSON value, offset after the value).
Decoder = Callable[[Buffer, int], tuple[Any, int]]
Row = dict[str, Any]

DECIMAL_BYTES = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)
UPDATE_EVENTS = (BINLOG.UPDATE_ROWS_EVENT_V1, BINLOG.UPDATE_ROWS_EVENT_V2)
ROW_EVENT_TYPES = (
    BINLOG.WRITE_ROWS_EVENT_V1,
    BINLOG.WRITE_ROWS_EVENT_V2,
    BINLOG.DELETE_ROWS_EVENT_V1,
    BINLOG.DELETE_ROWS_EVENT_V2,
    *UPDATE_EVENTS,
)


class NoPlan(Exception):
    """A column this module does not decode: the table uses the library's decoding."""


def _fixed(fmt: str, convert: Callable[[Any], Any] | None = None) -> Decoder:
    unpack_from = struct.Struct(fmt).unpack_from
    size = struct.calcsize(fmt)
    if convert is None:
        return lambda buf, pos: (unpack_from(buf, pos)[0], pos + size)
    return lambda buf, pos: (convert(unpack_from(buf, pos)[0]), pos + size)


def _int24(signed: bool) -> Decoder:
    def decode(buf: Buffer, pos: int) -> tuple[Any, int]:
        return int.from_bytes(buf[pos : pos + 3], "little", signed=signed), pos + 3

    return decode


def _text(length_bytes: int, encoding: str, json_text: bool) -> Decoder:
    def decode(buf: Buffer, pos: int) -> tuple[Any, int]:
        start = pos + length_bytes
        end = start + int.from_bytes(buf[pos:start], "little")
        return str(buf[start:end], encoding), end  # str(): buf may be a memoryview (large events)

    def decode_json(buf: Buffer, pos: int) -> tuple[Any, int]:
        start = pos + length_bytes
        end = start + int.from_bytes(buf[pos:start], "little")
        return (orjson.loads(buf[start:end]) if end > start else None), end

    return decode_json if json_text else decode


def _binary(length_bytes: int, pad_to: int = 0) -> Decoder:
    def decode(buf: Buffer, pos: int) -> tuple[Any, int]:
        start = pos + length_bytes
        end = start + int.from_bytes(buf[pos:start], "little")
        data = buf[start:end]
        return b2a_base64(bytes(data).ljust(pad_to, b"\0") if pad_to else data, newline=False).decode("ascii"), end

    return decode


def _decimal(precision: int, scale: int) -> Decoder:
    # MySQL's packed decimal: groups of 9 digits in 4 big-endian bytes, the leftover digits of each
    # side in 1-4 bytes; the sign is the inverted top bit, negatives store every byte inverted.
    # The whole value is read as one integer and cut into its groups with precomputed shifts.
    integral = precision - scale
    lead = DECIMAL_BYTES[integral % 9]
    int_groups = integral // 9
    frac_groups = scale // 9
    tail_digits = scale % 9
    tail = DECIMAL_BYTES[tail_digits]
    size = lead + 4 * (int_groups + frac_groups) + tail
    all_ones = (1 << (8 * size)) - 1
    sign_bit = 1 << (8 * size - 1)
    # (shift, mask, weight): integral part = sum((v >> shift & mask) * weight), same for the fraction
    int_parts: list[tuple[int, int, int]] = []
    frac_parts: list[tuple[int, int, int]] = []
    at = 8 * size
    for width, digits, parts in (
        ([(lead, integral % 9, int_parts)] if lead else [])
        + [(4, 9, int_parts)] * int_groups
        + [(4, 9, frac_parts)] * frac_groups
        + ([(tail, tail_digits, frac_parts)] if tail else [])
    ):
        at -= 8 * width
        parts.append((at, (1 << (8 * width)) - 1, digits))
    int_spec = [
        (shift, mask, 10 ** sum(d for _, _, d in int_parts[i + 1 :])) for i, (shift, mask, _) in enumerate(int_parts)
    ]
    frac_spec = [
        (shift, mask, 10 ** sum(d for _, _, d in frac_parts[i + 1 :])) for i, (shift, mask, _) in enumerate(frac_parts)
    ]

    def decode(buf: Buffer, pos: int) -> tuple[Any, int]:
        v = int.from_bytes(buf[pos : pos + size], "big")
        if v & sign_bit:
            v ^= sign_bit
            sign = ""
        else:
            v = (v ^ all_ones) ^ sign_bit  # negative: every byte inverted, sign bit included
            sign = "-"
        whole = 0
        for shift, mask, weight in int_spec:
            whole += (v >> shift & mask) * weight
        if not scale:
            return f"{sign}{whole}", pos + size
        frac = 0
        for shift, mask, weight in frac_spec:
            frac += (v >> shift & mask) * weight
        return f"{sign}{whole}.{frac:0{scale}d}", pos + size

    return decode


def _micros(fsp: int) -> tuple[int, Callable[[Buffer], int]]:
    width = (fsp + 1) // 2
    scale = 10 ** (6 - fsp)
    if not width:
        return 0, lambda _b: 0
    if fsp % 2:
        return width, lambda b: int.from_bytes(b, "big", signed=True) // 10 * scale
    return width, lambda b: int.from_bytes(b, "big", signed=True) * scale


def _valid_date(year: int, month: int, day: int) -> bool:
    if not (year and 1 <= month <= 12 and day):
        return False
    if day <= 28:
        return True
    try:
        dt.date(year, month, day)
        return True
    except ValueError:
        return False


def _datetime2(fsp: int) -> Decoder:
    width, micros = _micros(fsp)
    size = 5 + width

    def decode(buf: Buffer, pos: int) -> tuple[Any, int]:
        v = int.from_bytes(buf[pos : pos + 5], "big")
        year, month = divmod((v >> 22) & 0x1FFFF, 13)
        day = (v >> 17) & 0x1F
        if not (0 < day <= 28 and year and 0 < month) and not _valid_date(year, month, day):
            return None, pos + size  # zero or invalid date: the library yields None, so do we
        text = f"{year:04d}-{month:02d}-{day:02d}T{(v >> 12) & 0x1F:02d}:{(v >> 6) & 0x3F:02d}:{v & 0x3F:02d}" + (
            _fraction(micros(buf[pos + 5 : pos + size]), fsp) if fsp else ""
        )
        return text, pos + size

    return decode


def _timestamp2(fsp: int) -> Decoder:
    width, micros = _micros(fsp)
    size = 4 + width

    def decode(buf: Buffer, pos: int) -> tuple[Any, int]:
        seconds = int.from_bytes(buf[pos : pos + 4], "big")
        micro = micros(buf[pos + 4 : pos + size]) if width else 0
        if not seconds and not micro:
            return None, pos + size  # TIMESTAMP 0 is the zero date
        v = EPOCH + dt.timedelta(seconds=seconds)
        text = (
            f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
            + _fraction(micro, fsp)
            + "Z"
        )
        return text, pos + size

    return decode


def _date(buf: Buffer, pos: int) -> tuple[Any, int]:
    v = int.from_bytes(buf[pos : pos + 3], "little")
    year, month, day = v >> 9, (v >> 5) & 0xF, v & 0x1F
    if not (year and month and day):
        return None, pos + 3
    return f"{year:04d}-{month:02d}-{day:02d}", pos + 3


def _time2(fsp: int) -> Decoder:
    size = 3 + (fsp + 1) // 2
    return lambda buf, pos: (_time(time2_from_bytes(buf[pos : pos + size], fsp), fsp), pos + size)


def _year(buf: Buffer, pos: int) -> tuple[Any, int]:
    return (buf[pos] + 1900 if buf[pos] else None), pos + 1


def _bit(nbytes: int, bits: int) -> Decoder:
    mask = (1 << bits) - 1
    return lambda buf, pos: (int.from_bytes(buf[pos : pos + nbytes], "big") & mask, pos + nbytes)


def _enum(size: int, members: Sequence[str]) -> Decoder:
    return lambda buf, pos: (members[int.from_bytes(buf[pos : pos + size], "little")], pos + size)


def _set(size: int, members: Sequence[str]) -> Decoder:
    def decode(buf: Buffer, pos: int) -> tuple[Any, int]:
        mask = int.from_bytes(buf[pos : pos + size], "little")
        return ",".join(m for i, m in enumerate(members) if mask >> i & 1), pos + size

    return decode


def _encoding(column: Any) -> str | None:
    """The Python codec of a text column; None for binary; NoPlan when Python has no such codec."""
    name = getattr(column, "character_set_name", None)
    if name == "binary":
        return None
    if name is None:
        return "utf-8"  # what the library assumes without charset metadata
    charset = charset_by_name(name)
    encoding = charset.encoding if charset else name
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise NoPlan(f"charset {name}") from None
    return encoding


def _no_plan(column: Any) -> NoPlan:
    return NoPlan(f"column {column.name!r} of type {column.type}")


def _integer(signed_format: str, unsigned_format: str) -> Callable[[Any], Decoder]:
    return lambda column: _fixed(unsigned_format if getattr(column, "unsigned", False) else signed_format)


def _enum_column(column: Any) -> Decoder:
    if not column.enum_values:
        raise _no_plan(column)
    return _enum(column.size, column.enum_values)


def _set_column(column: Any) -> Decoder:
    if not column.set_values:
        raise _no_plan(column)
    return _set(column.size, column.set_values)


# field type -> the decoder of a column of that type, from its definition (text types: _string_column)
_DECODERS: dict[int, Callable[[Any], Decoder]] = {
    FIELD_TYPE.TINY: _integer("<b", "<B"),
    FIELD_TYPE.SHORT: _integer("<h", "<H"),
    FIELD_TYPE.INT24: lambda column: _int24(not getattr(column, "unsigned", False)),
    FIELD_TYPE.LONG: _integer("<i", "<I"),
    FIELD_TYPE.LONGLONG: _integer("<q", "<Q"),
    FIELD_TYPE.FLOAT: lambda _column: _fixed("<f", _float32),
    FIELD_TYPE.DOUBLE: lambda _column: _fixed("<d"),
    FIELD_TYPE.NEWDECIMAL: lambda column: _decimal(column.precision, column.decimals),
    FIELD_TYPE.DATETIME2: lambda column: _datetime2(column.fsp or 0),
    FIELD_TYPE.TIMESTAMP2: lambda column: _timestamp2(column.fsp or 0),
    FIELD_TYPE.TIME2: lambda column: _time2(column.fsp or 0),
    FIELD_TYPE.DATE: lambda _column: _date,
    FIELD_TYPE.YEAR: lambda _column: _year,
    FIELD_TYPE.BIT: lambda column: _bit(column.bytes, column.bits),
    FIELD_TYPE.ENUM: _enum_column,
    FIELD_TYPE.SET: _set_column,
}
_STRING_TYPES = (FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING, FIELD_TYPE.BLOB)


def _string_column(column: Any, is_json: bool) -> Decoder:
    t = column.type
    length_bytes = column.length_size if t == FIELD_TYPE.BLOB else (2 if column.max_length > 255 else 1)
    encoding = _encoding(column)
    if encoding is None:
        return _binary(length_bytes, column.max_length if t == FIELD_TYPE.STRING else 0)
    return _text(length_bytes, encoding, is_json)


def decoder_for(column: Any, is_json: bool = False) -> Decoder:
    """The decoder of one binlog column definition (a pymysqlreplication Column); NoPlan if there is none."""
    build = _DECODERS.get(column.type)
    if build is not None:
        return build(column)
    if column.type in _STRING_TYPES:
        return _string_column(column, is_json)
    raise _no_plan(column)


class RowDecoder:
    """Decodes the rows of one table map; built once per table map."""

    def __init__(self, columns: Sequence[Any], json_columns: Collection[str] = ()):
        if any(not c.name for c in columns):
            raise NoPlan("column names missing (binlog_row_metadata is not FULL)")
        self.names = [c.name for c in columns]
        self.decoders = [decoder_for(c, c.name in json_columns) for c in columns]
        self._all = list(zip(self.names, self.decoders, strict=True))

    def _image(self, buf: Buffer, pos: int, present: bytes) -> tuple[Row, int]:
        columns = self._all
        n = len(columns)
        if present == self._full(n):
            width = (n + 7) >> 3
            nulls = int.from_bytes(buf[pos : pos + width], "little")
            pos += width
            row: Row = {}
            if not nulls:
                for name, decode in columns:
                    row[name], pos = decode(buf, pos)
                return row, pos
            for i, (name, decode) in enumerate(columns):
                if nulls >> i & 1:
                    row[name] = None
                else:
                    row[name], pos = decode(buf, pos)
            return row, pos
        # binlog_row_image=MINIMAL/NOBLOB: the null bitmap covers only the present columns
        flags = int.from_bytes(present, "little")
        count = bin(flags & ((1 << n) - 1)).count("1")
        width = (count + 7) >> 3
        nulls = int.from_bytes(buf[pos : pos + width], "little")
        pos += width
        row = {}
        bit = 0
        for i, (name, decode) in enumerate(columns):
            if not flags >> i & 1:
                row[name] = None
                continue
            if nulls >> bit & 1:
                row[name] = None
            else:
                row[name], pos = decode(buf, pos)
            bit += 1
        return row, pos

    @staticmethod
    def _full(n: int) -> bytes:
        return _FULL.get(n) or _FULL.setdefault(n, (((1 << n) - 1).to_bytes((n + 7) >> 3, "little")))

    def rows(self, event: Any) -> Iterator[tuple[Row | None, Row | None]]:
        """(before, after) per row of a Write/Update/Delete rows event whose header was read."""
        packet = event.packet
        size = event.event_size - packet.read_bytes
        buf = _view(packet, size) if size > LARGE_EVENT else None
        if buf is None:
            buf = packet.read(size)
        pos, end = 0, len(buf)
        kind = event.event_type
        image = self._image
        if kind in UPDATE_EVENTS:
            present, present_after = event.columns_present_bitmap, event.columns_present_bitmap2
            while pos < end:
                before, pos = image(buf, pos, present)
                after, pos = image(buf, pos, present_after)
                yield before, after
        elif kind in (BINLOG.WRITE_ROWS_EVENT_V1, BINLOG.WRITE_ROWS_EVENT_V2):
            present = event.columns_present_bitmap
            while pos < end:
                after, pos = image(buf, pos, present)
                yield None, after
        else:
            present = event.columns_present_bitmap
            while pos < end:
                before, pos = image(buf, pos, present)
                yield before, None


_FULL: dict[int, bytes] = {}
LARGE_EVENT = 1 << 20  # bytes; a larger rows event is decoded in place instead of copied first


def _view(packet: Any, size: int) -> memoryview | None:
    """The next `size` bytes of the event as a view of pymysql's packet (no copy of a 16 MB row), consumed."""
    raw = getattr(packet, "packet", None)
    data, position = getattr(raw, "_data", None), getattr(raw, "_position", None)
    pushed_back: object = getattr(packet, "_BinLogPacketWrapper__data_buffer", b"")
    if not isinstance(data, bytes) or not isinstance(position, int) or pushed_back:
        return None
    view = memoryview(data)[position : position + size]
    packet.advance(size)
    return view


def supports(event: Any) -> bool:
    """Plain row events (not MySQL's partial JSON updates) whose body the library has not read yet."""
    return event.event_type in ROW_EVENT_TYPES


__all__ = ["NoPlan", "RowDecoder", "decoder_for", "supports"]
