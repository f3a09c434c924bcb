"""Parameter sets and ADTS headers read at one boundary: values, or `MalformedStream`.

The demuxer hands over Annex B parameter sets; MP4 wants them in an avcC or
hvcC box, with the picture size in the sample entry and an RFC 6381 codec
string in the multivariant playlist.  Only the first fields of the SPS are
read, enough for the size and the profile, and each is checked against what
the specifications allow: a publisher's encoder (or bitstream filter) can
write a cropping window wider than the picture or a profile that does not
exist, and such a stream must stop at this boundary, not in a muxer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ghostream.media.errors import MalformedStream

if TYPE_CHECKING:
    from ghostream.media.demux import Track

START_CODE = b"\x00\x00\x00\x01"
# H.264 profiles whose SPS carries chroma format and bit depth fields.
H264_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))
H264_PROFILES = H264_HIGH_PROFILES | {66, 77, 88}
# general_profile_idc values of HEVC version 1 to 4 (Main … SCC, high-throughput 4:4:4).
HEVC_PROFILES = frozenset(range(1, 12))
H264_SPS, H264_PPS = 7, 8
HEVC_VPS, HEVC_SPS, HEVC_PPS = 32, 33, 34
# NAL units an MP4 sample leaves out: parameter sets live in the init segment
# (a change of them makes a new Track, hence a new init), delimiters are noise.
DROPPED_UNITS = {"h264": frozenset((H264_SPS, H264_PPS, 9)), "hevc": frozenset((32, 33, 34, 35))}
MAX_DIMENSION = 8192
# Exp-Golomb codes longer than this hold no value a parameter set can take.
MAX_GOLOMB_ZEROS = 31
MAX_PARAMETER_SET = 0xFFFF
AAC_SAMPLE_RATES = (
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
)  # fmt: skip


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


class BitReader:
    """Exp-Golomb reader over an RBSP (emulation prevention bytes removed)."""

    def __init__(self, data: bytes) -> None:
        self.data = data.replace(b"\x00\x00\x03", b"\x00\x00")
        self.position = 0

    def bits(self, count: int) -> int:
        if self.position + count > len(self.data) * 8:
            raise MalformedStream("truncated parameter set")
        value = 0
        for _ in range(count):
            byte = self.data[self.position >> 3]
            value = (value << 1) | ((byte >> (7 - (self.position & 7))) & 1)
            self.position += 1
        return value

    def ue(self, limit: int = (1 << MAX_GOLOMB_ZEROS) - 2) -> int:
        """An unsigned Exp-Golomb value; MalformedStream above `limit`."""
        zeros = 0
        while self.bits(1) == 0:
            zeros += 1
            if zeros > MAX_GOLOMB_ZEROS:
                raise MalformedStream("invalid Exp-Golomb code in a parameter set")
        value = (1 << zeros) - 1 + self.bits(zeros)
        if value > limit:
            raise MalformedStream(f"parameter set value {value} out of range (max {limit})")
        return value

    def se(self) -> int:
        value = self.ue()
        return (value + 1) // 2 if value & 1 else -(value // 2)


@dataclass(frozen=True)
class VideoConfig:
    sample_entry: bytes  # b"avc1" or b"hvc1"
    config_box: bytes  # b"avcC" or b"hvcC"
    config: bytes
    width: int
    height: int
    codec_string: str


@dataclass(frozen=True, slots=True)
class AdtsHeader:
    """One ADTS frame header: its sizes and the AudioSpecificConfig it implies."""

    length: int
    header_size: int
    sample_rate: int
    channels: int
    config: bytes


def parse_video_config(codec: str, extradata: bytes) -> VideoConfig:
    """The decoder configuration of Annex B parameter sets; MalformedStream if impossible."""
    units = [u for u in split_nal_units(extradata) if u]
    if codec == "hevc":
        return _hevc_config(units)
    if codec == "h264":
        return _h264_config(units)
    raise MalformedStream(f"no parameter set parser for {codec}")


def parse_adts(header: bytes) -> AdtsHeader:
    """A 7-byte ADTS header; MalformedStream when it is not one or describes nothing."""
    if len(header) < 7 or header[0] != 0xFF or header[1] & 0xF6 != 0xF0:
        raise MalformedStream("no ADTS sync word where an AAC frame should start")
    length = ((header[3] & 0x03) << 11) | (header[4] << 3) | (header[5] >> 5)
    header_size = 7 if header[1] & 0x01 else 9
    if length <= header_size:
        raise MalformedStream(f"ADTS frame of {length} bytes")
    object_type = (header[2] >> 6) + 1
    rate_index = (header[2] >> 2) & 0x0F
    channels = ((header[2] & 0x01) << 2) | (header[3] >> 6)
    if rate_index >= len(AAC_SAMPLE_RATES):
        raise MalformedStream(f"ADTS sampling frequency index {rate_index} is reserved")
    config = ((object_type << 11) | (rate_index << 7) | (channels << 3)).to_bytes(2, "big")
    return AdtsHeader(length, header_size, AAC_SAMPLE_RATES[rate_index], channels, config)


def sample_units(codec: str, access_unit: bytes) -> bytes:
    """An Annex B access unit as MP4 sample data: 4-byte lengths before each NAL unit."""
    dropped = DROPPED_UNITS.get(codec, frozenset())
    return b"".join(
        len(unit).to_bytes(4, "big") + unit
        for unit in split_nal_units(access_unit)
        if unit and nal_type(codec, unit) not in dropped
    )


def _picture(codec: str, width: int, height: int) -> tuple[int, int]:
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise MalformedStream(
            f"{codec} picture of {width}x{height} after cropping "
            f"(each side must be 1 to {MAX_DIMENSION})"
        )
    return width, height


def _skip_scaling_list(reader: BitReader, size: int) -> None:
    last = following = 8
    for _ in range(size):
        if following:
            following = (last + reader.se() + 256) % 256
        last = following or last


def _h264_size(sps: bytes) -> tuple[int, int]:
    reader = BitReader(sps[1:])
    profile = reader.bits(8)
    if profile not in H264_PROFILES:
        raise MalformedStream(f"unknown H.264 profile_idc {profile}")
    reader.bits(16)
    reader.ue(31)
    chroma = 1
    if profile in H264_HIGH_PROFILES:
        chroma = reader.ue(3)
        if chroma == 3:
            reader.bits(1)
        reader.ue(6)
        reader.ue(6)
        reader.bits(1)
        if reader.bits(1):
            for index in range(8 if chroma != 3 else 12):
                if reader.bits(1):
                    _skip_scaling_list(reader, 16 if index < 6 else 64)
    reader.ue(12)
    poc_type = reader.ue(2)
    if poc_type == 0:
        reader.ue(12)
    elif poc_type == 1:
        reader.bits(1)
        reader.se()
        reader.se()
        for _ in range(reader.ue(255)):
            reader.se()
    reader.ue(16)
    reader.bits(1)
    width_mbs = reader.ue(MAX_DIMENSION // 16 - 1) + 1
    height_units = reader.ue(MAX_DIMENSION // 16 - 1) + 1
    frame_mbs_only = reader.bits(1)
    if not frame_mbs_only:
        reader.bits(1)
    reader.bits(1)
    crop = [reader.ue() for _ in range(4)] if reader.bits(1) else [0, 0, 0, 0]
    crop_x = 1 if chroma in (0, 3) else 2
    crop_y = (2 - frame_mbs_only) * (2 if chroma == 1 else 1)
    width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - crop_y * (crop[2] + crop[3])
    return _picture("H.264", width, height)


def _length_prefixed(units: list[bytes]) -> bytes:
    return b"".join(len(u).to_bytes(2, "big") + u for u in units)


def _check_sizes(codec: str, units: list[bytes], most: int) -> None:
    if len(units) > most or any(len(u) > MAX_PARAMETER_SET for u in units):
        raise MalformedStream(f"{codec}: too many or too large parameter sets")


def _h264_config(units: list[bytes]) -> VideoConfig:
    sps = [u for u in units if u[0] & 0x1F == H264_SPS]
    pps = [u for u in units if u[0] & 0x1F == H264_PPS]
    if not sps or not pps:
        raise MalformedStream("H.264 parameter sets without an SPS or a PPS")
    _check_sizes("H.264", sps, 31)
    _check_sizes("H.264", pps, 255)
    first = sps[0]
    if len(first) < 4:
        raise MalformedStream("truncated H.264 SPS")
    width, height = _h264_size(first)
    config = bytes([1, first[1], first[2], first[3], 0xFF, 0xE0 | len(sps)])
    config += _length_prefixed(sps) + bytes([len(pps)]) + _length_prefixed(pps)
    codec = f"avc1.{first[1]:02x}{first[2]:02x}{first[3]:02x}"
    return VideoConfig(b"avc1", b"avcC", config, width, height, codec)


def _hevc_sps_fields(sps: bytes) -> tuple[bytes, int, int, int, int, int]:
    """General profile_tier_level (12 bytes), chroma format, size, bit depths."""
    reader = BitReader(sps[2:])
    reader.bits(4)
    sub_layers = reader.bits(3)
    if sub_layers > 6:
        raise MalformedStream("HEVC SPS with 8 sub-layers")
    reader.bits(1)
    ptl = bytes(reader.bits(8) for _ in range(12))
    if ptl[0] & 0x1F not in HEVC_PROFILES:
        raise MalformedStream(f"unknown HEVC general_profile_idc {ptl[0] & 0x1F}")
    present = [(reader.bits(1), reader.bits(1)) for _ in range(sub_layers)]
    if sub_layers:
        reader.bits(2 * (8 - sub_layers))
    for profile_present, level_present in present:
        reader.bits(88 * profile_present)
        reader.bits(8 * level_present)
    reader.ue(15)
    chroma = reader.ue(3)
    if chroma == 3:
        reader.bits(1)
    width, height = reader.ue(MAX_DIMENSION), reader.ue(MAX_DIMENSION)
    if reader.bits(1):
        sub_x = 2 if chroma in (1, 2) else 1
        sub_y = 2 if chroma == 1 else 1
        left, right, top, bottom = (reader.ue() for _ in range(4))
        width -= sub_x * (left + right)
        height -= sub_y * (top + bottom)
    width, height = _picture("HEVC", width, height)
    return ptl, chroma, width, height, reader.ue(8), reader.ue(8)


def _hevc_config(units: list[bytes]) -> VideoConfig:
    units = [u for u in units if len(u) >= 2]
    arrays = {kind: [u for u in units if nal_type("hevc", u) == kind] for kind in (32, 33, 34)}
    if not arrays[HEVC_SPS] or not arrays[HEVC_PPS]:
        raise MalformedStream("HEVC parameter sets without an SPS or a PPS")
    for found in arrays.values():
        _check_sizes("HEVC", found, MAX_PARAMETER_SET)
    ptl, chroma, width, height, luma, chroma_depth = _hevc_sps_fields(arrays[HEVC_SPS][0])
    config = bytes([1]) + ptl
    config += bytes([0xF0, 0x00, 0xFC, 0xFC | chroma, 0xF8 | luma, 0xF8 | chroma_depth])
    config += bytes([0, 0, 0x0F, sum(1 for found in arrays.values() if found)])
    for kind, found in arrays.items():
        if found:
            config += bytes([0x80 | kind]) + len(found).to_bytes(2, "big")
            config += _length_prefixed(found)
    space = ("", "A", "B", "C")[ptl[0] >> 6]
    compatibility = int.from_bytes(ptl[1:5], "big")
    reversed_flags = int(f"{compatibility:032b}"[::-1], 2)
    constraints = ptl[5:11].rstrip(b"\x00")
    tier = "H" if ptl[0] & 0x20 else "L"
    codec = f"hvc1.{space}{ptl[0] & 0x1F}.{reversed_flags:X}.{tier}{ptl[11]}"
    codec += "".join(f".{byte:X}" for byte in constraints)
    return VideoConfig(b"hvc1", b"hvcC", config, width, height, codec)


def video_config(track: Track) -> VideoConfig:
    """A video track's configuration, read when the track was made; MalformedStream if none."""
    if track.config is None:
        raise MalformedStream(track.problem or f"{track.codec} video without parameter sets")
    return track.config
