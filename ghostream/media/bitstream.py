"""What an init segment needs from a video track: decoder configuration, size, codec string.

The demuxer hands over Annex B parameter sets; MP4 wants them in an avcC or
hvcC box, with the picture size in the sample entry and an RFC 6381 codec
string in the multivariant playlist.  Only the first fields of the SPS are
read, enough for the size and the profile.
"""

from __future__ import annotations

from dataclasses import dataclass

from ghostream.media.demux import Track, nal_type, split_nal_units

# H.264 profiles whose SPS carries chroma format and bit depth fields.
H264_HIGH_PROFILES = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))
H264_SPS, H264_PPS = 7, 8
HEVC_VPS, HEVC_SPS, HEVC_PPS = 32, 33, 34
# NAL units an MP4 sample leaves out: parameter sets live in the init segment
# (a change of them makes a new Track, hence a new init), delimiters are noise.
DROPPED_UNITS = {"h264": frozenset((H264_SPS, H264_PPS, 9)), "hevc": frozenset((32, 33, 34, 35))}


class BitReader:
    """Exp-Golomb reader over an RBSP (emulation prevention bytes removed)."""

    def __init__(self, data: bytes) -> None:
        self.data = data.replace(b"\x00\x00\x03", b"\x00\x00")
        self.position = 0

    def bits(self, count: int) -> int:
        value = 0
        for _ in range(count):
            byte = self.data[self.position >> 3]
            value = (value << 1) | ((byte >> (7 - (self.position & 7))) & 1)
            self.position += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bits(1) == 0:
            zeros += 1
        return (1 << zeros) - 1 + self.bits(zeros)

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


def video_config(track: Track) -> VideoConfig:
    """ValueError when the parameter sets cannot be read (the packager logs it)."""
    units = [u for u in split_nal_units(track.extradata) if u]
    try:
        if track.codec == "hevc":
            return _hevc_config(units)
        return _h264_config(units)
    except IndexError:
        raise ValueError(f"truncated {track.codec} parameter sets") from None


def sample_units(codec: str, access_unit: bytes) -> bytes:
    """An Annex B access unit as MP4 sample data: 4-byte lengths before each NAL unit."""
    dropped = DROPPED_UNITS.get(codec, frozenset())
    return b"".join(
        len(unit).to_bytes(4, "big") + unit
        for unit in split_nal_units(access_unit)
        if unit and nal_type(codec, unit) not in dropped
    )


def _skip_scaling_list(reader: BitReader, size: int) -> None:
    last = following = 8
    for _ in range(size):
        if following:
            following = (last + reader.se() + 256) % 256
        last = following or last


def _h264_size(sps: bytes) -> tuple[int, int]:
    reader = BitReader(sps[1:])
    profile = reader.bits(8)
    reader.bits(16)
    reader.ue()
    chroma = 1
    if profile in H264_HIGH_PROFILES:
        chroma = reader.ue()
        if chroma == 3:
            reader.bits(1)
        reader.ue()
        reader.ue()
        reader.bits(1)
        if reader.bits(1):
            for index in range(8 if chroma != 3 else 12):
                if reader.bits(1):
                    _skip_scaling_list(reader, 16 if index < 6 else 64)
    reader.ue()
    poc_type = reader.ue()
    if poc_type == 0:
        reader.ue()
    elif poc_type == 1:
        reader.bits(1)
        reader.se()
        reader.se()
        for _ in range(reader.ue()):
            reader.se()
    reader.ue()
    reader.bits(1)
    width_mbs = reader.ue() + 1
    height_units = reader.ue() + 1
    frame_mbs_only = reader.bits(1)
    if not frame_mbs_only:
        reader.bits(1)
    reader.bits(1)
    crop = [reader.ue() for _ in range(4)] if reader.bits(1) else [0, 0, 0, 0]
    crop_x = 1 if chroma in (0, 3) else 2
    crop_y = (2 - frame_mbs_only) * (2 if chroma == 1 else 1)
    width = width_mbs * 16 - crop_x * (crop[0] + crop[1])
    height = (2 - frame_mbs_only) * height_units * 16 - crop_y * (crop[2] + crop[3])
    return width, height


def _h264_config(units: list[bytes]) -> VideoConfig:
    sps = [u for u in units if u[0] & 0x1F == H264_SPS]
    pps = [u for u in units if u[0] & 0x1F == H264_PPS]
    if not sps or not pps:
        raise ValueError("H.264 parameter sets without an SPS or a PPS")
    first = sps[0]
    config = bytes([1, first[1], first[2], first[3], 0xFF, 0xE0 | len(sps)])
    config += b"".join(len(u).to_bytes(2, "big") + u for u in sps)
    config += bytes([len(pps)]) + b"".join(len(u).to_bytes(2, "big") + u for u in pps)
    width, height = _h264_size(first)
    codec = f"avc1.{first[1]:02x}{first[2]:02x}{first[3]:02x}"
    return VideoConfig(b"avc1", b"avcC", config, width, height, codec)


def _hevc_sps_fields(sps: bytes) -> tuple[bytes, int, int, int, int, int]:
    """General profile_tier_level (12 bytes), chroma format, size, bit depths."""
    reader = BitReader(sps[2:])
    reader.bits(4)
    sub_layers = reader.bits(3)
    reader.bits(1)
    ptl = bytes(reader.bits(8) for _ in range(12))
    present = [(reader.bits(1), reader.bits(1)) for _ in range(sub_layers)]
    if sub_layers:
        reader.bits(2 * (8 - sub_layers))
    for profile_present, level_present in present:
        reader.bits(88 * profile_present)
        reader.bits(8 * level_present)
    reader.ue()
    chroma = reader.ue()
    if chroma == 3:
        reader.bits(1)
    width, height = reader.ue(), reader.ue()
    if reader.bits(1):
        sub_x = 2 if chroma in (1, 2) else 1
        sub_y = 2 if chroma == 1 else 1
        left, right, top, bottom = (reader.ue() for _ in range(4))
        width -= sub_x * (left + right)
        height -= sub_y * (top + bottom)
    return ptl, chroma, width, height, reader.ue(), reader.ue()


def _hevc_config(units: list[bytes]) -> VideoConfig:
    arrays = {kind: [u for u in units if nal_type("hevc", u) == kind] for kind in (32, 33, 34)}
    if not arrays[HEVC_SPS] or not arrays[HEVC_PPS]:
        raise ValueError("HEVC parameter sets without an SPS or a PPS")
    ptl, chroma, width, height, luma, chroma_depth = _hevc_sps_fields(arrays[HEVC_SPS][0])
    config = bytes([1]) + ptl
    config += bytes([0xF0, 0x00, 0xFC, 0xFC | chroma, 0xF8 | luma, 0xF8 | chroma_depth])
    config += bytes([0, 0, 0x0F, sum(1 for found in arrays.values() if found)])
    for kind, found in arrays.items():
        if found:
            config += bytes([0x80 | kind]) + len(found).to_bytes(2, "big")
            config += b"".join(len(u).to_bytes(2, "big") + u for u in found)
    space = ("", "A", "B", "C")[ptl[0] >> 6]
    compatibility = int.from_bytes(ptl[1:5], "big")
    reversed_flags = int(f"{compatibility:032b}"[::-1], 2)
    constraints = ptl[5:11].rstrip(b"\x00")
    tier = "H" if ptl[0] & 0x20 else "L"
    codec = f"hvc1.{space}{ptl[0] & 0x1F}.{reversed_flags:X}.{tier}{ptl[11]}"
    codec += "".join(f".{byte:X}" for byte in constraints)
    return VideoConfig(b"hvc1", b"hvcC", config, width, height, codec)
