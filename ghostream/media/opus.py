"""Opus packets as containers carry them: durations from the TOC, the TS framing, OpusHead.

WebRTC publishers (OBS, browsers) send Opus; it is passed through to every
output that can carry it.  MPEG-TS frames each packet with the control
header of ETSI TS 102 366 Annex... as ffmpeg writes and reads it (stream
type 0x06, registration descriptor `Opus`); MP4 describes the stream with
`dOps`, the big-endian twin of the OpusHead that decoders take as extradata.
"""

from __future__ import annotations

import struct

from ghostream.media.errors import MalformedStream

RATE = 48000
# Samples (at 48 kHz) of one frame, by TOC configuration (RFC 6716 section 3.1).
_SILK = (480, 960, 1920, 2880)
_HYBRID = (480, 960)
_CELT = (120, 240, 480, 960)
CONTROL_PREFIX = 0x7FE0
PRE_SKIP = 312


class OpusError(MalformedStream):
    """Bytes that are not an Opus packet or its TS framing."""


def packet_samples(packet: bytes) -> int:
    """How many 48 kHz samples an Opus packet decodes to."""
    if not packet:
        raise OpusError("empty Opus packet")
    toc = packet[0]
    config = toc >> 3
    if config < 12:
        frame = _SILK[config & 3]
    elif config < 16:
        frame = _HYBRID[config & 1]
    else:
        frame = _CELT[config & 3]
    code = toc & 3
    if code == 0:
        count = 1
    elif code in (1, 2):
        count = 2
    elif len(packet) < 2:
        raise OpusError("Opus packet of code 3 without its frame count")
    else:
        count = packet[1] & 0x3F
    return frame * count


def ts_frame(packet: bytes) -> bytes:
    """One packet with the control header that MPEG-TS puts in front of it."""
    size = len(packet)
    size_bytes = b"\xff" * (size // 255) + bytes([size % 255])
    return struct.pack(">H", CONTROL_PREFIX) + size_bytes + packet


def ts_packets(body: bytes) -> list[bytes]:
    """The Opus packets of a PES payload, without their control headers."""
    packets = []
    offset = 0
    while offset < len(body):
        if offset + 2 > len(body) or (body[offset] << 8 | body[offset + 1]) & 0xFFE0 != 0x7FE0:
            raise OpusError("no Opus control header")
        flags = body[offset + 1]
        offset += 2
        size = 0
        while True:
            if offset >= len(body):
                raise OpusError("truncated Opus size")
            byte = body[offset]
            offset += 1
            size += byte
            if byte != 0xFF:
                break
        offset += (2 if flags & 0x10 else 0) + (2 if flags & 0x08 else 0)
        if flags & 0x04:
            if offset >= len(body):
                raise OpusError("truncated Opus control extension")
            offset += 1 + body[offset]
        if size == 0 or offset + size > len(body):
            raise OpusError("Opus packet overruns its PES")
        packets.append(body[offset : offset + size])
        offset += size
    return packets


def opus_head(channels: int) -> bytes:
    """The OpusHead (RFC 7845) that decoders take as extradata: channel mapping family 0."""
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, PRE_SKIP, RATE, 0, 0)


def dops(channels: int) -> bytes:
    """The body of MP4's `dOps` box (Opus in ISOBMFF, section 4.3.2)."""
    return struct.pack(">BBHIhB", 0, channels, PRE_SKIP, RATE, 0, 0)
