"""TS made from WebRTC-style H.264 and Opus: libavformat reads it, so does our own demuxer.

The muxer is what turns a WHIP publish into the MPEG-TS every output reads,
so it is checked against the independent reader (PyAV / libavformat, as
ffmpeg and VLC viewers use) and against Ghostream's demuxer, in both
directions: Opus TS written by ffmpeg is demuxed too.
"""

from __future__ import annotations

import io
import subprocess
from fractions import Fraction

import av
import pytest
from harness.programs import require

from ghostream.media import opus
from ghostream.media.demux import TsDemuxer
from ghostream.media.ts import PACKET_SIZE, TsInspector
from ghostream.media.tsmux import PTS_OFFSET, TsMuxer


def encoded(codec: str, count: int, **options) -> list[av.Packet]:
    """Real packets from PyAV's encoders, as a browser would send them."""
    if codec == "libx264":
        context = av.CodecContext.create(codec, "w")
        context.width, context.height, context.pix_fmt = 160, 96, "yuv420p"
        context.time_base = Fraction(1, 90000)
        context.framerate = Fraction(30)
        context.options = {"g": "10", "bf": "0", "tune": "zerolatency", "preset": "ultrafast"}
        frames = [av.VideoFrame(160, 96, "yuv420p") for _ in range(count)]
        for index, frame in enumerate(frames):
            frame.pts = index * 3000
    else:
        context = av.CodecContext.create("libopus", "w")
        context.sample_rate, context.layout, context.format = 48000, "stereo", "s16"
        context.time_base = Fraction(1, 48000)
        frames = []
        for index in range(count):
            frame = av.AudioFrame(format="s16", layout="stereo", samples=960)
            frame.sample_rate, frame.pts = 48000, index * 960
            for plane in frame.planes:
                plane.update(bytes(plane.buffer_size))
            frames.append(frame)
    packets = [p for frame in frames for p in context.encode(frame)]
    return packets + list(context.encode(None))


@pytest.fixture(scope="module")
def muxed() -> tuple[bytes, list, list]:
    video = encoded("libx264", 30)
    audio = encoded("libopus", 50)
    muxer = TsMuxer(channels=2)
    chunks = []
    events = sorted(
        [(float(p.pts * p.time_base), "v", p) for p in video]
        + [(float(p.pts * p.time_base), "a", p) for p in audio],
        key=lambda e: e[0],
    )
    for seconds, kind, packet in events:
        pts = round(seconds * 90000)
        if kind == "v":
            chunks.append(muxer.video_unit(bytes(packet), pts, packet.is_keyframe))
        else:
            chunks.append(muxer.audio_packet(bytes(packet), pts))
    assert all(len(chunk) % PACKET_SIZE == 0 for chunk in chunks)
    return b"".join(chunks), video, audio


def test_libavformat_decodes_both_tracks(muxed) -> None:
    data, video, audio = muxed
    with av.open(io.BytesIO(data), format="mpegts") as container:
        kinds = {s.type: s.codec_context.name for s in container.streams}
        assert kinds == {"video": "h264", "audio": "opus"}
        assert container.streams.audio[0].codec_context.channels == 2
        decoded = {"video": 0, "audio": 0}
        for frame in container.decode(video=0, audio=0):
            decoded["video" if isinstance(frame, av.VideoFrame) else "audio"] += 1
    assert decoded["video"] == len(video)
    assert decoded["audio"] >= len(audio) - 2


def test_our_demuxer_returns_what_was_muxed(muxed) -> None:
    data, video, audio = muxed
    demuxer = TsDemuxer()
    packets = []
    for offset in range(0, len(data), 1000):
        packets += demuxer.feed(data[offset : offset + 1000])
    assert demuxer.invalid == 0 and demuxer.ready
    got_audio = [p for p in packets if p.track.kind == "audio"]
    assert [p.data for p in got_audio] == [bytes(p) for p in audio]
    assert got_audio[0].track.codec == "opus" and got_audio[0].track.channels == 2
    assert got_audio[1].pts - got_audio[0].pts == 1800
    got_video = [p for p in packets if p.track.kind == "video"]
    assert len(got_video) == len(video)
    assert got_video[0].keyframe and got_video[0].pts == PTS_OFFSET
    assert all(p.data.endswith(bytes(v)) for p, v in zip(got_video[1:], video[1:], strict=True))


def test_keyframe_chunks_start_with_the_tables() -> None:
    muxer = TsMuxer(channels=0)
    inspector = TsInspector()
    key = muxer.video_unit(b"\x00\x00\x00\x01\x67\x42\x00\x1f\x00\x00\x00\x01\x65\x88", 0, True)
    assert inspector.inspect(key).keyframe and inspector.program.video_codec == "h264"
    assert inspector.program.audio_pid is None
    delta = muxer.video_unit(b"\x00\x00\x00\x01\x41\x9a", 3000, False)
    assert not inspector.inspect(delta).keyframe and delta[1] & 0x1F != 0


def test_opus_written_by_ffmpeg_is_demuxed(tmp_path) -> None:
    require("ffmpeg")
    path = tmp_path / "opus.ts"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "1",
         "-c:a", "libopus", "-ac", "1", "-f", "mpegts", str(path)],
        check=True,
    )  # fmt: skip
    demuxer = TsDemuxer()
    packets = demuxer.feed(path.read_bytes())
    assert demuxer.invalid == 0
    assert {p.track.codec for p in packets} == {"opus"}
    assert packets[0].track.channels == 1
    samples = sum(opus.packet_samples(p.data) for p in packets)
    assert 0.9 * 48000 <= samples <= 1.1 * 48000


def test_opus_durations_follow_the_toc() -> None:
    assert opus.packet_samples(bytes([0xFC])) == 960  # CELT 20 ms, one frame
    assert opus.packet_samples(bytes([0x79])) == 1920  # hybrid 20 ms, two frames
    assert opus.packet_samples(bytes([0x1B, 0x03])) == 3 * 2880  # SILK 60 ms, three frames
    with pytest.raises(opus.OpusError):
        opus.ts_packets(b"\x7f\xe0\x05ab")


def test_an_access_unit_larger_than_a_pes_length_is_carried_whole() -> None:
    muxer = TsMuxer(channels=0)
    big = b"\x00\x00\x00\x01\x67\x42\x00\x1f\x00\x00\x00\x01\x65" + bytes(range(256)) * 400
    demuxer = TsDemuxer()
    packets = demuxer.feed(muxer.video_unit(big, 0, True))
    # Its PES has no length: it ends where the next one starts.
    packets += demuxer.feed(muxer.video_unit(b"\x00\x00\x00\x01\x41\x9a", 3000, False))
    assert len(packets) == 2 and packets[0].data.endswith(big[-1000:])
    assert packets[0].keyframe and len(packets[0].data) >= len(big)
