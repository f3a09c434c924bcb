"""RTMP and RTMPS publishing with real encoders; viewers see the stream as after an SRT publish.

ffmpeg's flv muxer over `rtmp://` and `rtmps://` (a self-signed
certificate made here), GStreamer's `rtmp2sink`, and nginx-rtmp relaying
with `push` each publish; ffprobe over SRT and Chromium over WHEP watch.
A wrong stream key is refused with a message the encoder prints, ever
later; a publisher that reconnects keeps its SRT viewer.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from harness.browser import wait_for
from harness.certificates import make_certificate
from harness.media import signal_source
from harness.programs import require
from harness.publisher import ffmpeg_admitted
from harness.rtmp_server import MODULE, RtmpServer
from harness.server_process import ServerProcess, free_port

PAGE = Path(__file__).parent / "pages" / "whep.html"
# B-frames: the FLV composition time must become the PES's PTS beside its DTS.
SOURCE = signal_source("160x90", "-bf", "2")
FAILURE_DELAY_MS = 400


@pytest.fixture
def peers(require_program) -> None:
    for program in ("ffmpeg", "ffprobe"):
        require_program(program)


def rtmp_publishing(server: ServerProcess, url: str, stream_id: str = "demo", *extra: str):
    return ffmpeg_admitted(
        server,
        f"publishing {stream_id} over RTMP",
        ["-re", *SOURCE, "-t", "30", *extra, "-f", "flv", url],
    )


def probe_streams(server: ServerProcess, stream_id: str = "demo") -> dict[str, str]:
    """codec type → codec name of what an SRT viewer gets, decoding the first frames cleanly."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-read_intervals", "%+#10", "-show_frames",
         "-show_entries", "stream=codec_type,codec_name:frame=media_type", "-of", "json",
         server.srt_url(stream_id)],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    # A frame decoded before its parameter sets, or a timestamp gone wrong, shows here.
    assert result.stderr == b"", result.stderr.decode()
    report = json.loads(result.stdout)
    assert {f["media_type"] for f in report["frames"]} >= {"video"}
    return {s["codec_type"]: s["codec_name"] for s in report["streams"]}


def test_ffmpeg_publishes_over_rtmp_and_srt_viewers_get_h264_and_aac(
    peers, ghostream_server
) -> None:
    server = ghostream_server()
    with rtmp_publishing(server, server.rtmp_url("demo:demo")):
        assert probe_streams(server) == {"video": "h264", "audio": "aac"}
    server.wait_for_log("stopped publishing demo over RTMP")
    sessions = server.admin_json("/api/admin/streams/demo")["sessions"]
    assert [s["protocol"] for s in sessions if s["kind"] == "publish"] == ["rtmp"]


def test_ffmpeg_publishes_over_rtmps_with_a_self_signed_certificate(
    peers, ghostream_server, tmp_path: Path
) -> None:
    cert, key = make_certificate(tmp_path, "localhost")
    server = ghostream_server({"rtmp": {"tls": {"certificate": str(cert), "key": str(key)}}})
    assert "(RTMPS)" in server.wait_for_log("Ghostream ready")
    url = server.rtmp_url("demo:demo", secure=True)
    with ffmpeg_admitted(
        server,
        "publishing demo over RTMPS",
        ["-re", *SOURCE, "-t", "30", "-f", "flv", url],
    ):
        assert probe_streams(server) == {"video": "h264", "audio": "aac"}


def refused_publish(server: ServerProcess, key: str) -> tuple[str, float]:
    """ffmpeg's error output and how long the refusal took."""
    start = time.monotonic()
    result = subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", *SOURCE, "-t", "2", "-f", "flv",
         server.rtmp_url(key)],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode != 0
    return result.stderr.decode(), time.monotonic() - start


def test_a_wrong_stream_key_is_refused_ever_later_with_a_reason_the_encoder_prints(
    peers, ghostream_server
) -> None:
    server = ghostream_server(
        {"auth": {"failureDelay": FAILURE_DELAY_MS, "maxFailureDelay": 10 * FAILURE_DELAY_MS}}
    )
    first, _ = refused_publish(server, "demo:guess1")
    assert "wrong stream key" in first and "ID:PASSWORD" in first
    refused_publish(server, "demo:guess2")
    _, third = refused_publish(server, "demo:guess3")
    # The throttle doubles from the second failure: the third waits at least twice the delay.
    assert third >= 2 * FAILURE_DELAY_MS / 1000
    no_password, _ = refused_publish(server, "demo")
    assert "ID:PASSWORD" in no_password
    assert "guess" not in server.log
    assert "publishing demo" not in server.log
    metrics = _metrics(server)
    assert 'ghostream_rejections_total{protocol="rtmp",reason="unauthorized"}' in metrics


def _metrics(server: ServerProcess) -> str:
    import urllib.request

    with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
        return response.read().decode()


def test_a_publisher_that_reconnects_over_rtmp_keeps_its_srt_viewer(
    peers, ghostream_server, tmp_path: Path
) -> None:
    server = ghostream_server({"streams": {"reconnectGrace": 30}})
    capture = tmp_path / "viewer.ts"
    with rtmp_publishing(server, server.rtmp_url("demo:demo")):
        viewer = subprocess.Popen(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", server.srt_url("demo"),
             "-c", "copy", "-f", "mpegts", str(capture)],
            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        server.wait_for_log("watching demo over SRT")
        _wait_for_size(capture, 20_000)
    try:
        server.wait_for_log("stopped publishing demo over RTMP")
        before = capture.stat().st_size
        with rtmp_publishing(server, server.rtmp_url("demo:demo")):
            _wait_for_size(capture, before + 20_000)
        assert viewer.poll() is None
        assert "stopped watching demo" not in server.log
    finally:
        viewer.terminate()
        viewer.wait(10)


def _wait_for_size(path: Path, size: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.stat().st_size >= size):
        assert time.monotonic() < deadline, f"{path.name} did not reach {size} bytes"
        time.sleep(0.1)


def test_nginx_rtmp_relays_a_publish_to_us_with_push(
    peers, ghostream_server, tmp_path: Path
) -> None:
    nginx = require("nginx")
    if not MODULE.exists():
        require("libnginx-mod-rtmp")
    server = ghostream_server()
    relay = RtmpServer(
        nginx, tmp_path / "nginx", free_port(), push=f"rtmp://127.0.0.1:{server.rtmp_port}/live"
    )
    relay.start()
    try:
        # nginx pushes under the name it was published with: the stream key.
        with ffmpeg_admitted(
            server,
            "publishing demo over RTMP",
            ["-re", *SOURCE, "-t", "30", "-f", "flv", relay.url("demo:demo")],
        ):
            assert probe_streams(server) == {"video": "h264", "audio": "aac"}
    finally:
        relay.stop()


def test_gstreamer_rtmp2sink_publishes(require_program, ghostream_server) -> None:
    require_program("ffprobe")
    gst = require_program("gst-launch-1.0")
    server = ghostream_server()
    pipeline = [
        gst, "-q",
        "videotestsrc", "is-live=true", "num-buffers=750", "!",
        "video/x-raw,width=160,height=90,framerate=25/1", "!",
        "x264enc", "tune=zerolatency", "key-int-max=25", "speed-preset=ultrafast", "!",
        "h264parse", "!", "mux.",
        "audiotestsrc", "is-live=true", "!", "audioconvert", "!", "avenc_aac", "!",
        "aacparse", "!", "mux.",
        "flvmux", "name=mux", "streamable=true", "!",
        "rtmp2sink", f"location={server.rtmp_url('demo:demo')}",
    ]  # fmt: skip
    process = subprocess.Popen(pipeline, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        server.wait_for_log("publishing demo over RTMP")
        assert probe_streams(server) == {"video": "h264", "audio": "aac"}
    finally:
        process.terminate()
        process.wait(10)


def test_chromium_watches_an_rtmp_publish_over_whep(
    require_program, chromium, ghostream_server
) -> None:
    require_program("ffmpeg")
    server = ghostream_server()
    source = signal_source("160x90", "-tune", "zerolatency")
    with ffmpeg_admitted(
        server,
        "publishing demo over RTMP",
        ["-re", *source, "-t", "30", "-f", "flv", server.rtmp_url("demo:demo")],
    ):
        chromium.get(f"{PAGE.as_uri()}?whep={server.web_url}/demo/whep")
        wait_for(chromium, "return await stats()",
                 lambda s: s.get("video", {}).get("framesDecoded", 0) >= 25, 25,
                 "video decoded over WHEP")  # fmt: skip


def greeted_socket(server: ServerProcess) -> socket.socket:
    """A TCP connection to the RTMP port past the handshake, as a hostile client has it."""
    sock = socket.create_connection(("127.0.0.1", server.rtmp_port), timeout=10)
    sock.sendall(b"\x03" + bytes(1536))
    answer = b""
    while len(answer) < 1 + 2 * 1536:
        answer += sock.recv(8192)
    sock.sendall(bytes(1536))
    return sock


def test_malformed_chunk_streams_close_that_connection_only(peers, ghostream_server) -> None:
    server = ghostream_server()
    with rtmp_publishing(server, server.rtmp_url("demo:demo")):
        # A continuation chunk with no message begun, a 2^31 chunk size, AMF nested 20 deep.
        attacks = [
            b"\xc5" + bytes(64),
            b"\x02" + bytes(3) + b"\x00\x00\x04\x01" + bytes(4) + b"\x7f\xff\xff\xff",
            b"\x03" + bytes(3) + b"\x00\x00\x51\x14" + bytes(4) + b"\x03" + b"\x00\x01k\x03" * 20,
        ]
        for attack in attacks:
            mark = server.line_count()
            with greeted_socket(server) as sock:
                sock.sendall(attack)
                # The server closes the connection: the read sees its end.
                assert sock.recv(65536 * 4) is not None
                line = server.wait_for_log(r"RTMP from 127\.0\.0\.1:\d+ closed: ", start=mark)
                assert "no publish command" not in line, "refused only by the timeout"
        assert probe_streams(server) == {"video": "h264", "audio": "aac"}
    assert "Traceback" not in server.log
