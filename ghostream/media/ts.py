"""Just enough MPEG-TS parsing to serve a new viewer a decodable start.

A viewer that joins mid-stream needs the program tables (PAT, PMT) and then
a video keyframe; everything before the keyframe is useless to its decoder.
`TsInspector` follows the tables to find the video PID and tells which
chunks begin a keyframe (H.264 IDR/SPS, HEVC IRAP/VPS, an MPEG-1/2 sequence
header, or the adaptation field's random access flag).  A program without
video starts anywhere an audio frame starts.  It never raises on bad input:
a broken packet only means a keyframe may be found one GOP later.
"""

from __future__ import annotations

from dataclasses import dataclass

PACKET_SIZE = 188
SYNC_BYTE = 0x47
PAT_PID = 0
STREAM_TYPES = {
    0x01: "mpeg1video",
    0x02: "mpeg2video",
    0x10: "mpeg4",
    0x1B: "h264",
    0x24: "hevc",
    0x0F: "aac",
    0x11: "aac-latm",
    0x03: "mp2",
    0x04: "mp2",
    0x81: "ac3",
    0x06: "private",
}
VIDEO_CODECS = ("h264", "hevc")
OTHER_VIDEO_CODECS = ("mpeg1video", "mpeg2video", "mpeg4")
AUDIO_CODECS = ("aac", "aac-latm", "mp2", "ac3", "opus")
# Audio codecs the demuxer turns into packets (the first such track is the stream's audio).
PACKET_AUDIO = ("aac", "opus")
# Start codes that open an MPEG-1/2 GOP (sequence header, group of pictures).
MPEG_GOP_STARTS = (b"\x00\x00\x01\xb3", b"\x00\x00\x01\xb8")


@dataclass
class ChunkInfo:
    keyframe: bool = False
    tables_changed: bool = False


@dataclass(frozen=True)
class Program:
    """What the program map table says, as of some chunk: a new object whenever a PMT comes.

    It travels with the chunks it describes, so that their readers (the
    demuxer) need not parse the tables again.
    """

    video_pid: int | None = None
    video_codec: str | None = None
    audio_codecs: tuple[str, ...] = ()
    audio_pid: int | None = None
    audio_codec: str | None = None
    audio_channels: int = 0
    # Video other than H.264/HEVC: relayed to SRT viewers, not repackaged.
    other_video: str | None = None
    # Where a new viewer may start: the video PID of any codec, else the first audio PID.
    start_pid: int | None = None
    pmt_packet: bytes | None = None


class TsInspector:
    def __init__(self) -> None:
        self.pmt_pid: int | None = None
        self.program = Program()
        self.pat_packet: bytes | None = None
        self.invalid_packets = 0

    @property
    def tables(self) -> bytes:
        """PAT then PMT, to put in front of what a new viewer receives."""
        return (self.pat_packet or b"") + (self.program.pmt_packet or b"")

    def inspect(self, chunk: bytes) -> ChunkInfo:
        info = ChunkInfo()
        for offset in range(0, len(chunk) - PACKET_SIZE + 1, PACKET_SIZE):
            packet = chunk[offset : offset + PACKET_SIZE]
            if packet[0] != SYNC_BYTE:
                self.invalid_packets += 1
                continue
            try:
                self._packet(packet, info)
            except IndexError:
                self.invalid_packets += 1
        return info

    def _packet(self, packet: bytes, info: ChunkInfo) -> None:
        pid = ((packet[1] & 0x1F) << 8) | packet[2]
        unit_start = bool(packet[1] & 0x40)
        control = (packet[3] >> 4) & 0x3
        start = 4
        random_access = False
        if control & 0x2:
            length = packet[4]
            if length and packet[5] & 0x40:
                random_access = True
            start = 5 + length
        if not control & 0x1 or start >= PACKET_SIZE:
            return
        payload = packet[start:]
        if pid == PAT_PID and unit_start:
            if self._parse_pat(payload):
                info.tables_changed |= packet != self.pat_packet
                self.pat_packet = packet
        elif pid == self.pmt_pid and unit_start:
            program = self._parse_pmt(payload, packet)
            if program is not None:
                info.tables_changed |= packet != self.program.pmt_packet
                self.program = program
        elif pid == self.program.start_pid and unit_start:
            if random_access or self._starts_keyframe(pid, payload):
                info.keyframe = True

    @staticmethod
    def _section(payload: bytes, table_id: int) -> bytes | None:
        pointer = payload[0]
        section = payload[1 + pointer :]
        if len(section) < 8 or section[0] != table_id:
            return None
        length = ((section[1] & 0x0F) << 8) | section[2]
        # Everything after the length field, without the CRC.
        return section[3 : 3 + length - 4]

    def _parse_pat(self, payload: bytes) -> bool:
        body = self._section(payload, 0x00)
        if body is None:
            return False
        for i in range(5, len(body) - 3, 4):
            program = (body[i] << 8) | body[i + 1]
            if program != 0:
                self.pmt_pid = ((body[i + 2] & 0x1F) << 8) | body[i + 3]
                return True
        return False

    def _parse_pmt(self, payload: bytes, packet: bytes) -> Program | None:
        body = self._section(payload, 0x02)
        if body is None or len(body) < 9:
            return None
        info_length = ((body[7] & 0x0F) << 8) | body[8]
        i = 9 + info_length
        video_pid, video_codec, audio, audio_pid = None, None, [], None
        audio_codec, channels = None, 0
        other_video = other_pid = first_audio_pid = None
        while i + 5 <= len(body):
            stream_type = body[i]
            pid = ((body[i + 1] & 0x1F) << 8) | body[i + 2]
            es_length = ((body[i + 3] & 0x0F) << 8) | body[i + 4]
            codec = STREAM_TYPES.get(stream_type, f"0x{stream_type:02x}")
            descriptors = body[i + 5 : i + 5 + es_length]
            if codec == "private" and _registration(descriptors) == b"Opus":
                codec = "opus"
            if codec in VIDEO_CODECS and video_pid is None:
                video_pid, video_codec = pid, codec
            elif codec in OTHER_VIDEO_CODECS and other_pid is None:
                other_video, other_pid = codec, pid
            elif codec in AUDIO_CODECS:
                audio.append(codec)
                first_audio_pid = pid if first_audio_pid is None else first_audio_pid
                if codec in PACKET_AUDIO and audio_pid is None:
                    audio_pid, audio_codec = pid, codec
                    channels = _opus_channels(descriptors) if codec == "opus" else 0
            i += 5 + es_length
        return Program(
            video_pid,
            video_codec,
            tuple(audio),
            audio_pid,
            audio_codec,
            channels,
            other_video if video_pid is None else None,
            next((p for p in (video_pid, other_pid, first_audio_pid) if p is not None), None),
            packet,
        )

    def _starts_keyframe(self, pid: int, payload: bytes) -> bool:
        program = self.program
        if pid != program.video_pid:
            if program.other_video is None:
                return True  # no video: every audio frame is a place to start
            return any(code in payload for code in MPEG_GOP_STARTS)
        if len(payload) < 9 or payload[:3] != b"\x00\x00\x01":
            return False
        data = payload[9 + payload[8] :]
        hevc = program.video_codec == "hevc"
        position = data.find(b"\x00\x00\x01")
        while position != -1 and position + 3 < len(data):
            header = data[position + 3]
            if hevc:
                kind = (header >> 1) & 0x3F
                if 16 <= kind <= 21 or kind in (32, 33):
                    return True
            elif header & 0x1F in (5, 7):
                return True
            position = data.find(b"\x00\x00\x01", position + 3)
        return False


def _descriptors(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    i = 0
    while i + 2 <= len(data):
        found.setdefault(data[i], data[i + 2 : i + 2 + data[i + 1]])
        i += 2 + data[i + 1]
    return found


def _registration(descriptors: bytes) -> bytes | None:
    """The format identifier of a registration descriptor (tag 5), if any."""
    return _descriptors(descriptors).get(0x05, b"")[:4] or None


def _opus_channels(descriptors: bytes) -> int:
    """Channels from the Opus extension descriptor (tag 0x7F, 0x80); stereo when absent."""
    extension = _descriptors(descriptors).get(0x7F, b"")
    if len(extension) >= 2 and extension[0] == 0x80 and 1 <= extension[1] <= 8:
        return extension[1]
    return 2
