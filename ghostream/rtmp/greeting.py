"""The RTMP handshake, server side: C0 C1 in, S0 S1 S2 out, C2 in.

The simple handshake (S2 echoes C1, nothing is signed) is what every
encoder that publishes accepts: ffmpeg, OBS (librtmp), GStreamer and
nginx-rtmp only check the digest of a server they play from.  Version 6
(RTMPE, encrypted with a proprietary scheme) is refused.
"""

from __future__ import annotations

from ghostream.rtmp import RtmpError

VERSION = 3
BLOCK_SIZE = 1536


class Greeting:
    """Bytes in, bytes to send out; `done` once C2 is in (what follows is the chunk stream)."""

    def __init__(self, random_block: bytes) -> None:
        if len(random_block) != BLOCK_SIZE - 8:
            raise ValueError(f"S1 needs {BLOCK_SIZE - 8} random bytes")
        self._s1 = bytes(8) + random_block
        self._buffer = bytearray()
        self._answered = False
        self.done = False

    def feed(self, data: bytes) -> tuple[bytes, bytes]:
        """What to send now, and what came after the handshake (for the chunk reader)."""
        self._buffer += data
        reply = b""
        if not self._answered:
            if not self._buffer:
                return b"", b""
            if self._buffer[0] != VERSION:
                raise RtmpError(
                    f"RTMP version {self._buffer[0]} is not supported (only 3, unencrypted)"
                )
            if len(self._buffer) < 1 + BLOCK_SIZE:
                return b"", b""
            c1 = bytes(self._buffer[1 : 1 + BLOCK_SIZE])
            del self._buffer[: 1 + BLOCK_SIZE]
            self._answered = True
            reply = bytes([VERSION]) + self._s1 + c1
        if len(self._buffer) < BLOCK_SIZE:
            return reply, b""
        rest = bytes(self._buffer[BLOCK_SIZE:])
        self._buffer.clear()
        self.done = True
        return reply, rest
