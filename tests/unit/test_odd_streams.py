"""Streams without H.264/HEVC video: SRT readers get them; the demuxer says why it does no more.

An audio-only stream has no keyframe to start a reader on, and MPEG-2
video has none of the NAL units the inspector looks for; a reader that
joins mid-stream must still get a decodable start (tables, then a GOP or
an audio frame) instead of waiting forever.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from harness.media import signal_source, write_ts
from harness.programs import require

from ghostream.broker.stream import Stream, StreamEnded
from ghostream.media.demux import TsDemuxer
from ghostream.media.ts import PACKET_SIZE

CHUNK = 7 * PACKET_SIZE
SOURCES = {
    "audio only": (signal_source(video=None), {"aac"}, "it has no video (audio only)"),
    "MPEG-2": (
        signal_source(video="mpeg2video", preset=None, audio="mp2", sample_rate=44100),
        {"mpeg2video", "mp2"},
        "its video is mpeg2video; only H.264 and HEVC are repackaged",
    ),
}


@pytest.fixture(scope="module", params=sorted(SOURCES))
def source(request, tmp_path_factory) -> tuple[bytes, set[str], str, Path]:
    options, codecs, reason = SOURCES[request.param]
    directory = tmp_path_factory.mktemp("odd")
    return write_ts(directory / "source.ts", 3, options), codecs, reason, directory


async def test_a_reader_joining_mid_stream_gets_a_decodable_start(source) -> None:
    data, codecs, _, directory = source
    stream = Stream("odd")
    half = len(data) // CHUNK // 2
    for index in range(half):
        stream.publish(data[index * CHUNK : (index + 1) * CHUNK])
    assert stream.gop_start is not None, "no place for a new reader to start"
    with stream.subscribe() as reader:
        for index in range(half, len(data) // CHUNK):
            stream.publish(data[index * CHUNK : (index + 1) * CHUNK])
        stream.end()
        received = bytearray()
        with pytest.raises(StreamEnded):
            while True:
                received += await reader.receive()
    assert received[: 2 * PACKET_SIZE] == stream.tables
    path = directory / "received.ts"
    path.write_bytes(received)
    probe = subprocess.run(
        [require("ffprobe"), "-v", "error", "-show_entries", "stream=codec_name", "-of", "json",
         str(path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert {s["codec_name"] for s in json.loads(probe.stdout)["streams"]} == codecs


def test_the_demuxer_says_why_it_makes_no_frames(source) -> None:
    data, _, reason, _ = source
    demuxer = TsDemuxer()
    demuxer.feed(data)
    assert demuxer.unsupported == reason
    assert not demuxer.ready
