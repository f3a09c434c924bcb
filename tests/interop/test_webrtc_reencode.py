"""What OBS sends with its default settings, played in Chromium over WebRTC.

x264's defaults (preset veryfast, no tune) and every hardware encoder put
B-frames in the stream, and OBS can send HEVC; browsers decode neither over
WebRTC as they are.  The server re-encodes such streams once for WebRTC
viewers and leaves every other output the original.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request

import pytest
from harness.browser import wait_for
from harness.media import signal_source
from harness.publisher import publishing
from test_webrtc import open_viewer, post_offer, whep_url

RATE = 30
SECONDS = 6
PLAYER = """
const video = document.getElementById('video');
return {status: document.getElementById('status').textContent, time: video.currentTime,
        mode: window.ghostreamPlayer.mode, stalls: window.stalls};
"""
COUNT_STALLS = """
window.stalls = 0;
document.getElementById('video').addEventListener('waiting', () => { window.stalls += 1; });
"""


# libx264 as OBS's default x264 settings run it: B-frames on.
B_FRAMES = signal_source("640x360", "-b:v", "800k", rate=RATE, preset="veryfast", gop=2 * RATE)
HEVC = signal_source("640x360", rate=RATE, video="libx265", gop=2 * RATE)


@pytest.fixture
def ffmpeg(require_program) -> None:
    require_program("ffmpeg")


def api(server, path: str) -> dict:
    with urllib.request.urlopen(f"{server.web_url}{path}", timeout=5) as response:
        return json.loads(response.read())


def video_stats(driver) -> dict:
    return driver.execute_script("return (await stats()).video || {}")


def keeps_decoding(driver) -> tuple[dict, dict]:
    """Video stats once playing, and once SECONDS more of frames were decoded: (before, after).

    How fast the copy is made is a figure of bench/transcode.py; here it must play.
    """
    wait_for(driver, "return (await stats()).video", lambda v: v and v["framesDecoded"] > 0,
             20, "first decoded frame")  # fmt: skip
    before = video_stats(driver)
    wanted = before["framesDecoded"] + RATE * SECONDS
    wait_for(driver, "return (await stats()).video", lambda v: v["framesDecoded"] >= wanted,
             SECONDS * 5, f"{SECONDS} s of frames decoded")  # fmt: skip
    return before, video_stats(driver)


def test_a_b_frame_stream_is_re_encoded_once_for_browsers_and_left_as_is_elsewhere(
    ffmpeg, require_program, chromium, ghostream_server
) -> None:
    ffprobe = require_program("ffprobe")
    server = ghostream_server()
    with publishing(server, "demo:demo", source=B_FRAMES, seconds=90):
        server.wait_for_log(
            r"demo: video H.264 High [\d.]+, 640x360, 30 fps, 4:2:0 8-bit, B-frames"
        )
        server.wait_for_log(
            "demo: B-frames: WebRTC viewers get a re-encoded copy; "
            "set OBS → Output → Tune: zerolatency, or B-frames 0, for passthrough"
        )
        live = api(server, "/api/streams/demo")["live"]
        assert live["video"]["b_frames"] and live["video"]["frame_rate"] == 30
        assert live["webrtc"]["mode"] == "re-encoded" and live["webrtc"]["reason"] == "B-frames"

        # SRT viewers still get the publisher's bytes, B-frames and all (probed meanwhile).
        probe = subprocess.Popen(
            [ffprobe, "-v", "error", "-select_streams", "v", "-show_entries",
             "stream=codec_name,profile,has_b_frames", "-of", "json", server.srt_url("demo")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        open_viewer(chromium, server, "demo")
        before, after = keeps_decoding(chromium)
        decoded = after["framesDecoded"] - before["framesDecoded"]
        dropped = after["framesDropped"] - before["framesDropped"]
        assert dropped <= 0.1 * decoded, (before, after)
        codec = chromium.execute_script("return await stats()")[after["codecId"]]
        assert "profile-level-id=42e0" in codec, codec  # constrained baseline: no B-frames
        server.wait_for_log(r"gets demo re-encoded for WebRTC: B-frames")
        [stream] = json.loads(probe.communicate(timeout=30)[0])["streams"]
        assert stream["profile"] == "High" and stream["has_b_frames"] > 0, stream
        server.wait_for_log(r"stopped watching demo: ")  # ffprobe, over SRT

        # The copy is the server's own: not a live stream of its own, its viewer counts for demo.
        assert [s["id"] for s in api(server, "/api/streams")["streams"]] == ["demo"]
        assert api(server, "/_stats/demo/") == {"ConnectedViewers": 1}

        chromium.get("about:blank")
        server.wait_for_log("demo: webrtc variant stopped: nobody watched it", 20)


def test_hevc_plays_over_whep_and_is_named_in_the_hls_playlist(
    ffmpeg, chromium, ghostream_server
) -> None:
    server = ghostream_server()
    with publishing(server, "demo:demo", source=HEVC, seconds=60):
        # libx265 starts slowly on a busy machine: allow it time to send its first pictures.
        server.wait_for_log(r"demo: video HEVC Main [\d.]+, 640x360, 30 fps", 30)
        server.wait_for_log("demo: HEVC: WebRTC viewers get a re-encoded copy", 30)
        open_viewer(chromium, server, "demo")
        keeps_decoding(chromium)
        with urllib.request.urlopen(f"{server.web_url}/demo/index.m3u8", timeout=15) as answer:
            playlist = answer.read().decode()
        assert re.search(r'CODECS="hvc1\.1\.6\.L\d+\.[0-9A-F.]+,mp4a\.40\.2"', playlist), playlist


def test_never_refuses_with_the_reason_and_the_player_uses_llhls_without_stalls(
    ffmpeg, chromium, ghostream_server
) -> None:
    server = ghostream_server({"webrtc": {"transcode": "never"}})
    with publishing(server, "demo:demo", source=B_FRAMES, seconds=60):
        server.wait_for_log("demo: B-frames: browsers cannot play it over WebRTC")
        open_viewer(chromium, server, "demo")
        status, body, _ = post_offer(whep_url(server, "demo"), chromium.execute_script(
            "return window.pc.localDescription.sdp"))  # fmt: skip
        assert status == 415 and "B-frames" in body and "webrtc.transcode is never" in body
        assert api(server, "/api/streams/demo")["live"]["webrtc"]["mode"] == "refused"

        chromium.get(f"{server.web_url}/demo")
        first = wait_for(chromium, PLAYER, lambda p: p["mode"] == "hls" and p["time"] > 0, 30,
                         "the player plays over LL-HLS")  # fmt: skip
        assert "WebRTC is not offered for this stream" in first["status"], first
        assert "B-frames" in first["status"], first
        chromium.execute_script(COUNT_STALLS)
        started = chromium.execute_script(PLAYER)
        # hls.js plays the reordered frames on, never waiting for data.
        ended = wait_for(chromium, PLAYER, lambda p: p["time"] - started["time"] >= SECONDS,
                         SECONDS * 5, f"{SECONDS} s played")  # fmt: skip
        assert ended["stalls"] == 0, ended


def test_always_re_encodes_even_what_could_pass_through(ffmpeg, chromium, ghostream_server) -> None:
    server = ghostream_server({"webrtc": {"transcode": "always"}})
    with publishing(server, "demo:demo"):
        open_viewer(chromium, server, "demo")
        wait_for(chromium, "return (await stats()).video", lambda v: v and v["framesDecoded"] > 25,
                 20, "decoded video")  # fmt: skip
        server.wait_for_log("gets demo re-encoded for WebRTC: webrtc.transcode is always")
        assert api(server, "/api/streams/demo")["live"]["webrtc"]["mode"] == "re-encoded"
