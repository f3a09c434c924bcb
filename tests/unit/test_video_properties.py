"""Video properties read from ffmpeg-made streams, as OBS's encoders would make them."""

from __future__ import annotations

from pathlib import Path

from harness.media import signal_source, write_ts

from ghostream.media.demux import TsDemuxer
from ghostream.media.properties import PropertiesTracker, VideoProperties


def encode(tmp_path: Path, *options: str, rate: int = 30, size: str = "320x180", **video) -> bytes:
    """Two seconds of silent test signal (`signal_source`'s keywords choose the encoder)."""
    return write_ts(
        tmp_path / "source.ts", 2, signal_source(size, *options, rate=rate, audio=None, **video)
    )


def described(data: bytes) -> list[VideoProperties]:
    tracker = PropertiesTracker()
    announced = []
    for packet in TsDemuxer().feed(data):
        changed = tracker.observe(packet)
        if changed is not None:
            announced.append(changed)
    return announced


def test_x264_defaults_have_b_frames(tmp_path) -> None:
    data = encode(tmp_path, preset="veryfast")
    [video] = described(data)
    assert video == VideoProperties("h264", "High", "1.3", 320, 180, "4:2:0", 8, True, 30.0)
    assert video.describe() == "H.264 High 1.3, 320x180, 30 fps, 4:2:0 8-bit, B-frames"


def test_zerolatency_baseline_has_none(tmp_path) -> None:
    data = encode(
        tmp_path, "-tune", "zerolatency", "-profile:v", "baseline",
        preset="veryfast", rate=25, size="640x360",
    )  # fmt: skip
    [video] = described(data)
    assert (video.profile, video.width, video.height) == ("Constrained Baseline", 640, 360)
    assert not video.b_frames and video.frame_rate == 25.0


def test_hevc_and_ten_bit_422(tmp_path) -> None:
    data = encode(tmp_path, video="libx265")
    [video] = described(data)
    assert (video.codec, video.profile, video.chroma, video.bit_depth) == (
        "hevc",
        "Main",
        "4:2:0",
        8,
    )
    assert video.b_frames and video.frame_rate == 30.0
    data = encode(tmp_path, pix_fmt="yuv422p10le")
    [video] = described(data)
    assert (video.profile, video.chroma, video.bit_depth) == ("High 4:2:2", "4:2:2", 10)
    assert not video.b_frames


def test_a_stream_is_described_once_not_per_frame(tmp_path) -> None:
    data = encode(tmp_path)
    announced = described(data + data)
    assert len(announced) == 1
