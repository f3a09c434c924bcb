"""The RTMP chunk stream: messages cut into interleaved chunks, and put back together.

Each chunk names its chunk stream and carries a header that is full,
shortened or absent, the missing fields coming from the previous chunk of
the same chunk stream.  The reader keeps that state per chunk stream and
returns whole messages; the writer cuts our (few, small) messages the
simplest way, a full header then continuation chunks.

A peer decides the chunk size, the message lengths and how many chunk
streams are open at once, so each is bounded: what the reader holds never
exceeds `MAX_PENDING` bytes plus one chunk.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ghostream.rtmp import RtmpError

DEFAULT_CHUNK_SIZE = 128
# The spec allows up to 2^31 - 1; encoders use 4096 to 65536.
MAX_CHUNK_SIZE = 1 << 24
# The length field is 24 bits: 16 MiB is the most any message can declare.
MAX_MESSAGE_SIZE = (1 << 24) - 1
# Declared bytes of the unfinished messages of all chunk streams.
MAX_PENDING = 32 << 20
MAX_CHUNK_STREAMS = 64
EXTENDED_TIMESTAMP = 0xFFFFFF


@dataclass(frozen=True, slots=True)
class Message:
    type: int
    stream_id: int
    timestamp: int
    payload: bytes


@dataclass(slots=True)
class _ChunkStream:
    timestamp: int = 0
    delta: int = 0
    length: int = 0
    type: int = 0
    stream_id: int = 0
    extended: bool = False
    body: bytearray | None = None


class ChunkReader:
    """Bytes in, whole messages out; `chunk_size` changes when the peer says so."""

    def __init__(self) -> None:
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self._buffer = bytearray()
        self._streams: dict[int, _ChunkStream] = {}
        self._pending = 0

    def set_chunk_size(self, size: int) -> None:
        if not 1 <= size <= MAX_CHUNK_SIZE:
            raise RtmpError(f"chunk size {size} is outside 1 to {MAX_CHUNK_SIZE}")
        self.chunk_size = size

    def abort(self, chunk_stream_id: int) -> None:
        """Drop a chunk stream's unfinished message (Abort Message)."""
        stream = self._streams.get(chunk_stream_id)
        if stream is not None and stream.body is not None:
            self._pending -= stream.length
            stream.body = None

    def feed(self, data: bytes) -> list[Message]:
        """The messages `data` completes, in order.

        A Set Chunk Size message changes how the next chunk is read, so the
        reader stops after each protocol control message of that type and
        the caller (which applies it) calls `feed(b"")` again.
        """
        self._buffer += data
        messages: list[Message] = []
        position = 0
        while True:
            parsed = self._chunk(position)
            if parsed is None:
                break
            position, message = parsed
            if message is not None:
                messages.append(message)
                if message.type == 1:
                    break
        del self._buffer[:position]
        return messages

    def _chunk(self, start: int) -> tuple[int, Message | None] | None:
        buffer = self._buffer
        available = len(buffer) - start
        if available < 1:
            return None
        first = buffer[start]
        fmt = first >> 6
        csid = first & 0x3F
        position = start + 1
        if csid == 0:
            if available < 2:
                return None
            csid = 64 + buffer[position]
            position += 1
        elif csid == 1:
            if available < 3:
                return None
            csid = 64 + buffer[position] + 256 * buffer[position + 1]
            position += 2
        header_size = (11, 7, 3, 0)[fmt]
        if len(buffer) < position + header_size:
            return None
        stream = self._streams.get(csid)
        if stream is None:
            if fmt != 0:
                raise RtmpError(f"chunk stream {csid} begins without a full header")
            if len(self._streams) >= MAX_CHUNK_STREAMS:
                raise RtmpError(f"more than {MAX_CHUNK_STREAMS} chunk streams")
            stream = _ChunkStream()
        header = buffer[position : position + header_size]
        position += header_size
        stamp = int.from_bytes(header[0:3], "big") if fmt < 3 else 0
        extended = stamp == EXTENDED_TIMESTAMP if fmt < 3 else stream.extended
        if extended:
            if len(buffer) < position + 4:
                return None
            value = int.from_bytes(buffer[position : position + 4], "big")
            position += 4
            if fmt < 3:
                stamp = value
        if fmt < 2:
            length = int.from_bytes(header[3:6], "big")
            if length > MAX_MESSAGE_SIZE:
                raise RtmpError(f"message of {length} bytes")
        else:
            length = stream.length
        new_message = stream.body is None
        if not new_message and fmt != 3:
            raise RtmpError(f"chunk stream {csid} starts a message before finishing one")
        received = 0 if new_message else len(stream.body or b"")
        size = min(self.chunk_size, length - received)
        if len(buffer) < position + size:
            return None
        # The chunk is whole: only now does it change the chunk stream's state.
        self._streams[csid] = stream
        stream.extended = extended
        if new_message:
            if fmt == 0:
                stream.timestamp = stamp
                stream.delta = 0
                stream.stream_id = int.from_bytes(header[7:11], "little")
            elif fmt in (1, 2):
                stream.delta = stamp
                stream.timestamp = stream.timestamp + stamp & 0xFFFFFFFF
            else:
                stream.timestamp = stream.timestamp + stream.delta & 0xFFFFFFFF
            if fmt < 2:
                stream.length = length
                stream.type = header[6]
            if self._pending + stream.length > MAX_PENDING:
                raise RtmpError(f"more than {MAX_PENDING} bytes of unfinished messages")
            self._pending += stream.length
            stream.body = bytearray()
        body = stream.body
        assert body is not None
        body += buffer[position : position + size]
        position += size
        if len(body) < stream.length:
            return position, None
        self._pending -= stream.length
        stream.body = None
        return position, Message(stream.type, stream.stream_id, stream.timestamp, bytes(body))


def write_message(message: Message, chunk_stream_id: int, chunk_size: int) -> bytes:
    """One message as chunks: a full header, then continuation headers (chunk streams 2-63)."""
    payload = message.payload
    stamp = message.timestamp & 0xFFFFFFFF
    extended = stamp >= EXTENDED_TIMESTAMP
    field = EXTENDED_TIMESTAMP if extended else stamp
    suffix = struct.pack(">I", stamp) if extended else b""
    header = bytes([chunk_stream_id]) + field.to_bytes(3, "big")
    header += len(payload).to_bytes(3, "big") + bytes([message.type])
    header += struct.pack("<I", message.stream_id) + suffix
    continuation = bytes([0xC0 | chunk_stream_id]) + suffix
    out = bytearray(header)
    for offset in range(0, max(len(payload), 1), chunk_size):
        if offset:
            out += continuation
        out += payload[offset : offset + chunk_size]
    return bytes(out)
