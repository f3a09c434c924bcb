"""FLV tags to MPEG-TS, checked against ffmpeg: its FLV in, libavformat decodes what comes out.

H.264 with B-frames and AAC come from ffmpeg's own flv muxer (what it
sends over RTMP).  ffmpeg 5 cannot write Enhanced RTMP, so the HEVC tags
are built here from an MP4 that ffmpeg wrote (its `hvcC` record and
length-prefixed samples are exactly what an `hvc1` video tag carries).
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import av
import pytest
from harness.programs import require

from ghostream.rtmp.flv import FlvRemuxer, UnsupportedMedia

FRAMES = 50
LAVFI = ["-f", "lavfi", "-i", "testsrc2=size=160x96:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]  # fmt: skip


def flv_tags(path: Path) -> list[tuple[int, int, bytes]]:
    """(tag type, timestamp in ms, body) of every tag of an FLV file."""
    data = path.read_bytes()
    position = int.from_bytes(data[5:9], "big") + 4
    tags = []
    while position + 11 <= len(data):
        kind = data[position] & 0x1F
        size = int.from_bytes(data[position + 1 : position + 4], "big")
        stamp = int.from_bytes(data[position + 4 : position + 7], "big") | data[position + 7] << 24
        tags.append((kind, stamp, data[position + 11 : position + 11 + size]))
        position += 11 + size + 4
    return tags


def decoded(ts: bytes) -> dict[str, list]:
    """Frames libavformat and libavcodec decode from TS bytes, by kind."""
    out: dict[str, list] = {"video": [], "audio": []}
    with av.open(io.BytesIO(ts), format="mpegts") as container:
        for packet in container.demux():
            for frame in packet.decode():
                kind = "video" if isinstance(frame, av.VideoFrame) else "audio"
                out[kind].append((packet.stream.codec_context.name, frame.pts))
    return out


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    return require("ffmpeg")


def test_ffmpeg_flv_with_b_frames_and_aac_becomes_decodable_ts(ffmpeg, tmp_path: Path) -> None:
    path = tmp_path / "source.flv"
    subprocess.run(
        [ffmpeg, "-v", "error", *LAVFI, "-frames:v", str(FRAMES), "-t", "2",
         "-c:v", "libx264", "-bf", "2", "-g", "25", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-f", "flv", str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    remuxer = FlvRemuxer()
    ts = b"".join(
        remuxer.video(stamp, body) if kind == 9 else remuxer.audio(stamp, body)
        for kind, stamp, body in flv_tags(path)
        if kind in (8, 9)
    )
    frames = decoded(ts)
    assert len(frames["video"]) == FRAMES
    assert {codec for codec, _ in frames["video"]} == {"h264"}
    assert {codec for codec, _ in frames["audio"]} == {"aac"}
    # Presentation order differs from decoding order: PTS came from the composition time.
    stamps = [pts for _, pts in frames["video"]]
    assert stamps == sorted(stamps) and len(set(stamps)) == FRAMES


def hevc_tags(ffmpeg: str, directory: Path) -> list[tuple[int, bytes]]:
    """Enhanced RTMP video tags (timestamp, body) as OBS sends HEVC."""
    path = directory / "source.mp4"
    subprocess.run(
        [ffmpeg, "-v", "error", *LAVFI[:4], "-frames:v", str(FRAMES), "-c:v", "libx265",
         "-x265-params", "log-level=error:bframes=0:keyint=25", "-pix_fmt", "yuv420p",
         "-tag:v", "hvc1", str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        record = bytes(stream.codec_context.extradata)
        tags = [(0, bytes([0x90]) + b"hvc1" + record)]
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            frame_type = 0x10 if packet.is_keyframe else 0x20
            millis = int(packet.dts * packet.time_base * 1000)
            tags.append((millis, bytes([0x80 | frame_type | 3]) + b"hvc1" + bytes(packet)))
    return tags


def test_enhanced_rtmp_hevc_becomes_decodable_ts(ffmpeg, tmp_path: Path) -> None:
    remuxer = FlvRemuxer()
    ts = b"".join(remuxer.video(stamp, body) for stamp, body in hevc_tags(ffmpeg, tmp_path))
    frames = decoded(ts)
    assert len(frames["video"]) == FRAMES
    assert {codec for codec, _ in frames["video"]} == {"hevc"}


@pytest.mark.parametrize(
    ("kind", "body", "named"),
    [
        ("video", b"\x12\x00", "Sorenson H.263"),
        ("video", b"\x90av01\x00", "'av01'"),
        ("audio", b"\x2f\x00", "MP3"),
        ("audio", b"\xaf\x00\x2b\x10", "object type 5"),
    ],
)
def test_other_codecs_are_refused_by_name(kind: str, body: bytes, named: str) -> None:
    remuxer = FlvRemuxer()
    with pytest.raises(UnsupportedMedia, match=named):
        getattr(remuxer, kind)(0, body)
