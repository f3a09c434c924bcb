"""FLV tag bodies to the broker's MPEG-TS: H.264 or HEVC video, AAC audio.

RTMP carries what an FLV file holds: a decoder configuration once (the
AVC or HEVC configuration record, the AAC AudioSpecificConfig), then
frames of length-prefixed NAL units and raw AAC frames.  MPEG-TS carries
Annex B access units with their parameter sets before each keyframe, and
AAC in ADTS frames, so each tag is rewritten and muxed as it arrives
(`media.tsmux`), timestamps turned from milliseconds into 90 kHz ticks.

HEVC comes as Enhanced RTMP (the FourCC `hvc1` in an extended video tag
header, what OBS 29.1+ and recent ffmpeg send), or as the older codec id
12 some encoders use.  Any other codec is refused with `UnsupportedMedia`,
whose message the encoder is shown.  The muxer starts (and restarts when
the codecs change) at a keyframe, so the stream always begins with its
tables and parameter sets; anything before that is dropped.
"""

from __future__ import annotations

import struct

from ghostream.media.bitstream import nal_type
from ghostream.media.demux import PARAMETER_SETS, START_CODE
from ghostream.media.tsmux import TsMuxer
from ghostream.rtmp import RtmpError

# Legacy video codec ids and sound formats, named for the refusal message.
VIDEO_CODECS = {2: "Sorenson H.263", 3: "Screen video", 4: "VP6", 5: "VP6 alpha", 6: "Screen 2"}
SOUND_FORMATS = {0: "PCM", 1: "ADPCM", 2: "MP3", 3: "PCM", 4: "Nellymoser", 5: "Nellymoser",
                 6: "Nellymoser", 7: "G.711", 8: "G.711", 11: "Speex", 14: "MP3"}  # fmt: skip
AVC = 7
LEGACY_HEVC = 12
AAC = 10
EX_AUDIO = 9
FOURCCS = {b"avc1": "h264", b"hvc1": "hevc"}
# Enhanced RTMP packet types.
SEQUENCE_START = 0
CODED_FRAMES = 1
SEQUENCE_END = 2
CODED_FRAMES_X = 3
METADATA = 4
COMMAND_FRAME = 5
KEYFRAME = 1
SEND_VIDEO = "send H.264 or HEVC"
MAX_ADTS_FRAME = (1 << 13) - 1
TICKS_PER_MS = 90
# AAC object types ADTS can carry: Main, LC, SSR, LTP.
ADTS_OBJECT_TYPES = range(1, 5)


class UnsupportedMedia(RtmpError):
    """A codec or packaging this server does not take; the message is for the encoder's user."""


class FlvRemuxer:
    def __init__(self) -> None:
        self.video_codec = ""
        self.audio_codec = ""
        self._parameter_sets = b""
        self._length_size = 4
        self._adts: tuple[int, int, int] | None = None
        self._muxer: TsMuxer | None = None

    def video(self, timestamp: int, body: bytes) -> bytes:
        """TS for one video tag (often nothing: configurations, frames before a keyframe)."""
        if not body:
            return b""
        first = body[0]
        frame_type = first >> 4 & 0x07
        if frame_type == COMMAND_FRAME:
            return b""
        if first & 0x80:
            if len(body) < 5:
                raise RtmpError("extended video tag shorter than its header")
            packet_type = first & 0x0F
            fourcc = body[1:5]
            codec = FOURCCS.get(fourcc)
            if codec is None:
                shown = fourcc.decode("ascii", "replace")
                raise UnsupportedMedia(f"video codec {shown!r} is not supported: {SEND_VIDEO}")
            if packet_type == SEQUENCE_START:
                self._configure(codec, body[5:])
                return b""
            if packet_type == CODED_FRAMES:
                composition, data = _composition(body[5:]), body[8:]
            elif packet_type == CODED_FRAMES_X:
                composition, data = 0, body[5:]
            elif packet_type in (SEQUENCE_END, METADATA):
                return b""
            else:
                raise UnsupportedMedia(f"enhanced RTMP video packet type {packet_type}")
        else:
            codec_id = first & 0x0F
            if codec_id not in (AVC, LEGACY_HEVC):
                name = VIDEO_CODECS.get(codec_id, f"codec id {codec_id}")
                raise UnsupportedMedia(f"video codec {name} is not supported: {SEND_VIDEO}")
            if len(body) < 5:
                raise RtmpError("video tag shorter than its AVC header")
            codec = "h264" if codec_id == AVC else "hevc"
            if body[1] == 0:
                self._configure(codec, body[5:])
                return b""
            if body[1] != 1:
                return b""
            composition, data = _composition(body[2:5]), body[5:]
        if codec != self.video_codec:
            raise RtmpError(f"{codec} frames without an {codec} decoder configuration")
        return self._frame(timestamp, composition, data, frame_type == KEYFRAME)

    def audio(self, timestamp: int, body: bytes) -> bytes:
        """TS for one audio tag (nothing until the video has begun)."""
        if len(body) < 2:
            return b""
        sound_format = body[0] >> 4
        if sound_format != AAC:
            name = "enhanced RTMP audio" if sound_format == EX_AUDIO else None
            name = name or SOUND_FORMATS.get(sound_format, f"sound format {sound_format}")
            raise UnsupportedMedia(f"audio codec {name} is not supported: send AAC")
        if body[1] == 0:
            adts = _adts_fields(body[2:])
            if adts != self._adts:
                self._adts = adts
                self.audio_codec = "aac"
                self._muxer = None
            return b""
        if self._adts is None:
            raise RtmpError("AAC frames without an AudioSpecificConfig")
        if self._muxer is None:
            return b""
        frame = _adts_header(self._adts, len(body) - 2) + body[2:]
        return self._muxer.audio_packet(frame, timestamp * TICKS_PER_MS)

    def _configure(self, codec: str, record: bytes) -> None:
        length_size, units = _configuration_record(codec, record)
        parameter_sets = b"".join(START_CODE + unit for unit in units)
        if codec != self.video_codec:
            self._muxer = None
        self.video_codec = codec
        self._length_size = length_size
        self._parameter_sets = parameter_sets

    def _frame(self, timestamp: int, composition: int, data: bytes, keyframe: bool) -> bytes:
        units = _length_prefixed(data, self._length_size)
        if not units:
            return b""
        if self._muxer is None:
            if not keyframe:
                return b""
            self._muxer = TsMuxer(
                channels=2 if self._adts else 0,
                video_codec=self.video_codec,
                audio_codec="aac",
            )
        sets = PARAMETER_SETS[self.video_codec]
        annex_b = b"".join(START_CODE + unit for unit in units)
        if keyframe and not any(nal_type(self.video_codec, u) in sets for u in units):
            annex_b = self._parameter_sets + annex_b
        dts = timestamp * TICKS_PER_MS
        pts = dts + composition * TICKS_PER_MS
        return self._muxer.video_unit(annex_b, pts, keyframe, dts)


def _composition(field: bytes) -> int:
    if len(field) < 3:
        raise RtmpError("video tag shorter than its composition time")
    value = int.from_bytes(field[:3], "big")
    return value - (1 << 24) if value & 0x800000 else value


def _length_prefixed(data: bytes, size: int) -> list[bytes]:
    units = []
    position = 0
    while position < len(data):
        end = position + size
        if end > len(data):
            raise RtmpError("NAL unit length runs past the end of its video tag")
        length = int.from_bytes(data[position:end], "big")
        if end + length > len(data):
            raise RtmpError(f"NAL unit of {length} bytes in a shorter video tag")
        if length:
            units.append(data[end : end + length])
        position = end + length
    return units


def _configuration_record(codec: str, record: bytes) -> tuple[int, list[bytes]]:
    """The NAL unit length size and the parameter sets of an avcC or hvcC record."""
    units: list[bytes] = []
    try:
        if codec == "h264":
            length_size = (record[4] & 0x03) + 1
            position = 5
            for mask in (0x1F, 0xFF):
                count = record[position] & mask
                position += 1
                for _ in range(count):
                    position = _take_unit(record, position, units)
        else:
            length_size = (record[21] & 0x03) + 1
            arrays = record[22]
            position = 23
            for _ in range(arrays):
                count = int.from_bytes(record[position + 1 : position + 3], "big")
                position += 3
                for _ in range(count):
                    position = _take_unit(record, position, units)
    except IndexError:
        raise RtmpError(f"{codec} decoder configuration record is truncated") from None
    if length_size == 3:
        raise RtmpError("NAL unit lengths of 3 bytes are not allowed")
    if not units:
        raise RtmpError(f"{codec} decoder configuration record has no parameter sets")
    return length_size, units


def _take_unit(record: bytes, position: int, units: list[bytes]) -> int:
    length = int.from_bytes(record[position : position + 2], "big")
    end = position + 2 + length
    if len(record) < end or length == 0:
        raise IndexError
    units.append(record[position + 2 : end])
    return end


def _adts_fields(config: bytes) -> tuple[int, int, int]:
    """Object type, sampling frequency index and channel configuration of an AudioSpecificConfig."""
    if len(config) < 2:
        raise RtmpError("AudioSpecificConfig shorter than 2 bytes")
    object_type = config[0] >> 3
    rate_index = (config[0] & 0x07) << 1 | config[1] >> 7
    channels = config[1] >> 3 & 0x0F
    if object_type not in ADTS_OBJECT_TYPES:
        raise UnsupportedMedia(f"AAC object type {object_type} is not supported: send AAC-LC")
    if rate_index > 12 or not 1 <= channels <= 7:
        raise UnsupportedMedia("AAC with an explicit sample rate or channel layout: send AAC-LC")
    return object_type, rate_index, channels


def _adts_header(fields: tuple[int, int, int], size: int) -> bytes:
    object_type, rate_index, channels = fields
    length = size + 7
    if length > MAX_ADTS_FRAME:
        raise RtmpError(f"AAC frame of {size} bytes")
    return struct.pack(
        ">BBBBBBB",
        0xFF,
        0xF1,
        (object_type - 1) << 6 | rate_index << 2 | channels >> 2,
        (channels & 0x03) << 6 | length >> 11,
        length >> 3 & 0xFF,
        (length & 0x07) << 5 | 0x1F,
        0xFC,
    )
