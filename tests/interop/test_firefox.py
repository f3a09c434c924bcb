"""Firefox ESR as Debian ships it: no OpenH264, so its WebRTC video is VP8, VP9 or AV1.

Such a viewer gets the stream's VP8 copy, made once per stream; the stream's
API says it runs, for whom, and with how many viewers.  Such a publisher
(the server's own `/ID/publish` page, its fake camera) sends VP8, which
every output gets as H.264: ffprobe reads it over SRT; a viewer without
H.264 (GStreamer's webrtcbin offering VP8) gets the publisher's VP8 as it is.
"""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from harness.browser import wait_for
from harness.publisher import publishing
from test_gstreamer_whep import watch
from test_whip import probe_srt

PAGE = Path(__file__).parent / "pages" / "whep.html"


def live(server) -> dict:
    with urllib.request.urlopen(f"{server.web_url}/api/streams/demo", timeout=5) as response:
        return json.load(response)["live"]


def test_firefox_without_h264_plays_the_vp8_copy(require_program, firefox, ghostream_server):
    require_program("ffmpeg")
    server = ghostream_server()
    with publishing(server, "demo:demo"):
        firefox.get(f"{PAGE.as_uri()}?whep={server.web_url}/demo/whep")
        result = wait_for(
            firefox, "return window.result", lambda r: r and r.get("state") != "starting", 20,
            "WHEP negotiation",
        )  # fmt: skip
        assert result["state"] == "negotiated", result
        stats = wait_for(
            firefox,
            "return await stats()",
            lambda s: s.get("video", {}).get("framesDecoded", 0) >= 40 and s["currentTime"] > 1,
            30,
            "decoded VP8 video, advancing playback",
        )
        assert stats[stats["video"]["codecId"]].startswith("video/VP8"), stats
        copies = live(server)["webrtc"]["copies"]
        assert [(c["codec"], c["viewers"]) for c in copies] == [("VP8", 1)], copies
        server.wait_for_log(r"gets demo as VP8 for WebRTC: H\.264, which the browser does not")
        assert "re-encoded" not in server.log


def test_firefox_publishes_vp8_that_srt_viewers_get_as_h264(
    require_program, firefox, ghostream_server, tmp_path
):
    require_program("ffprobe")
    server = ghostream_server()
    firefox.get(f"{server.web_url}/demo/publish?size=320x240")
    firefox.find_element("id", "key").send_keys("demo")
    firefox.find_element("id", "start").click()
    server.wait_for_log(r"publishing demo over WHIP", 30)
    frames = probe_srt(server, tmp_path)
    assert frames.get("h264", 0) >= 20 and frames.get("opus", 0) >= 20, frames
    status, report = watch(f"{server.web_url}/demo/whep", "--codec", "VP8")
    assert status == 0, report
    server.wait_for_log(r"gets demo as VP8 for WebRTC as published")
    firefox.find_element("id", "stop").click()
    server.wait_for_log(r"stopped publishing demo over WHIP")
