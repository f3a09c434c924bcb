"""Odd and broken publishers next to a good one: the server and the good stream's viewers carry on.

ffmpeg publishes H.264 and HEVC whose cropping window is wider than the
picture (its `h264_metadata` / `hevc_metadata` bitstream filters write
them), an audio-only stream and an MPEG-2 stream, while a good stream is
watched over SRT and LL-HLS.  SRT viewers of the odd streams still decode
them; LL-HLS and WHEP say, with a status and a reason, that they cannot
carry them; the history and the metrics hold the faults.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import pytest
from aiortc import RTCPeerConnection
from harness.browser import wait_for
from harness.media import signal_source
from harness.publisher import publishing
from harness.server_process import ServerProcess

GOOD = signal_source("160x90")
CROPPED_H264 = [*signal_source("160x90"), "-bsf:v", "h264_metadata=crop_right=400"]
CROPPED_HEVC = signal_source("160x90", "-bsf:v", "hevc_metadata=crop_right=300", video="libx265",
                             audio=None)  # fmt: skip
AUDIO_ONLY = signal_source(video=None)
MPEG2 = signal_source(video="mpeg2video", preset=None, audio="mp2")
ODD = {"cropped": CROPPED_H264, "cropped265": CROPPED_HEVC, "radio": AUDIO_ONLY, "mpeg2": MPEG2}


@pytest.fixture
def server(require_program, ghostream_server) -> Iterator[ServerProcess]:
    """A server with the good stream `demo` and every odd stream being published."""
    for program in ("ffmpeg", "ffprobe"):
        require_program(program)
    server = ghostream_server({"auth": {"enabled": False}})
    with ExitStack() as publishers:
        publishers.enter_context(publishing(server, "demo:x", source=GOOD, seconds=90))
        for stream_id, source in ODD.items():
            key = f"{stream_id}:x"
            publishers.enter_context(publishing(server, key, source=source, seconds=90))
        yield server


def probe_srt(server: ServerProcess, stream_id: str) -> set[str]:
    """The codecs ffprobe decodes from an SRT viewer's first seconds of a stream."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "json",
         "-analyzeduration", "2000000", server.srt_url(stream_id)],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return {s["codec_name"] for s in json.loads(result.stdout)["streams"]}


def whep_offer() -> str:
    """A browser-like WHEP offer (recvonly video and audio), made by aiortc."""

    async def make() -> str:
        pc = RTCPeerConnection()
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


def fault_count(server: ServerProcess, component: str) -> float:
    text = httpx.get(server.metrics_url).text
    match = re.search(rf'ghostream_stream_faults_total\{{component="{component}"\}} (\S+)', text)
    return float(match[1]) if match else 0.0


def test_odd_streams_leave_the_server_and_the_good_stream_alone(server: ServerProcess) -> None:
    web = server.web_url
    watcher = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-v", "error", "-i", server.srt_url("demo"),
         "-map", "0", "-t", "12", "-f", "null", "-"],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert httpx.get(f"{web}/demo/index.m3u8", timeout=20).status_code == 200
        for stream_id in ("cropped", "cropped265"):
            answer = httpx.get(f"{web}/{stream_id}/index.m3u8", timeout=20)
            assert answer.status_code == 415, answer.text
            assert "cropping" in answer.text
            server.wait_for_log(rf"{stream_id}: llhls stopped: malformed stream: .*picture", 10)
        for stream_id, reason in (("radio", "no video"), ("mpeg2", "mpeg2video")):
            answer = httpx.get(f"{web}/{stream_id}/index.m3u8", timeout=20)
            assert answer.status_code == 415 and reason in answer.text, answer.text
        offer = whep_offer()
        for stream_id in ("cropped", "radio"):
            answer = httpx.post(
                f"{web}/{stream_id}/whep", content=offer, timeout=20,
                headers={"Content-Type": "application/sdp"},
            )  # fmt: skip
            assert answer.status_code == 415, answer.text
            assert "cannot be played in the browser" in answer.text

        live = {s["id"]: s for s in httpx.get(f"{web}/api/streams").json()["streams"]}
        codecs = {name: (s["video_codec"], s["audio_codecs"]) for name, s in live.items()}
        assert codecs["mpeg2"] == ("mpeg2video", ["mp2"]) and codecs["radio"] == (None, ["aac"])

        # SRT viewers get every stream, whatever its codecs.
        assert probe_srt(server, "radio") == {"aac"}
        assert probe_srt(server, "mpeg2") == {"mpeg2video", "mp2"}
        assert "h264" in probe_srt(server, "cropped")

        # The good stream played on throughout, over LL-HLS and SRT.
        playlist = httpx.get(f"{web}/demo/media.m3u8", timeout=20)
        assert playlist.status_code == 200 and "#EXT-X-PART" in playlist.text
        assert watcher.wait(30) == 0
        assert watcher.stderr is not None and watcher.stderr.read() == ""
    finally:
        watcher.kill()
        watcher.wait()

    assert fault_count(server, "llhls") >= 2
    events = server.admin_json("/api/admin/streams/cropped")["events"]
    faults = [e for e in events if e["kind"] == "fault"]
    assert faults and "cropping" in faults[0]["reason"], events
    assert server.process.poll() is None
    assert "Traceback" not in server.log


def test_a_new_publisher_gets_a_new_try(require_program, ghostream_server) -> None:
    """A refusal lasts only as long as the publish that caused it."""
    require_program("ffmpeg")
    server = ghostream_server({"auth": {"enabled": False}, "streams": {"reconnectGrace": 30}})
    with publishing(server, "show:x", source=CROPPED_H264, seconds=60):
        answer = httpx.get(f"{server.web_url}/show/index.m3u8", timeout=20)
        assert answer.status_code == 415, answer.text
    mark = server.line_count()
    with publishing(server, "show:x", source=GOOD, seconds=60):
        server.wait_for_log("publishing show over SRT", 10, start=mark)
        answer = httpx.get(f"{server.web_url}/show/index.m3u8", timeout=20)
        assert answer.status_code == 200, answer.text


def test_the_player_says_when_a_stream_cannot_be_played(
    require_program, chromium, ghostream_server
) -> None:
    require_program("ffmpeg")
    server = ghostream_server({"auth": {"enabled": False}})
    with publishing(server, "radio:x", source=AUDIO_ONLY, seconds=60):
        chromium.get(f"{server.web_url}/radio")
        wait_for(chromium, "return document.getElementById('status').textContent",
                 lambda text: text == "This stream cannot be played in the browser.", 20,
                 "the player's explanation")  # fmt: skip
