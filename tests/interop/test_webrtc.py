"""WebRTC playback over WHEP, watched by headless Chromium and poked with plain HTTP.

Chromium is the peer no one here wrote: the tests read what it decoded from
its own `getStats()`, and that its <video> element's clock advances.
"""

from __future__ import annotations

import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from harness.browser import wait_for
from harness.media import signal_source
from harness.publisher import publishing
from harness.server_process import ServerProcess, free_port

from ghostream.webrtc.codecs import h264_profile

HIGH_PROFILE = signal_source(
    "320x180", "-preset", "veryfast", "-tune", "zerolatency", "-profile:v", "high"
)
PAGE = Path(__file__).parent / "pages" / "whep.html"


@pytest.fixture
def ffmpeg(require_program) -> None:
    require_program("ffmpeg")


def whep_url(server: ServerProcess, stream_id: str) -> str:
    return f"{server.web_url}/{stream_id}/whep"


def post_offer(url: str, sdp: str, content_type: str = "application/sdp") -> tuple:
    request = urllib.request.Request(
        url, data=sdp.encode(), method="POST", headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers


def decoded(frames: int):
    return lambda stats: stats.get("video", {}).get("framesDecoded", 0) >= frames


def open_viewer(driver, server: ServerProcess, stream_id: str, kinds: str = "video,audio") -> dict:
    driver.get(f"{PAGE.as_uri()}?whep={whep_url(server, stream_id)}&kinds={kinds}")
    return wait_for(
        driver,
        "return window.result",
        lambda r: r and r.get("state") not in (None, "starting"),
        20,
        "WHEP negotiation",
    )


def test_chromium_plays_a_stream_over_whep(ffmpeg, chromium, ghostream_server) -> None:
    server = ghostream_server()
    with publishing(server, "demo:demo", source=HIGH_PROFILE):
        result = open_viewer(chromium, server, "demo")
        assert result["state"] == "negotiated", result
        assert result["status"] == 201
        assert re.fullmatch(r"/demo/whep/[\w-]+", result["location"])
        stats = wait_for(
            chromium,
            "return await stats()",
            lambda s: (
                s.get("video", {}).get("framesDecoded", 0) >= 50
                and s.get("audio", {}).get("packetsReceived", 0) >= 50
                and s["currentTime"] > 1.0
            ),
            25,
            "decoded video, received audio, advancing playback",
        )
        # A High-profile stream (as OBS sends): Chromium offers no High, so the answer
        # names the closest profile it offers whose decoders take High video.
        codec = stats[stats["video"]["codecId"]]
        profile = re.search(r"profile-level-id=(\w+)", codec).group(1)
        assert codec.startswith("video/H264") and h264_profile(profile) in ("high", "main"), codec
        assert stats[stats["audio"]["codecId"]].startswith("audio/opus")
        first = stats["currentTime"]
        wait_for(chromium, "return await stats()", lambda s: s["currentTime"] > first + 1, 10,
                 "playback keeps advancing")  # fmt: skip
        counter = urllib.request.urlopen(f"{server.web_url}/_stats/demo/", timeout=5).read()
        assert counter == b'{"ConnectedViewers":1}'
        server.wait_for_log(r"watching demo over WebRTC")


def test_delete_ends_the_session(ffmpeg, chromium, ghostream_server) -> None:
    server = ghostream_server()
    with publishing(server, "demo:demo"):
        result = open_viewer(chromium, server, "demo")
        assert result["status"] == 201
        request = urllib.request.Request(server.web_url + result["location"], method="DELETE")
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        server.wait_for_log(r"stopped watching demo over WebRTC: viewer hung up")
        again = urllib.request.Request(server.web_url + result["location"], method="DELETE")
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(again, timeout=5)
        assert missing.value.code == 404


def test_an_audio_only_session_ends_with_its_stream(ffmpeg, chromium, ghostream_server) -> None:
    server = ghostream_server({"streams": {"reconnectGrace": 1}})
    with publishing(server, "demo:demo"):
        result = open_viewer(chromium, server, "demo", kinds="audio")
        assert result["status"] == 201, result
        assert "m=video" not in result["answer"]
        wait_for(
            chromium,
            "return await stats()",
            lambda s: s.get("audio", {}).get("packetsReceived", 0) >= 25,
            20,
            "audio received",
        )
        start = server.line_count()
    server.wait_for_log(r"stopped watching demo over WebRTC: stream ended", 15, start=start)
    counter = urllib.request.urlopen(f"{server.web_url}/_stats/demo/", timeout=5).read()
    assert counter == b'{"ConnectedViewers":0}'


def test_unknown_stream_and_malformed_offers_are_refused(ffmpeg, ghostream_server) -> None:
    server = ghostream_server()
    status, body, headers = post_offer(whep_url(server, "nobody"), "v=0\r\n")
    assert status == 404 and "no live stream" in body
    assert headers.get("Access-Control-Allow-Origin") == "*"
    with publishing(server, "demo:demo"):
        status, body, _ = post_offer(whep_url(server, "demo"), "this is not SDP")
        assert status == 400, body
        status, body, _ = post_offer(whep_url(server, "demo"), "v=0\r\nm=video 9 UDP\r\n")
        assert status == 400, body
        status, body, _ = post_offer(whep_url(server, "demo"), "v=0", "text/plain")
        assert status == 415
    # The server kept serving: a well-formed request still gets an answer about the stream.
    status, _, _ = post_offer(whep_url(server, "demo"), "v=0\r\n")
    assert status in (400, 404)


def test_two_browsers_share_a_one_port_range(ffmpeg, require_program, ghostream_server) -> None:
    from harness.browser import open_chromium

    low = free_port(socket.SOCK_DGRAM)
    server = ghostream_server({"webrtc": {"minPortUDP": low, "maxPortUDP": low}})
    chromium, chromedriver = require_program("chromium"), require_program("chromedriver")
    with (
        publishing(server, "demo:demo"),
        open_chromium(chromium, chromedriver) as first,
        open_chromium(chromium, chromedriver) as second,
    ):
        results = [open_viewer(driver, server, "demo") for driver in (first, second)]
        for result in results:
            assert result["status"] == 201
            candidates = re.findall(r"a=candidate:(.*)", result["answer"])
            assert {int(c.split()[5]) for c in candidates if c.split()[2] == "udp"} == {low}
        for driver in (first, second):
            wait_for(driver, "return await stats()", decoded(25), 20, "both viewers play")


def test_a_viewer_that_vanishes_is_cleaned_up_after_ice_fails(
    ffmpeg, require_program, ghostream_server
) -> None:
    from harness.browser import open_chromium

    server = ghostream_server()
    chromium, chromedriver = require_program("chromium"), require_program("chromedriver")
    with publishing(server, "demo:demo", seconds=90):
        with open_chromium(chromium, chromedriver) as driver:
            assert open_viewer(driver, server, "demo")["status"] == 201
            wait_for(driver, "return await stats()", decoded(10), 20, "playing")
        # The browser is gone without DELETE; ICE consent checks fail and the session ends.
        server.wait_for_log(r"stopped watching demo over WebRTC: connection (failed|closed)", 60)
        counter = urllib.request.urlopen(f"{server.web_url}/_stats/demo/", timeout=5).read()
        assert counter == b'{"ConnectedViewers":0}'


def test_webrtc_can_be_turned_off(ghostream_server) -> None:
    server = ghostream_server({"webrtc": {"enabled": False}})
    status, _, _ = post_offer(whep_url(server, "demo"), "v=0\r\n")
    assert status in (404, 405)
    assert "WebRTC" not in server.wait_for_log("Ghostream ready")
