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
from ghostream.media.bitstream import (
    START_CODE,
    VideoConfig,
    nal_type,
    parse_adts,
    parse_video_config,
    split_nal_units,
)
from ghostream.media.errors import MalformedStream
from ghostream.media.ts import PACKET_SIZE, SYNC_BYTE, Program, TsInspector

__all__ = ["START_CODE", "MediaPacket", "Track", "TsDemuxer", "nal_type", "split_nal_units"]

TIME_BASE = Fraction(1, 90000)
# Parameter-set NAL unit types and keyframe test, per video codec.
PARAMETER_SETS = {"h264": (7, 8), "hevc": (32, 33, 34)}
MAX_PES_BYTES = 8 * 1024 * 1024
# PES timestamps count 90 kHz ticks in 33 bits: they wrap after 26.5 hours.
TIMESTAMP_WRAP = 1 << 33


@dataclass(frozen=True, slots=True)
class Track:
    """One elementary stream as a decoder or muxer needs to know it.

    A new Track object means the decoder must start over: the publisher
    reconnected or changed its parameter sets.  A video track reads its
    parameter sets once, when it is made: `config` holds them, or `problem`
    says why they cannot be used (outputs that need them refuse the stream).
    """

    kind: str
    codec: str
    extradata: bytes
    sample_rate: int = 0
    channels: int = 0
    time_base: Fraction = TIME_BASE
    config: VideoConfig | None = field(default=None, init=False, compare=False, repr=False)
    problem: str = field(default="", init=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind != "video":
            return
        try:
            object.__setattr__(self, "config", parse_video_config(self.codec, self.extradata))
        except MalformedStream as exc:
            object.__setattr__(self, "problem", str(exc))

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


def is_keyframe_unit(codec: str, kind: int) -> bool:
    return 16 <= kind <= 21 if codec == "hevc" else kind == 5


@dataclass
class _Pes:
    pid: int
    parts: list[bytes] = field(default_factory=list)
    size: int = 0
    expected: int = 0


@dataclass(frozen=True, slots=True)
class PesHeader:
    pts: int
    dts: int
    body_start: int


def parse_pes_header(data: bytes) -> PesHeader:
    """Where a PES packet's payload starts and its timestamps; MalformedStream if unusable."""
    if len(data) < 9 or data[:3] != b"\x00\x00\x01":
        raise MalformedStream("PES packet without a start code")
    flags = data[7] >> 6
    header_end = 9 + data[8]
    if not flags & 0x2:
        raise MalformedStream("PES packet without a presentation timestamp")
    if flags == 0x1:
        raise MalformedStream("PES header with a DTS but no PTS")
    needed = 19 if flags == 0x3 else 14
    if header_end < needed or len(data) < header_end:
        raise MalformedStream("PES header shorter than its timestamps")
    pts = _timestamp(data[9:14])
    dts = _timestamp(data[14:19]) if flags == 0x3 else pts
    return PesHeader(pts, dts, header_end)


class Unwrapper:
    """33-bit PES timestamps made continuous: after a wrap, counting goes on past 2**33.

    Each value is placed in the wrap period that puts it nearest the previous
    one, so a stream that runs for days keeps one increasing timeline and
    no output sees time jump back by 26.5 hours.
    """

    def __init__(self) -> None:
        self.reference: int | None = None

    def __call__(self, raw: int) -> int:
        if self.reference is None:
            value = raw
        else:
            value = self.reference - self.reference % TIMESTAMP_WRAP + raw
            if value - self.reference > TIMESTAMP_WRAP // 2 and value >= TIMESTAMP_WRAP:
                value -= TIMESTAMP_WRAP
            elif self.reference - value > TIMESTAMP_WRAP // 2:
                value += TIMESTAMP_WRAP
        self.reference = value
        return value


class TsDemuxer:
    """Feed it TS bytes, get back the access units completed so far.

    Malformed TS or PES packets are counted in `invalid` and skipped; a
    video track whose parameter sets are impossible is still made (with its
    `problem`), so that outputs can say why they refuse it.
    """

    def __init__(self) -> None:
        self.program = Program()
        self._inspector = TsInspector()
        self.invalid = 0
        self._pending = b""
        self._pes: dict[int, _Pes] = {}
        self._video: Track | None = None
        self._audio: Track | None = None
        self._pmt: bytes | None = None
        self._unwrap = Unwrapper()

    @property
    def tracks(self) -> list[Track]:
        return [t for t in (self._video, self._audio) if t is not None]

    @property
    def ready(self) -> bool:
        """Every track the program announces has been described by its own data."""
        wanted = [self.program.video_pid, self.program.audio_pid]
        have = [self._video, self._audio]
        return self.program.video_pid is not None and all(
            pid is None or track is not None for pid, track in zip(wanted, have, strict=True)
        )

    @property
    def unsupported(self) -> str | None:
        """Why the program has nothing to demux into frames (no H.264/HEVC video), if so."""
        program = self.program
        if program.pmt_packet is None or program.video_pid is not None:
            return None
        if program.other_video is not None:
            return f"its video is {program.other_video}; only H.264 and HEVC are repackaged"
        return "it has no video (audio only)"

    def feed(self, data: bytes, program: Program | None = None) -> list[MediaPacket]:
        """Access units completed by `data`, read as `program` says (the broker's inspection).

        Without `program` (a file, say) the demuxer reads the tables itself.
        """
        data = self._pending + data
        out: list[MediaPacket] = []
        end = len(data) - len(data) % PACKET_SIZE
        if program is None:
            self._inspector.inspect(data[:end])
            program = self._inspector.program
        self.program = program
        if program.pmt_packet is not self._pmt:
            pmt = program.pmt_packet
            # Byte 3 holds the continuity counter, which changes every time.
            if self._pmt is not None and pmt is not None and pmt[4:] != self._pmt[4:]:
                # A new program: new PIDs, new timestamps, new decoder state.
                self._pes.clear()
                self._video = self._audio = None
                self._unwrap = Unwrapper()
            self._pmt = pmt
        for offset in range(0, end, PACKET_SIZE):
            packet = data[offset : offset + PACKET_SIZE]
            if packet[0] != SYNC_BYTE:
                self.invalid += 1
                continue
            self._packet(packet, out)
        self._pending = data[end:]
        return out

    def _packet(self, packet: bytes, out: list[MediaPacket]) -> None:
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        if pid not in (self.program.video_pid, self.program.audio_pid):
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
        try:
            self._access_units(pes, out)
        except MalformedStream:
            self.invalid += 1

    def _access_units(self, pes: _Pes, out: list[MediaPacket]) -> None:
        data = b"".join(pes.parts)
        header = parse_pes_header(data)
        dts = self._unwrap(header.dts)
        # The PTS is never far from the DTS: it lands in the DTS's wrap period.
        pts = dts + (header.pts - header.dts + TIMESTAMP_WRAP // 2) % TIMESTAMP_WRAP
        pts -= TIMESTAMP_WRAP // 2
        body = data[header.body_start : pes.expected or None]
        if pes.pid == self.program.video_pid:
            self._video_unit(body, max(pts, 0), dts, out)
        elif self.program.audio_codec == "opus":
            self._opus_packets(body, max(pts, 0), out)
        else:
            self._audio_frames(body, max(pts, 0), out)

    def _video_unit(self, body: bytes, pts: int, dts: int, out: list[MediaPacket]) -> None:
        codec = self.program.video_codec or "h264"
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
            header = parse_adts(body[offset : offset + 7])
            if offset + header.length > len(body):
                raise MalformedStream("ADTS frame longer than its PES packet")
            if self._audio is None or self._audio.extradata != header.config:
                self._audio = Track(
                    "audio", "aac", header.config, header.sample_rate, header.channels
                )
            frame = body[offset + header.header_size : offset + header.length]
            at = pts + round(count * 1024 * 90000 / self._audio.sample_rate)
            out.append(MediaPacket(self._audio, frame, at, at, True))
            count += 1
            offset += header.length

    def _opus_packets(self, body: bytes, pts: int, out: list[MediaPacket]) -> None:
        packets = opus.ts_packets(body)
        durations = [opus.packet_samples(p) for p in packets]
        channels = self.program.audio_channels
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
