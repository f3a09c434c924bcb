"""Publishing over WHIP: headless Chromium's fake camera in; SRT, LL-HLS, WHEP, RTMP out.

Chromium publishes from the server's own `/ID/publish` page, as a user
would (the stream key typed into the form); ffmpeg watches over SRT and
LL-HLS, a second Chromium over WHEP, ffprobe reads a quality variant and
what nginx-rtmp received, each decoding or probing what it gets.  The
refusals are checked with plain HTTP, as OBS would meet them.
"""

from __future__ import annotations

import json
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from harness.browser import open_chromium, wait_for
from harness.publisher import publishing
from harness.server_process import ServerProcess
from test_forward import probe, rtmp  # noqa: F401 (the nginx-rtmp fixture)
from test_player import playing_over

from ghostream.http.signalling import MAX_OFFER_BYTES

WHEP_PAGE = Path(__file__).parent / "pages" / "whep.html"
FAKE_MEDIA = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
H264 = "a=rtpmap:96 H264/90000\r\na=fmtp:96 packetization-mode=1;profile-level-id=42e01f\r\n"
VP9 = "a=rtpmap:96 VP9/90000\r\n"


def sdp_offer(*videos: str) -> str:
    """A well-formed offer as OBS would send it, with one video section per codec line given."""
    fingerprint = ":".join(["AB"] * 32)
    sections = "".join(
        f"m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:{mid}\r\n"
        "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n"
        f"a=fingerprint:sha-256 {fingerprint}\r\na=setup:actpass\r\na=sendonly\r\n"
        f"a=rtcp-mux\r\n{codec}"
        for mid, codec in enumerate(videos)
    )
    return f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{sections}"


OFFER = sdp_offer(H264)


@pytest.fixture
def browsers(require_program) -> tuple[str, str]:
    return require_program("chromium"), require_program("chromedriver")


def request(method: str, url: str, body: bytes = b"", headers: dict | None = None) -> tuple:
    sent = urllib.request.Request(url, data=body or None, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(sent, timeout=20) as response:
            return response.status, response.read().decode(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), error.headers


def offer(server: ServerProcess, stream_id: str, token: str | None, sdp: str = OFFER) -> tuple:
    headers = {"Content-Type": "application/sdp"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return request("POST", f"{server.web_url}/{stream_id}/whip", sdp.encode(), headers)


@contextmanager
def publishing_from_chromium(
    server: ServerProcess, browsers, key: str = "demo", script: str = ""
) -> Iterator:
    """Chromium's fake camera and microphone, published from `/demo/publish` (after `script`)."""
    with open_chromium(*browsers, extra=FAKE_MEDIA) as driver:
        if script:
            driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": script})
        start = server.line_count()
        driver.get(f"{server.web_url}/demo/publish?size=320x240")
        assert "key" not in driver.current_url
        driver.find_element("id", "key").send_keys(key)
        driver.find_element("id", "start").click()
        server.wait_for_log(r"publishing demo over WHIP", 30, start=start)
        yield driver


def probe_srt(server: ServerProcess, tmp_path: Path) -> dict[str, int]:
    """Codec name → frames decoded, from three seconds recorded by an ffmpeg SRT viewer."""
    recorded = tmp_path / "srt.ts"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-i", server.srt_url("demo"),
         "-t", "3", "-map", "0", "-c", "copy", "-f", "mpegts", str(recorded)],
        check=True, timeout=30,
    )  # fmt: skip
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_entries",
         "stream=codec_name,nb_read_frames", "-of", "json", str(recorded)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {s["codec_name"]: int(s["nb_read_frames"]) for s in json.loads(probe.stdout)["streams"]}


def decode_llhls(server: ServerProcess, tmp_path: Path) -> dict[str, int]:
    """Codec name → frames ffmpeg decoded from two seconds of the LL-HLS playlist."""
    frames = tmp_path / "hls.md5"
    result = subprocess.run(
        ["ffmpeg", "-hide_banner", "-v", "error", "-i", f"{server.web_url}/demo/index.m3u8",
         "-map", "0", "-t", "2", "-f", "framemd5", str(frames)],
        capture_output=True, timeout=40, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in frames.read_text().splitlines() if line[:1] != "#"]
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
         "-of", "csv=p=0", f"{server.web_url}/demo/index.m3u8"],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert set(probe.stdout.split()) == {"h264", "opus"}, probe.stderr
    return {
        "h264": sum(line.startswith("0,") for line in lines),
        "opus": sum(line.startswith("1,") for line in lines),
    }


def test_chromium_publishes_and_every_output_serves_it(
    browsers,
    require_program,
    ghostream_server,
    rtmp,  # noqa: F811 (the fixture imported above)
    tmp_path,
) -> None:
    server = ghostream_server(
        {"forwarding": {"demo": [rtmp.url("key")]}, "transcoding": {"profiles": ["180p:200:48"]}}
    )
    with publishing_from_chromium(server, browsers) as publisher:
        status_text = "return document.getElementById('status').textContent"
        wait_for(publisher, status_text, lambda s: s.startswith("Publishing"), 20, "publishing")
        # The publisher reaches the shared WebRTC ports, UDP and ICE-TCP, as viewers do.
        answer = publisher.execute_script("return window.publisher.pc.remoteDescription.sdp")
        udp = re.findall(r"a=candidate:\S+ 1 udp \d+ \S+ (\d+) typ host", answer)
        assert set(udp) == {str(server.config["webrtc"]["minPortUDP"])}, answer
        tcp_port = server.config["webrtc"]["tcpListenAddress"].rsplit(":", 1)[1]
        assert f" {tcp_port} typ host tcptype passive" in answer, answer
        frames = probe_srt(server, tmp_path)
        assert frames.get("h264", 0) >= 25 and frames.get("opus", 0) >= 50, frames
        frames = decode_llhls(server, tmp_path)
        assert frames["h264"] >= 25 and frames["opus"] >= 50, frames
        with open_chromium(*browsers) as viewer:
            viewer.get(f"{WHEP_PAGE.as_uri()}?whep={server.web_url}/demo/whep")
            stats = wait_for(
                viewer,
                "return await stats()",
                lambda s: (
                    s.get("video", {}).get("framesDecoded", 0) >= 25
                    and s.get("audio", {}).get("packetsReceived", 0) >= 25
                ),
                30,
                "the WHEP viewer decodes video and receives audio",
            )
            assert stats[stats["audio"]["codecId"]].startswith("audio/opus")
        variant = subprocess.run(
            ["ffprobe", "-v", "error", "-read_intervals", "%+2", "-show_entries",
             "stream=codec_name,height", "-of", "json", server.srt_url("demo@180p")],
            capture_output=True, text=True, timeout=40,
        )  # fmt: skip
        assert variant.returncode == 0, variant.stderr
        codecs = {s["codec_name"]: s.get("height") for s in json.loads(variant.stdout)["streams"]}
        assert codecs == {"h264": 180, "aac": None}, codecs
        # RTMP cannot carry Opus: the forward gets AAC, made once for the stream.
        forwarded = probe(rtmp.url("key"))
        assert forwarded["video"]["codec_name"] == "h264"
        assert forwarded["audio"]["codec_name"] == "aac", forwarded["audio"]
        status, streams, _ = request("GET", f"{server.web_url}/api/streams")
        live = json.loads(streams)["streams"][0]
        assert live["video_codec"] == "h264" and live["audio_codecs"] == ["opus"]
        # No B-frames in WebRTC video: WHEP viewers get it as it came, not a re-encoded copy.
        assert live["webrtc"]["mode"] == "passthrough", live
        # Chromium sends a keyframe only when asked: the server asks when the newest is old.
        keyframes = """
            let out = {};
            (await window.publisher.pc.getStats()).forEach((r) => {
              if (r.type === "outbound-rtp" && r.kind === "video") out = r;
            });
            return {pli: out.pliCount, keyframes: out.keyFramesEncoded};
        """
        wait_for(publisher, keyframes, lambda k: k["pli"] >= 1 and k["keyframes"] >= 2, 20,
                 "keyframes asked for with PLI")  # fmt: skip
        resource = publisher.execute_script("return window.publisher.resource")
        start = server.line_count()
        status, _, _ = request("DELETE", server.web_url + resource)
        assert status == 200
        server.wait_for_log(r"stopped publishing demo over WHIP: publisher hung up", start=start)


# The publishing page's codec preferences, as a browser without H.264 would have them: VP8.
VP8_ONLY = """
const prefer = RTCRtpTransceiver.prototype.setCodecPreferences;
RTCRtpTransceiver.prototype.setCodecPreferences = function () {
  const codecs = RTCRtpReceiver.getCapabilities("video").codecs;
  return prefer.call(this, codecs.filter((c) => ["video/VP8", "video/rtx"].includes(c.mimeType)));
};
"""


def test_chromium_publishing_vp8_is_served_as_h264(
    browsers, require_program, ghostream_server, tmp_path
) -> None:
    require_program("ffprobe")
    server = ghostream_server()
    with publishing_from_chromium(server, browsers, script=VP8_ONLY) as publisher:
        offer_sdp = publisher.execute_script("return window.publisher.pc.localDescription.sdp")
        assert "VP8/90000" in offer_sdp and "H264/90000" not in offer_sdp, offer_sdp
        frames = probe_srt(server, tmp_path)
        assert frames.get("h264", 0) >= 25 and frames.get("opus", 0) >= 50, frames
        # hls.js, in the player page's LL-HLS mode, plays the re-encoded H.264.
        with open_chromium(*browsers) as viewer:
            viewer.get(f"{server.web_url}/demo")
            viewer.execute_script(
                "const mode = document.getElementById('mode');"
                "mode.value = 'hls'; mode.dispatchEvent(new Event('change'));"
            )
            playing_over(viewer, "LL-HLS")


def test_refusals_as_obs_meets_them(require_program, ghostream_server) -> None:
    require_program("ffmpeg")
    server = ghostream_server()
    url = f"{server.web_url}/demo/whip"
    status, _, headers = request("OPTIONS", url)
    assert status == 204 and headers["Accept-Post"] == "application/sdp"
    assert "Authorization" in headers["Access-Control-Allow-Headers"]
    assert "Location" in headers["Access-Control-Expose-Headers"]
    status, _, headers = offer(server, "demo", None)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    status, body, _ = offer(server, "demo", "not-the-password")
    assert status == 401 and "not-the-password" not in body
    server.wait_for_log(r"publish of 'demo' from 127.0.0.1:\d+ refused: wrong password")
    assert "not-the-password" not in server.log
    status, _, _ = offer(server, "demo@480p", "demo")
    assert status == 403
    status, body, _ = offer(server, "demo", "demo", "this is not SDP")
    assert status == 400, body
    status, body, _ = offer(server, "demo", "demo", sdp_offer(VP9))
    assert status == 406 and "H.264" in body and "VP8" in body, body
    status, body, _ = offer(server, "demo", "demo", OFFER.replace("sendonly", "recvonly"))
    assert status == 400 and "sent" in body, body
    audio_only = OFFER.replace("m=video", "m=audio").replace("H264/90000", "opus/48000/2")
    status, body, _ = offer(server, "demo", "demo", audio_only)
    assert status == 406 and "video" in body, body
    status, body, _ = offer(server, "demo", "demo", sdp_offer(H264, H264))
    assert status == 400 and "one video" in body, body
    status, body, _ = offer(server, "demo", "demo", "v=0\r\n" + "a=x\r\n" * MAX_OFFER_BYTES)
    assert status == 413, body
    status, _, _ = request("DELETE", f"{url}/no-such-session")
    assert status == 404
    with publishing(server, "demo:demo"):
        status, body, _ = offer(server, "demo", "demo")
        assert status == 409, body
    assert "Traceback" not in server.log


def test_a_publisher_that_vanishes_frees_the_stream(browsers, ghostream_server) -> None:
    server = ghostream_server()
    with publishing_from_chromium(server, browsers) as publisher:
        # The browser goes without a DELETE, as a crashed OBS or a dropped network would.
        publisher.execute_script("window.removeEventListener('pagehide', stop)")
    server.wait_for_log(r"stopped publishing demo over WHIP: no media for \d+ s", 20)
    status, streams, _ = request("GET", f"{server.web_url}/api/streams")
    assert json.loads(streams)["streams"][0]["state"] == "waiting for publisher"
