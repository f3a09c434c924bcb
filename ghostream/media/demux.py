"""MPEG-TS to timestamped access units, without I/O: the one demuxer every output shares.

WebRTC, LL-HLS, forwarding and transcoding all need whole frames with their
timestamps, not TS packets.  Reassembling PES packets is cheap and exact, so
it is done here in the event loop, once per stream (`broker.packets` runs
it), rather than in a PyAV thread per consumer.  What comes out is ready for
any muxer or packetizer: video access units in Annex B with their parameter
sets in front of every keyframe, AAC frames without their ADTS headers and
an AudioSpecificConfig to describe them, Opus packets without their TS
control headers and an OpusHead to describe them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from ghostream.media import opus
from ghostream.media.ts import PACKET_SIZE, SYNC_BYTE, TsInspector

TIME_BASE = Fraction(1, 90000)
START_CODE = b"\x00\x00\x00\x01"
AAC_SAMPLE_RATES = (
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
)  # fmt: skip
# Parameter-set NAL unit types and keyframe test, per video codec.
PARAMETER_SETS = {"h264": (7, 8), "hevc": (32, 33, 34)}
MAX_PES_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Track:
    """One elementary stream as a decoder or muxer needs to know it.

    A new Track object means the decoder must start over: the publisher
    reconnected or changed its parameter sets.
    """

    kind: str
    codec: str
    extradata: bytes
    sample_rate: int = 0
    channels: int = 0
    time_base: Fraction = TIME_BASE

    @property
    def h264_profile_level_id(self) -> str | None:
        """The SDP profile-level-id (six hex digits) read from the SPS."""
        if self.codec != "h264":
            return None
        for unit in split_nal_units(self.extradata):
            if unit and unit[0] & 0x1F == 7 and len(unit) >= 4:
                return unit[1:4].hex()
        return None


@dataclass(frozen=True, slots=True)
class MediaPacket:
    track: Track
    data: bytes
    pts: int
    dts: int
    keyframe: bool

    @property
    def seconds(self) -> float:
        return float(self.pts * self.track.time_base)


def split_nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B byte stream, without their start codes."""
    units = []
    start = data.find(b"\x00\x00\x01")
    while start != -1:
        begin = start + 3
        end = data.find(b"\x00\x00\x01", begin)
        unit = data[begin:] if end == -1 else data[begin:end]
        if end != -1 and unit.endswith(b"\x00"):
            unit = unit[:-1]
        units.append(unit)
        start = end
    return units


def nal_type(codec: str, unit: bytes) -> int:
    return (unit[0] >> 1) & 0x3F if codec == "hevc" else unit[0] & 0x1F


def is_keyframe_unit(codec: str, kind: int) -> bool:
    return 16 <= kind <= 21 if codec == "hevc" else kind == 5


@dataclass
class _Pes:
    pid: int
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    expected: int = 0


class TsDemuxer:
    """Feed it TS bytes, get back the access units completed so far."""

    def __init__(self) -> None:
        self.tables = TsInspector()
        self.invalid = 0
        self._pending = b""
        self._pes: dict[int, _Pes] = {}
        self._video: Track | None = None
        self._audio: Track | None = None
        self._pmt: bytes | None = None

    @property
    def tracks(self) -> list[Track]:
        return [t for t in (self._video, self._audio) if t is not None]

    @property
    def ready(self) -> bool:
        """Every track the program announces has been described by its own data."""
        wanted = [self.tables.video_pid, self.tables.audio_pid]
        have = [self._video, self._audio]
        return self.tables.video_pid is not None and all(
            pid is None or track is not None for pid, track in zip(wanted, have, strict=True)
        )

    def feed(self, data: bytes) -> list[MediaPacket]:
        data = self._pending + data
        out: list[MediaPacket] = []
        end = len(data) - len(data) % PACKET_SIZE
        self.tables.inspect(data[:end])
        if self.tables.pmt_packet is not self._pmt:
            pmt = self.tables.pmt_packet
            # Byte 3 holds the continuity counter, which changes every time.
            if self._pmt is not None and pmt is not None and pmt[4:] != self._pmt[4:]:
                # A new program: new PIDs, new timestamps, new decoder state.
                self._pes.clear()
                self._video = self._audio = None
            self._pmt = self.tables.pmt_packet
        for offset in range(0, end, PACKET_SIZE):
            packet = data[offset : offset + PACKET_SIZE]
            if packet[0] != SYNC_BYTE:
                self.invalid += 1
                continue
            try:
                self._packet(packet, out)
            except (IndexError, ValueError):
                self.invalid += 1
        self._pending = data[end:]
        return out

    def _packet(self, packet: bytes, out: list[MediaPacket]) -> None:
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        if pid not in (self.tables.video_pid, self.tables.audio_pid):
            return
        unit_start = bool(packet[1] & 0x40)
        control = (packet[3] >> 4) & 0x3
        start = 4 + (1 + packet[4] if control & 0x2 else 0)
        if not control & 0x1 or start >= PACKET_SIZE:
            return
        payload = packet[start:]
        pes = self._pes.get(pid)
        if unit_start:
            if pes is not None:
                self._finish(pes, out)
            pes = self._pes[pid] = _Pes(pid)
            if len(payload) >= 6 and payload[:3] == b"\x00\x00\x01":
                length = (payload[4] << 8) | payload[5]
                pes.expected = 6 + length if length else 0
        elif pes is None:
            return
        pes.parts.append(payload)
        pes.size += len(payload)
        if pes.expected and pes.size >= pes.expected or pes.size > MAX_PES_BYTES:
            del self._pes[pid]
            self._finish(pes, out)

    def _finish(self, pes: _Pes, out: list[MediaPacket]) -> None:
        data = b"".join(pes.parts)
        if len(data) < 9 or data[:3] != b"\x00\x00\x01":
            self.invalid += 1
            return
        flags = data[7] >> 6
        header_end = 9 + data[8]
        if not flags & 0x2 or len(data) < 14:
            self.invalid += 1
            return
        pts = _timestamp(data[9:14])
        dts = _timestamp(data[14:19]) if flags == 0x3 else pts
        body = data[header_end : pes.expected or None]
        if pes.pid == self.tables.video_pid:
            self._video_unit(body, pts, dts, out)
        elif self.tables.audio_codec == "opus":
            self._opus_packets(body, pts, out)
        else:
            self._audio_frames(body, pts, out)

    def _video_unit(self, body: bytes, pts: int, dts: int, out: list[MediaPacket]) -> None:
        codec = self.tables.video_codec or "h264"
        units = split_nal_units(body)
        kinds = [nal_type(codec, unit) for unit in units if unit]
        keyframe = any(is_keyframe_unit(codec, kind) for kind in kinds)
        if keyframe:
            sets = PARAMETER_SETS.get(codec, ())
            found = b"".join(START_CODE + u for u in units if u and nal_type(codec, u) in sets)
            if found and (self._video is None or found != self._video.extradata):
                self._video = Track("video", codec, found)
            if self._video is not None and not found:
                body = self._video.extradata + body
        if self._video is None:
            # Nothing is decodable before the first keyframe with its parameter sets.
            return
        out.append(MediaPacket(self._video, body, pts, dts, keyframe))

    def _audio_frames(self, body: bytes, pts: int, out: list[MediaPacket]) -> None:
        offset = count = 0
        while offset + 7 <= len(body):
            header = body[offset : offset + 7]
            if header[0] != 0xFF or header[1] & 0xF0 != 0xF0:
                self.invalid += 1
                return
            length = ((header[3] & 0x03) << 11) | (header[4] << 3) | (header[5] >> 5)
            header_size = 7 if header[1] & 0x01 else 9
            if length <= header_size or offset + length > len(body):
                self.invalid += 1
                return
            object_type = (header[2] >> 6) + 1
            rate_index = (header[2] >> 2) & 0x0F
            channels = ((header[2] & 0x01) << 2) | (header[3] >> 6)
            if rate_index >= len(AAC_SAMPLE_RATES):
                self.invalid += 1
                return
            config = ((object_type << 11) | (rate_index << 7) | (channels << 3)).to_bytes(2, "big")
            if self._audio is None or self._audio.extradata != config:
                rate = AAC_SAMPLE_RATES[rate_index]
                self._audio = Track("audio", "aac", config, sample_rate=rate, channels=channels)
            frame = body[offset + header_size : offset + length]
            at = pts + round(count * 1024 * 90000 / self._audio.sample_rate)
            out.append(MediaPacket(self._audio, frame, at, at, True))
            count += 1
            offset += length

    def _opus_packets(self, body: bytes, pts: int, out: list[MediaPacket]) -> None:
        try:
            packets = opus.ts_packets(body)
            durations = [opus.packet_samples(p) for p in packets]
        except opus.OpusError:
            self.invalid += 1
            return
        channels = self.tables.audio_channels
        if self._audio is None or self._audio.channels != channels:
            head = opus.opus_head(channels)
            self._audio = Track("audio", "opus", head, sample_rate=opus.RATE, channels=channels)
        at = pts
        for packet, samples in zip(packets, durations, strict=True):
            out.append(MediaPacket(self._audio, packet, at, at, True))
            at += samples * 90000 // opus.RATE


def _timestamp(field_bytes: bytes) -> int:
    return (
        ((field_bytes[0] >> 1) & 0x07) << 30
        | field_bytes[1] << 22
        | (field_bytes[2] >> 1) << 15
        | field_bytes[3] << 7
        | field_bytes[4] >> 1
    )
