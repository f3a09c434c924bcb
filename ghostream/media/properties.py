"""A stream's video as a streamer would describe it: codec, profile, size, rate, B-frames.

What decides whether a browser can take the video as it is, and what the
streamer is told, comes from two places: the parameter sets (codec,
profile, level, picture size, chroma format, bit depth) and the timestamps
(frame rate from the decode-time steps, B-frames from presentation times
that go back in decode order).  `PropertiesTracker` watches a stream's
demuxed video packets and says when the description changes, so that the
log and the API name it once per publish, not once per frame.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import asdict, dataclass, replace

from ghostream.media.bitstream import (
    H264_HIGH_PROFILES,
    H264_SPS,
    HEVC_SPS,
    BitReader,
    _h264_size,
    _hevc_sps_fields,
)
from ghostream.media.demux import MediaPacket, Track, nal_type, split_nal_units

CLOCK = 90000
H264_PROFILES = {
    66: "Baseline", 77: "Main", 88: "Extended", 100: "High", 110: "High 10",
    122: "High 4:2:2", 244: "High 4:4:4 Predictive", 44: "CAVLC 4:4:4",
}  # fmt: skip
HEVC_PROFILES = {1: "Main", 2: "Main 10", 3: "Main Still Picture", 4: "Range Extensions"}
CHROMA_FORMATS = {0: "4:0:0", 1: "4:2:0", 2: "4:2:2", 3: "4:4:4"}
# Frames after a new track before the description is complete without B-frames
# having been seen: x264, NVENC and the others reorder within the first few.
SETTLE_FRAMES = 30
RATE_WINDOW = 64
# A frame rate is announced again only when it moves by more than this share.
RATE_TOLERANCE = 0.05


@dataclass(frozen=True, slots=True)
class VideoProperties:
    codec: str
    profile: str
    level: str
    width: int
    height: int
    chroma: str
    bit_depth: int
    b_frames: bool = False
    frame_rate: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        """One line for the log: `H.264 High 3.0, 640x360, 30 fps, 4:2:0 8-bit, B-frames`."""
        codec = {"h264": "H.264", "hevc": "HEVC"}.get(self.codec, self.codec)
        rate = f"{self.frame_rate:g} fps" if self.frame_rate else "frame rate unknown"
        order = "B-frames" if self.b_frames else "no B-frames"
        return (
            f"{codec} {self.profile} {self.level}, {self.width}x{self.height}, {rate}, "
            f"{self.chroma} {self.bit_depth}-bit, {order}"
        )


def track_properties(track: Track) -> VideoProperties:
    """What the parameter sets say; ValueError when they cannot be read."""
    units = [u for u in split_nal_units(track.extradata) if u]
    try:
        if track.codec == "hevc":
            return _hevc_properties(units)
        if track.codec == "h264":
            return _h264_properties(units)
    except IndexError:
        raise ValueError(f"truncated {track.codec} parameter sets") from None
    raise ValueError(f"{track.codec} video is not described")


def _h264_properties(units: list[bytes]) -> VideoProperties:
    sps = next((u for u in units if nal_type("h264", u) == H264_SPS), None)
    if sps is None or len(sps) < 4:
        raise ValueError("H.264 parameter sets without an SPS")
    profile_idc, constraints, level_idc = sps[1], sps[2], sps[3]
    profile = H264_PROFILES.get(profile_idc, f"profile {profile_idc}")
    if profile_idc == 66 and constraints & 0x40:
        profile = "Constrained Baseline"
    chroma, depth = _h264_format(sps)
    width, height = _h264_size(sps)
    level = f"{level_idc // 10}.{level_idc % 10}"
    return VideoProperties("h264", profile, level, width, height, chroma, depth)


def _h264_format(sps: bytes) -> tuple[str, int]:
    """Chroma format and luma bit depth: only the High profiles write them (else 4:2:0 8-bit)."""
    reader = BitReader(sps[1:])
    profile_idc = reader.bits(8)
    reader.bits(16)
    reader.ue()
    if profile_idc not in H264_HIGH_PROFILES:
        return CHROMA_FORMATS[1], 8
    chroma = reader.ue()
    if chroma == 3:
        reader.bits(1)
    return CHROMA_FORMATS.get(chroma, "?"), reader.ue() + 8


def _hevc_properties(units: list[bytes]) -> VideoProperties:
    sps = next((u for u in units if nal_type("hevc", u) == HEVC_SPS), None)
    if sps is None:
        raise ValueError("HEVC parameter sets without an SPS")
    ptl, chroma, width, height, luma_depth, _ = _hevc_sps_fields(sps)
    profile_idc = ptl[0] & 0x1F
    profile = HEVC_PROFILES.get(profile_idc, f"profile {profile_idc}")
    level = f"{ptl[11] / 30:g}"
    return VideoProperties(
        "hevc", profile, level, width, height, CHROMA_FORMATS.get(chroma, "?"), luma_depth + 8
    )


class PropertiesTracker:
    """Follows a stream's video packets; `observe` returns the description when it changes.

    The first description comes once it is complete (B-frames seen, or
    `SETTLE_FRAMES` frames without any), then again on new parameter sets,
    on B-frames appearing, or on a frame-rate change beyond the tolerance.
    """

    def __init__(self) -> None:
        self.current: VideoProperties | None = None
        self.announced: VideoProperties | None = None
        self.error: str | None = None
        self._track: Track | None = None
        self._frames = 0
        self._last: MediaPacket | None = None
        self._steps: deque[int] = deque(maxlen=RATE_WINDOW)

    @property
    def settled(self) -> bool:
        return self.announced is not None

    def observe(self, packet: MediaPacket) -> VideoProperties | None:
        if packet.track.kind != "video":
            return None
        if packet.track is not self._track:
            self._new_track(packet.track)
        if self.current is None:
            return None
        last, self._last = self._last, packet
        self._frames += 1
        if last is not None:
            step = packet.dts - last.dts
            # A step back or a jump is a restart of the clock, not a frame interval.
            if 0 < step <= CLOCK:
                self._steps.append(step)
                if packet.pts < last.pts and not self.current.b_frames:
                    self.current = replace(self.current, b_frames=True)
        if self._steps:
            rate = round(CLOCK / statistics.median(self._steps), 2)
            if self.current.frame_rate is None or _moved(self.current.frame_rate, rate):
                self.current = replace(self.current, frame_rate=rate)
        complete = self.current.b_frames or self._frames >= SETTLE_FRAMES
        if complete and self.current != self.announced:
            self.announced = self.current
            return self.current
        return None

    def _new_track(self, track: Track) -> None:
        self._track = track
        self._last = None
        self._frames = 0
        try:
            described = track_properties(track)
        except ValueError as exc:
            self.current, self.error = None, str(exc)
            return
        self.error = None
        # New parameter sets from the same encoder: the rate and the GOP structure stay.
        if self.current is not None:
            described = replace(
                described, b_frames=self.current.b_frames, frame_rate=self.current.frame_rate
            )
            self._frames = SETTLE_FRAMES
        self.current = described


def _moved(old: float, new: float) -> bool:
    return abs(new - old) > RATE_TOLERANCE * old
