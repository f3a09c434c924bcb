"""AMF0, the value encoding of RTMP commands: decoded within bounds, or `RtmpError`.

Commands (`connect`, `publish`...) and metadata are short sequences of
AMF0 values.  A peer controls their nesting and lengths, so decoding is
bounded in depth and in entries, and anything it cannot read raises the
one typed error of the RTMP core.  AMF3 values (sent only by Flash
players that asked for them) are refused rather than skipped blindly.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from ghostream.rtmp import RtmpError

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
NULL = 0x05
UNDEFINED = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
# Bounds on what a peer may send: commands nest two or three levels and hold a few dozen keys.
MAX_DEPTH = 16
MAX_ENTRIES = 1024
MAX_VALUES = 64

Value = float | bool | str | dict[str, "Value"] | list["Value"] | None


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.position = 0
        self.entries = 0

    def take(self, size: int) -> memoryview:
        end = self.position + size
        if end > len(self.data):
            raise RtmpError("AMF0 value runs past the end of its message")
        view = self.data[self.position : end]
        self.position = end
        return view

    def byte(self) -> int:
        return self.take(1)[0]

    def string(self, size_bytes: int = 2) -> str:
        size = int.from_bytes(self.take(size_bytes), "big")
        try:
            return bytes(self.take(size)).decode()
        except UnicodeDecodeError:
            raise RtmpError("AMF0 string is not UTF-8") from None

    def count(self) -> None:
        self.entries += 1
        if self.entries > MAX_ENTRIES:
            raise RtmpError(f"AMF0 message has more than {MAX_ENTRIES} entries")

    def value(self, depth: int = 0) -> Value:
        if depth > MAX_DEPTH:
            raise RtmpError(f"AMF0 values nested deeper than {MAX_DEPTH}")
        self.count()
        marker = self.byte()
        if marker == NUMBER:
            return struct.unpack(">d", self.take(8))[0]
        if marker == BOOLEAN:
            return self.byte() != 0
        if marker == STRING:
            return self.string()
        if marker == LONG_STRING:
            return self.string(4)
        if marker in (NULL, UNDEFINED):
            return None
        if marker == OBJECT:
            return self.properties(depth)
        if marker == ECMA_ARRAY:
            self.take(4)  # An approximate count: the end marker is what ends it.
            return self.properties(depth)
        if marker == STRICT_ARRAY:
            size = int.from_bytes(self.take(4), "big")
            if size > MAX_ENTRIES:
                raise RtmpError(f"AMF0 array of {size} entries")
            return [self.value(depth + 1) for _ in range(size)]
        if marker == DATE:
            milliseconds = struct.unpack(">d", self.take(8))[0]
            self.take(2)
            return milliseconds
        raise RtmpError(f"AMF0 type 0x{marker:02x} is not supported")

    def properties(self, depth: int) -> dict[str, Value]:
        result: dict[str, Value] = {}
        while True:
            key = self.string()
            if not key and self.data[self.position : self.position + 1] == bytes([OBJECT_END]):
                self.position += 1
                return result
            result[key] = self.value(depth + 1)


def decode(data: bytes) -> list[Value]:
    """Every AMF0 value of a message body, in order."""
    reader = _Reader(data)
    values: list[Value] = []
    while reader.position < len(data):
        if len(values) >= MAX_VALUES:
            raise RtmpError(f"AMF0 message has more than {MAX_VALUES} values")
        values.append(reader.value())
    return values


def encode(values: Iterable[Value]) -> bytes:
    """AMF0 of our own replies (numbers, strings, booleans, null, objects)."""
    out = bytearray()
    for value in values:
        _encode(value, out)
    return bytes(out)


def _encode(value: Value, out: bytearray) -> None:
    if value is None:
        out.append(NULL)
    elif isinstance(value, bool):
        out += bytes([BOOLEAN, int(value)])
    elif isinstance(value, int | float):
        out.append(NUMBER)
        out += struct.pack(">d", value)
    elif isinstance(value, str):
        raw = value.encode()
        if len(raw) > 0xFFFF:
            out.append(LONG_STRING)
            out += struct.pack(">I", len(raw))
        else:
            out.append(STRING)
            out += struct.pack(">H", len(raw))
        out += raw
    elif isinstance(value, dict):
        out.append(OBJECT)
        for key, item in value.items():
            raw = key.encode()
            out += struct.pack(">H", len(raw)) + raw
            _encode(item, out)
        out += b"\x00\x00" + bytes([OBJECT_END])
    elif isinstance(value, list):
        out.append(STRICT_ARRAY)
        out += struct.pack(">I", len(value))
        for item in value:
            _encode(item, out)
    else:
        raise TypeError(f"no AMF0 encoding for {type(value).__name__}")
