"""Access units to MPEG-TS, without I/O: how a WHIP or RTMP publish becomes an ordinary stream.

Every output of the server reads MPEG-TS from the broker, so what a WHIP
publisher sends (H.264 access units, Opus packets), or an RTMP one (H.264
or HEVC with AAC in ADTS frames), is muxed into TS as it
arrives, one chunk per access unit, so that nothing waits in a muxer's
buffer: the chunk of a keyframe starts with the program tables, which is
what the broker's GOP cache looks for.  The layouts are fixed and few (PAT,
PMT, PES, PCR), so this is a few byte concatenations rather than a PyAV
container with its interleaving queue and I/O buffer in between.
"""

from __future__ import annotations

import struct

from ghostream.media import opus
from ghostream.media.ts import PACKET_SIZE, SYNC_BYTE

PMT_PID = 0x1000
VIDEO_PID = 0x100
AUDIO_PID = 0x101
VIDEO_STREAM_TYPES = {"h264": 0x1B, "hevc": 0x24}
PRIVATE_STREAM_TYPE = 0x06
AAC_STREAM_TYPE = 0x0F
VIDEO_STREAM_ID = 0xE0
AUDIO_STREAM_ID = 0xC0
PRIVATE_STREAM_1 = 0xBD
# Timestamps start this far ahead of the PCR, so that a player's buffer fills first.
PTS_OFFSET = 18000
# An access unit delimiter starts each access unit, as TS requires.
DELIMITERS = {"h264": b"\x00\x00\x00\x01\x09\xf0", "hevc": b"\x00\x00\x00\x01\x46\x01\x50"}
PAYLOAD_SIZE = PACKET_SIZE - 4
TIMESTAMP_MASK = (1 << 33) - 1


def _crc32(data: bytes) -> int:
    """The MPEG-2 CRC of a PSI section (polynomial 0x04C11DB7, not reflected)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = (crc << 1) ^ 0x04C11DB7 if crc & 0x80000000 else crc << 1
        crc &= 0xFFFFFFFF
    return crc


def _section(table_id: int, extension: int, body: bytes) -> bytes:
    length = 5 + len(body) + 4
    header = bytes([table_id, 0xB0 | length >> 8, length & 0xFF])
    section = header + struct.pack(">HBBB", extension, 0xC1, 0, 0) + body
    return section + struct.pack(">I", _crc32(section))


def _timestamp(prefix: int, value: int) -> bytes:
    value &= TIMESTAMP_MASK
    return bytes(
        [
            prefix << 4 | (value >> 29) & 0x0E | 1,
            (value >> 22) & 0xFF,
            (value >> 14) & 0xFE | 1,
            (value >> 7) & 0xFF,
            (value << 1) & 0xFE | 1,
        ]
    )


def _pcr(value: int) -> bytes:
    value &= TIMESTAMP_MASK
    return struct.pack(">IH", value >> 1, (value & 1) << 15 | 0x7E00)


class TsMuxer:
    """H.264 or HEVC (and Opus or AAC) in, TS bytes out; `channels` is 0 without audio.

    The video carries the PCR, and its keyframes bring the tables.
    """

    def __init__(self, *, channels: int, video_codec: str = "h264", audio_codec: str = "opus"):
        self.channels = channels
        self.audio_codec = audio_codec
        self._delimiter = DELIMITERS[video_codec]
        self._counters: dict[int, int] = {}
        streams = struct.pack(">BHH", VIDEO_STREAM_TYPES[video_codec], 0xE000 | VIDEO_PID, 0xF000)
        if channels and audio_codec == "aac":
            streams += struct.pack(">BHH", AAC_STREAM_TYPE, 0xE000 | AUDIO_PID, 0xF000)
        elif channels:
            descriptors = b"\x05\x04Opus" + bytes([0x7F, 2, 0x80, channels])
            streams += struct.pack(
                ">BHH", PRIVATE_STREAM_TYPE, 0xE000 | AUDIO_PID, 0xF000 | len(descriptors)
            )
            streams += descriptors
        self._pat = _section(0x00, 1, struct.pack(">HH", 1, 0xE000 | PMT_PID))
        self._pmt = _section(0x02, 1, struct.pack(">HH", 0xE000 | VIDEO_PID, 0xF000) + streams)

    def video_unit(self, data: bytes, pts: int, keyframe: bool, dts: int | None = None) -> bytes:
        """One access unit (Annex B), with the tables first when it is a keyframe.

        `dts` is given when it differs from `pts` (B-frames); the PCR follows it.
        """
        tables = self._tables() if keyframe else b""
        pes = self._pes(VIDEO_STREAM_ID, pts, self._delimiter + data, dts)
        clock = pts if dts is None else dts
        return tables + self._packetize(VIDEO_PID, pes, pcr=clock, random_access=keyframe)

    def audio_packet(self, data: bytes, pts: int) -> bytes:
        """One Opus packet, or AAC frames with their ADTS headers."""
        if self.audio_codec == "aac":
            pes = self._pes(AUDIO_STREAM_ID, pts, data)
        else:
            pes = self._pes(PRIVATE_STREAM_1, pts, opus.ts_frame(data))
        return self._packetize(AUDIO_PID, pes, pcr=None, random_access=False)

    def _tables(self) -> bytes:
        return self._section_packet(0, self._pat) + self._section_packet(PMT_PID, self._pmt)

    def _section_packet(self, pid: int, section: bytes) -> bytes:
        payload = b"\x00" + section
        header = bytes([SYNC_BYTE, 0x40 | pid >> 8, pid & 0xFF, 0x10 | self._count(pid)])
        return header + payload + b"\xff" * (PAYLOAD_SIZE - len(payload))

    @staticmethod
    def _pes(stream_id: int, pts: int, data: bytes, dts: int | None = None) -> bytes:
        """A PES with its length whenever it fits, so a demuxer completes it without waiting."""
        if dts is None or dts == pts:
            optional = b"\x80\x80\x05" + _timestamp(0x2, pts + PTS_OFFSET)
        else:
            optional = b"\x80\xc0\x0a" + _timestamp(0x3, pts + PTS_OFFSET)
            optional += _timestamp(0x1, dts + PTS_OFFSET)
        length = len(optional) + len(data)
        if length > 0xFFFF:
            length = 0
        return b"\x00\x00\x01" + struct.pack(">BH", stream_id, length) + optional + data

    def _count(self, pid: int) -> int:
        count = self._counters.get(pid, -1) + 1 & 0x0F
        self._counters[pid] = count
        return count

    def _packetize(
        self, pid: int, payload: bytes, *, pcr: int | None, random_access: bool
    ) -> bytes:
        out = bytearray()
        position = 0
        first = True
        while first or position < len(payload):
            adaptation: bytearray | None = None
            if first and (pcr is not None or random_access):
                flags = (0x40 if random_access else 0) | (0x10 if pcr is not None else 0)
                adaptation = bytearray([flags])
                if pcr is not None:
                    adaptation += _pcr(pcr)
            room = PAYLOAD_SIZE - (0 if adaptation is None else 1 + len(adaptation))
            chunk = payload[position : position + room]
            stuffing = room - len(chunk)
            if stuffing:
                if adaptation is None:
                    adaptation = bytearray(b"\x00" if stuffing > 1 else b"")
                    stuffing -= 1 + len(adaptation)
                adaptation += b"\xff" * stuffing
            control = 0x30 if adaptation is not None else 0x10
            unit_start = 0x40 if first else 0
            out += bytes([SYNC_BYTE, unit_start | pid >> 8, pid & 0xFF, control | self._count(pid)])
            if adaptation is not None:
                out.append(len(adaptation))
                out += adaptation
            out += chunk
            position += len(chunk)
            first = False
        return bytes(out)
