"""The broker on real MPEG-TS made by ffmpeg: keyframes, GOP cache, slow readers, lifecycle."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import trio
from harness.media import signal_source, write_ts
from harness.programs import require

from ghostream import monitoring
from ghostream.broker.registry import Broker, StreamBusy, StreamNotFound
from ghostream.broker.stream import Stream, StreamEnded, StreamState
from ghostream.history.events import (
    BytesCheckpoint,
    PublishStarted,
    PublishStopped,
    StreamClosed,
    ViewerJoined,
    ViewerLeft,
    ViewerSkipped,
)
from ghostream.media.ts import PACKET_SIZE, TsInspector

CHUNK = 7 * PACKET_SIZE
GOP = 10


def make_ts(path: Path, codec: str) -> bytes:
    """Two seconds of test signal, a keyframe every GOP frames exactly and no B-frames."""
    source = signal_source("160x90", "-keyint_min", str(GOP), "-bf", "0", video=codec, gop=GOP)
    return write_ts(path, 2, source)


@pytest.fixture(scope="module", params=["libx264", "libx265"])
def media(request, tmp_path_factory) -> tuple[str, bytes, int]:
    """A TS file, its codec name, and its keyframe count as ffprobe sees it."""
    path = tmp_path_factory.mktemp("ts") / f"{request.param}.ts"
    data = make_ts(path, request.param)
    probe = subprocess.run(
        [require("ffprobe"), "-v", "error", "-select_streams", "v", "-show_entries",
         "packet=flags", "-of", "csv=p=0", str(path)],
        capture_output=True, check=True, text=True,
    )  # fmt: skip
    keyframes = sum("K" in line for line in probe.stdout.split())
    return {"libx264": "h264", "libx265": "hevc"}[request.param], data, keyframes


def chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def without_random_access_flags(data: bytes) -> bytes:
    """The same TS with its adaptation-field keyframe hints cleared (some encoders omit them)."""
    packets = bytearray(data)
    for offset in range(0, len(packets), PACKET_SIZE):
        if packets[offset + 3] & 0x20 and packets[offset + 4]:
            packets[offset + 5] &= ~0x40
    return bytes(packets)


@pytest.mark.parametrize("hints", [True, False], ids=["flagged", "nal-units"])
def test_inspector_finds_codecs_and_every_keyframe(media, hints: bool) -> None:
    codec, data, keyframes = media
    inspector = TsInspector()
    if not hints:
        data = without_random_access_flags(data)
    found = sum(inspector.inspect(chunk).keyframe for chunk in chunks(data))
    assert inspector.program.video_codec == codec
    assert inspector.program.audio_codecs == ("aac",)
    # A chunk holds at most one keyframe start at this GOP length.
    assert found == keyframes
    assert keyframes == 2 * 25 // GOP


def test_inspector_survives_garbage() -> None:
    inspector = TsInspector()
    junk = bytes(range(256)) * 10
    truncated = b"\x47\x40\x00\x30\xff"  # claims an adaptation field longer than itself
    for chunk in (junk, truncated.ljust(PACKET_SIZE, b"\xff"), b"\x47" * 3):
        assert not inspector.inspect(chunk).keyframe
    assert inspector.invalid_packets > 0


def decode_errors(tmp_path: Path, data: bytes) -> tuple[str, str]:
    path = tmp_path / "received.ts"
    path.write_bytes(data)
    first = subprocess.run(
        [require("ffprobe"), "-v", "error", "-select_streams", "v", "-read_intervals", "%+#1",
         "-show_entries", "frame=key_frame", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    decoded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
    )
    return first.stdout.strip().split(",")[0], decoded.stderr


async def test_late_reader_starts_with_tables_then_the_last_keyframe(media, tmp_path) -> None:
    _, data, _ = media
    stream = Stream("late")
    parts = chunks(data)
    for chunk in parts[: len(parts) // 2]:
        stream.publish(chunk)
    subscription = stream.subscribe()
    received = await subscription.receive()
    assert received.startswith(stream.tables)
    for chunk in parts[len(parts) // 2 :]:
        stream.publish(chunk)
    stream.end()
    with pytest.raises(StreamEnded):
        while True:
            received += await subscription.receive()
    first_frame, errors = decode_errors(tmp_path, received)
    assert first_frame == "1"
    assert errors == ""


def first_keyframe_chunk(parts: list[bytes]) -> int:
    inspector = TsInspector()
    return next(i for i, chunk in enumerate(parts) if inspector.inspect(chunk).keyframe)


async def test_stalled_reader_is_moved_ahead_then_dropped_and_others_get_everything(
    media, autojump_clock
) -> None:
    _, data, _ = media
    parts = chunks(data)
    stream = Stream("busy", ring_bytes=4 * len(data))
    stalled = stream.subscribe(max_lag_bytes=len(data) // 2)
    reader = stream.subscribe()
    skipped: list[bool] = []
    stream.on_skip.append(lambda _stream, _sub, dropped: skipped.append(dropped))
    published = b""
    received = b""
    outcomes: list[str] = []
    tables = b""
    for _ in range(4):
        for chunk in parts:
            stream.publish(chunk)
            published += chunk
            # The healthy reader takes each chunk as it comes, from the first keyframe on.
            if stream.gop_start is not None:
                tables = tables or stream.tables
                received += await reader.receive()
        # The stalled one reads once per pass.
        try:
            await stalled.receive()
            outcomes.append("read")
        except StreamEnded as ended:
            outcomes.append(ended.reason)
    assert received == tables + published[first_keyframe_chunk(parts) * CHUNK :]
    # Moved ahead twice (reading on from the latest keyframe), then dropped.
    assert outcomes == ["read", "read", "read", "too slow: fell behind repeatedly"]
    assert skipped == [False, False, True]


async def test_second_publisher_is_busy_and_unknown_stream_not_found() -> None:
    broker = Broker()
    with broker.publish("live", "1.2.3.4:5", "srt"):
        with pytest.raises(StreamBusy), broker.publish("live", "6.7.8.9:5", "srt"):
            pass
    with pytest.raises(StreamNotFound), broker.watch("absent", "peer", "srt"):
        pass


async def test_viewers_wait_for_a_returning_publisher_within_the_grace(
    media, autojump_clock
) -> None:
    _, data, _ = media
    broker = Broker(reconnect_grace=10)
    events: list = []
    broker.on_event.append(events.append)
    part = chunks(data)
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.run)
        with broker.publish("show", "a:1", "srt") as stream:
            for chunk in part:
                stream.publish(chunk)
        assert stream.state is StreamState.WAITING
        with (
            pytest.raises(StreamEnded),
            broker.watch("show", "viewer:1", "srt") as subscription,
        ):
            first = await subscription.receive()
            assert first
            await trio.sleep(5)
            with broker.publish("show", "a:2", "srt") as again:
                assert again is stream and stream.state is StreamState.LIVE
                for chunk in part:
                    again.publish(chunk)
                resumed = await subscription.receive()
                assert resumed.startswith(stream.tables)
            await trio.sleep(10.5)
            while True:
                await subscription.receive()
        assert broker.get("show") is None
        nursery.cancel_scope.cancel()
    kinds = [type(event) for event in events]
    assert kinds == [
        PublishStarted,
        PublishStopped,
        ViewerJoined,
        PublishStarted,
        PublishStopped,
        StreamClosed,
        ViewerLeft,
    ]
    assert events[1].bytes == len(data)
    assert events[-1].reason == "stream ended"
    assert events[-1].bytes > 0


async def test_default_stream_is_configured_or_the_only_one() -> None:
    broker = Broker()
    assert broker.default_stream() is None
    with broker.publish("one", "p", "srt"):
        assert broker.default_stream() == "one"
        assert broker.default_stream("main") == "main"
        with broker.publish("two", "p", "srt"):
            assert broker.default_stream() is None


async def test_a_slow_viewer_skipping_is_an_event_and_a_metric(media, autojump_clock) -> None:
    _, data, _ = media
    parts = chunks(data)
    broker = Broker(ring_bytes=4 * len(data))
    events: list = []
    broker.on_event += [events.append, monitoring.observe]
    labels = {"stream": "skippy", "protocol": "srt"}
    before = monitoring.REGISTRY.get_sample_value("ghostream_viewer_skips_total", labels) or 0
    with (
        broker.publish("skippy", "a:1", "srt") as stream,
        broker.watch("skippy", "v:1", "srt", max_lag_bytes=len(data) // 2) as slow,
    ):
        with pytest.raises(StreamEnded):
            for _ in range(4):
                for chunk in parts:
                    stream.publish(chunk)
                await slow.receive()
    skips = [event for event in events if isinstance(event, ViewerSkipped)]
    assert [(e.stream_id, e.protocol, e.dropped) for e in skips] == [
        ("skippy", "srt", False),
        ("skippy", "srt", False),
        ("skippy", "srt", True),
    ]
    after = monitoring.REGISTRY.get_sample_value("ghostream_viewer_skips_total", labels)
    assert after - before == 3


async def test_open_sessions_report_their_bytes_periodically(media, autojump_clock) -> None:
    _, data, _ = media
    broker = Broker(checkpoint_interval=60)
    events: list = []
    broker.on_event.append(events.append)
    async with trio.open_nursery() as nursery:
        await nursery.start(broker.run)
        with (
            broker.publish("show", "a:1", "srt") as stream,
            broker.watch("show", "v:1", "srt") as sub,
        ):
            viewer = broker.join("show", "v:2", "llhls")
            viewer.bytes_sent = 1234
            for chunk in chunks(data):
                stream.publish(chunk)
            await sub.receive()
            await trio.sleep(61)
            broker.leave(viewer, "v:2", "stopped fetching")
            assert broker.audience() == {"show": {"srt": 1}}
        nursery.cancel_scope.cancel()
    checkpoints = [e for e in events if isinstance(e, BytesCheckpoint)]
    assert {(e.viewer_id is None, e.bytes > 0) for e in checkpoints} == {
        (True, True),
        (False, True),
    }
    assert len(checkpoints) == 3
    assert [e.bytes for e in checkpoints if e.viewer_id == viewer.id] == [1234]
    assert next(e for e in checkpoints if e.viewer_id is None).bytes == len(data)
