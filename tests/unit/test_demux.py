"""The shared demuxer on ffmpeg-made MPEG-TS, checked against what ffprobe reports."""

from __future__ import annotations

import json
import subprocess
from contextlib import AsyncExitStack
from pathlib import Path

import av
import pytest
import trio
from harness.media import signal_source, write_ts
from harness.programs import require

from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import Broker, StreamNotFound
from ghostream.broker.stream import StreamEnded
from ghostream.media.demux import MediaPacket, TsDemuxer, split_nal_units
from ghostream.media.ts import PACKET_SIZE

CHUNK = 7 * PACKET_SIZE


@pytest.fixture(scope="module", params=["libx264", "libx265"])
def media(request, tmp_path_factory) -> tuple[Path, bytes, dict]:
    path = tmp_path_factory.mktemp("ts") / f"{request.param}.ts"
    source = signal_source(
        "160x90", "-bf", "2", video=request.param, preset=None, gop=10, sample_rate=44100,
        channels=2,
    )  # fmt: skip
    write_ts(path, 2, source)
    probe = subprocess.run(
        [require("ffprobe"), "-v", "error", "-show_packets", "-of", "json", str(path)],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    return path, path.read_bytes(), json.loads(probe.stdout)


def demux_all(data: bytes) -> tuple[TsDemuxer, list[MediaPacket]]:
    demuxer = TsDemuxer()
    packets = []
    for i in range(0, len(data), CHUNK):
        packets += demuxer.feed(data[i : i + CHUNK])
    return demuxer, packets


def test_timestamps_and_keyframes_match_ffprobe(media) -> None:
    _, data, probe = media
    demuxer, packets = demux_all(data)
    video = [p for p in packets if p.track.kind == "video"]
    audio = [p for p in packets if p.track.kind == "audio"]
    expected_video = [p for p in probe["packets"] if p["codec_type"] == "video"]
    expected_audio = [p for p in probe["packets"] if p["codec_type"] == "audio"]
    # The last video access unit completes only when the next one starts.
    assert [(p.pts, p.dts, p.keyframe) for p in video] == [
        (p["pts"], p["dts"], "K" in p["flags"]) for p in expected_video[: len(video)]
    ]
    assert len(video) == len(expected_video) - 1
    # Frames after the first in a PES get interpolated times; ffmpeg rounds them its own way.
    assert len(audio) == len(expected_audio)
    assert all(abs(a.pts - e["pts"]) <= 1 for a, e in zip(audio, expected_audio, strict=True))
    assert demuxer.ready and demuxer.invalid == 0
    assert audio[0].track.sample_rate == 44100 and audio[0].track.channels == 2


def test_packets_decode_with_pyav(media) -> None:
    """Access units and raw AAC frames are what decoders expect, with extradata given."""
    _, data, _ = media
    _, packets = demux_all(data)
    video_track = packets[0].track if packets[0].track.kind == "video" else None
    assert video_track is not None and packets[0].keyframe
    decoders = {}
    frames = {"video": 0, "audio": 0}
    for packet in packets:
        track = packet.track
        if track.kind not in decoders:
            decoder = av.CodecContext.create(track.codec, "r")
            decoder.extradata = track.extradata
            decoders[track.kind] = decoder
        frames[track.kind] += len(decoders[track.kind].decode(av.Packet(packet.data)))
    assert frames["video"] >= 45 and frames["audio"] >= 80


def test_every_keyframe_carries_parameter_sets(media) -> None:
    _, data, _ = media
    _, packets = demux_all(data)
    for packet in packets:
        if packet.keyframe and packet.track.kind == "video":
            first = split_nal_units(packet.data)[:1]
            assert first and packet.data.find(split_nal_units(packet.track.extradata)[0]) >= 0


def test_h264_profile_level_id_comes_from_the_sps(media) -> None:
    path, data, _ = media
    _, packets = demux_all(data)
    track = packets[0].track
    profile = track.h264_profile_level_id
    # libx264 on yuv420p defaults to High profile (100 = 0x64); HEVC has no such id.
    assert (track.codec, profile and profile[:2]) in {("h264", "64"), ("hevc", None)}
    assert path.name.startswith({"h264": "libx264", "hevc": "libx265"}[track.codec])


def test_garbage_and_truncated_input_never_raise(media) -> None:
    _, data, _ = media
    demuxer = TsDemuxer()
    damaged = bytearray(data)
    for offset in range(0, len(damaged), 997):
        damaged[offset] ^= 0xFF
    for i in range(0, len(damaged), 1000):
        demuxer.feed(bytes(damaged[i : i + 1000]))
    assert demuxer.invalid > 0


async def test_hub_readers_start_at_a_keyframe_and_end_with_the_stream(media) -> None:
    _, data, _ = media
    broker = Broker(reconnect_grace=0.0)
    hub = PacketHub(broker)
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.run)
        await nursery.start(hub.run)
        with pytest.raises(StreamNotFound):
            async with hub.read("nobody"):
                pass
        async with AsyncExitStack() as stack:
            with broker.publish("cam", "peer", "srt") as stream:
                for chunk in chunks[: len(chunks) // 2]:
                    stream.publish(chunk)
                reader = await stack.enter_async_context(hub.read("cam"))
                tracks = await reader.tracks()
                assert {t.kind for t in tracks} == {"video", "audio"}
                first = await reader.receive()
                assert first.track.kind == "video" and first.keyframe
                for chunk in chunks[len(chunks) // 2 :]:
                    stream.publish(chunk)
            # The publisher is gone and the grace is zero: the reader drains, then ends.
            received = [first]
            with trio.fail_after(5), pytest.raises(StreamEnded):
                while True:
                    received.append(await reader.receive())
        audio_pts = [p.pts for p in received if p.track.kind == "audio"]
        assert audio_pts == sorted(audio_pts) and len(audio_pts) > 20
        nursery.cancel_scope.cancel()
