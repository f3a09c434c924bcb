"""The web player and site in headless Chromium, and every `web.*` setting over HTTP.

Screenshots of the player (desktop and phone width) are written to
`test-output/screenshots/` for a person to look at.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest
from harness.browser import open_chromium, wait_for
from harness.media import signal_source
from harness.publisher import publishing
from harness.server_process import ServerProcess

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
STATUS = "return document.getElementById('status').textContent"
PLAYING = """
const video = document.getElementById('video');
return {status: document.getElementById('status').textContent, time: video.currentTime,
        offline: document.body.classList.contains('offline')};
"""


@pytest.fixture
def ffmpeg(require_program) -> None:
    require_program("ffmpeg")


def get(server: ServerProcess, path: str, host: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(server.web_url + path, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def playing_over(driver, mode: str, timeout: float = 30) -> dict:
    first = wait_for(driver, PLAYING, lambda s: f"Live over {mode}" in s["status"], timeout,
                     f"the player says it plays over {mode}")  # fmt: skip
    return wait_for(driver, PLAYING, lambda s: s["time"] > first["time"] + 1.0, 15,
                    "playback advances")  # fmt: skip


def test_player_plays_over_webrtc_and_counts_its_viewer_once(
    ffmpeg, chromium, ghostream_server
) -> None:
    server = ghostream_server({"web": {"viewersCounterRefreshPeriod": 1000}})
    with publishing(server, "demo:demo"):
        chromium.get(server.web_url + "/demo")
        playing_over(chromium, "WebRTC/UDP")
        # The page polls with its uid and its WebRTC session is a viewer: one person, one count.
        wait_for(chromium, "return document.getElementById('viewers').textContent",
                 lambda text: text == "1 viewer", 5, "the counter")  # fmt: skip
        with open_chromium(*_browser_paths()) as second:
            second.get(server.web_url + "/demo")
            playing_over(second, "WebRTC")
            wait_for(chromium, "return document.getElementById('viewers').textContent",
                     lambda text: text == "2 viewers", 5, "the counter, two viewers")  # fmt: skip
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        chromium.save_screenshot(str(SCREENSHOTS / "player-desktop.png"))
        chromium.set_window_size(390, 844)
        chromium.get(server.web_url + "/demo")
        playing_over(chromium, "WebRTC")
        chromium.save_screenshot(str(SCREENSHOTS / "player-phone.png"))


def _browser_paths() -> tuple[str, str]:
    import shutil

    return shutil.which("chromium"), shutil.which("chromedriver")


# As if a firewall dropped UDP: the browser never reaches the server's ICE candidates.
BLOCK_UDP = """
const strip = (sdp) =>
  sdp.split("\\r\\n").filter((l) => !l.startsWith("a=candidate")).join("\\r\\n");
const remote = RTCPeerConnection.prototype.setRemoteDescription;
RTCPeerConnection.prototype.setRemoteDescription = function (d) {
  return remote.call(this, {type: d.type, sdp: strip(d.sdp)});
};
const local = Object.getOwnPropertyDescriptor(RTCPeerConnection.prototype, "localDescription");
Object.defineProperty(RTCPeerConnection.prototype, "localDescription", {
  get() { const d = local.get.call(this); return d && {type: d.type, sdp: strip(d.sdp)}; },
});
"""


# When the WHEP answer came, and when the player said it fell back (the page's own clock).
TIME_FALLBACK = """
window.fallback = {};
const fetched = window.fetch;
window.fetch = async (...args) => {
  const response = await fetched(...args);
  if (String(args[0]).includes("/whep") && response.status === 201) {
    window.fallback.answered = performance.now();
  }
  return response;
};
new MutationObserver(() => {
  const status = document.getElementById("status");
  if (status && status.textContent.includes("LL-HLS") && !window.fallback.switched) {
    window.fallback.switched = performance.now();
    window.fallback.said = status.textContent;
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def test_player_falls_back_to_llhls_when_udp_is_blocked(ffmpeg, chromium, ghostream_server) -> None:
    server = ghostream_server()
    for script in (BLOCK_UDP, TIME_FALLBACK):
        chromium.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": script})
    with publishing(server, "demo:demo"):
        chromium.get(server.web_url + "/demo")
        state = playing_over(chromium, "LL-HLS", timeout=40)
        assert "LL-HLS" in state["status"]
        # WebRTC had its 5 s (WEBRTC_TIMEOUT_MS in player.js) to bring media, no less.
        timing = chromium.execute_script("return window.fallback")
        assert "no media within 5 s" in timing["said"], timing
        assert timing["switched"] - timing["answered"] >= 5000, timing
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        chromium.save_screenshot(str(SCREENSHOTS / "player-llhls.png"))


# A browser that decodes neither H.264 nor VP8 (its offer renames them); WHEP offers are counted.
NO_COMMON_VIDEO = """
const rename = (sdp) => sdp.replace(/ H264\\/90000/g, " H26X/90000")
  .replace(/ VP8\\/90000/g, " VP8X/90000").replace(/profile-level-id/g, "x-level-id");
const local = Object.getOwnPropertyDescriptor(RTCPeerConnection.prototype, "localDescription");
Object.defineProperty(RTCPeerConnection.prototype, "localDescription", {
  get() { const d = local.get.call(this); return d && {type: d.type, sdp: rename(d.sdp)}; },
});
window.whepOffers = 0;
const send = window.fetch;
window.fetch = (url, options) => {
  if (String(url).includes("/whep") && options && options.method === "POST") window.whepOffers += 1;
  return send(url, options);
};
"""
WEBRTC_STATE = """
return {status: document.getElementById('status').textContent, offers: window.whepOffers,
        button: !document.getElementById('retry').hidden};
"""


def test_player_says_why_it_left_webrtc_and_stops_retrying(
    ffmpeg, chromium, ghostream_server
) -> None:
    server = ghostream_server()
    chromium.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": NO_COMMON_VIDEO})
    with publishing(server, "demo:demo"):
        chromium.get(server.web_url + "/demo")
        # Auto: LL-HLS plays, and the status line keeps the server's reason for refusing WebRTC.
        state = playing_over(chromium, "LL-HLS")
        assert "WebRTC could not connect (the server answered 406" in state["status"], state
        assert "VP8" in state["status"], state
        # WebRTC alone: a few tries, then a button instead of retrying forever.
        chromium.execute_script(
            "const mode = document.getElementById('mode');"
            "mode.value = 'webrtc'; mode.dispatchEvent(new Event('change'));"
        )
        state = wait_for(chromium, WEBRTC_STATE, lambda s: s["button"], 30,
                         "the player gives up on WebRTC")  # fmt: skip
        assert state["offers"] == 1 + 3, state
        assert "WebRTC failed 3 times (the server answered 406" in state["status"], state
        chromium.find_element("id", "retry").click()
        state = wait_for(chromium, WEBRTC_STATE, lambda s: s["offers"] == 1 + 3 + 3 and s["button"],
                         30, "three more tries, on the viewer's request")  # fmt: skip
        assert "WebRTC failed 3 times" in state["status"], state


def test_offline_shows_the_poster_then_plays_when_the_stream_starts(
    ffmpeg, chromium, ghostream_server
) -> None:
    server = ghostream_server()
    chromium.get(server.web_url + "/demo")
    state = wait_for(chromium, PLAYING, lambda s: "offline" in s["status"], 15, "offline notice")
    assert state["offline"]
    poster = chromium.execute_script(
        "const p = document.getElementById('poster');"
        "return [getComputedStyle(p).display, p.naturalWidth, p.getAttribute('src')]"
    )
    assert poster[0] == "block" and poster[1] > 0 and poster[2] == "/static/img/no_stream.svg"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    chromium.save_screenshot(str(SCREENSHOTS / "player-offline.png"))
    with publishing(server, "demo:demo"):
        state = playing_over(chromium, "WebRTC", timeout=40)
        assert not state["offline"]


def test_every_web_setting_changes_the_pages(ghostream_server) -> None:
    server = ghostream_server(
        {
            "web": {
                "name": "Club TV",
                "hostname": "tv.example.org",
                "favicon": "/static/img/club.png",
                "customCss": "https://cdn.example.org/club.css",
                "playerPoster": "/static/img/club-poster.png",
                "widgetURL": "https://chat.example.org/#/room/{{.Path}}",
                "viewersCounterRefreshPeriod": 7000,
            }
        }
    )
    status, home = get(server, "/")
    assert status == 200
    assert "<title>Club TV</title>" in home and "tv.example.org" in home
    assert 'href="/static/img/club.png"' in home
    assert 'href="https://cdn.example.org/club.css"' in home
    status, page = get(server, "/match")
    assert status == 200 and "match · Club TV" in page
    assert 'poster="/static/img/club-poster.png"' in page
    assert 'src="https://chat.example.org/#/room/match"' in page
    config = json.loads(re.search(r'id="player-config"[^>]*>(.*?)</script>', page).group(1))
    assert config["counterPeriod"] == 7000 and config["stream"] == "match"
    _, embedded = get(server, "/match?nowidget")
    assert "chat.example.org" not in embedded
    assert get(server, "/NOT_AN_ID!")[0] == 404


def test_default_site_needs_no_configuration(ghostream_server) -> None:
    server = ghostream_server()
    _, page = get(server, "/demo")
    assert "<title>demo · Ghostream</title>" in page and "<iframe" not in page
    for asset in ("/static/img/favicon.svg", "/static/img/no_stream.svg", "/static/js/player.js",
                  "/static/css/style.css", "/static/vendor/hls.min.js"):  # fmt: skip
        assert get(server, asset)[0] == 200, asset


def test_one_stream_per_domain_and_domain_mapping(ghostream_server) -> None:
    server = ghostream_server(
        {"web": {"oneStreamPerDomain": True, "mapDomainToStream": {"tv-example-org": "club"}}}
    )
    _, page = get(server, "/", host="stream.example.com:8080")
    assert "stream.example.com · Ghostream" in page
    _, page = get(server, "/", host="tv.example.org")
    assert "<title>club · Ghostream</title>" in page
    _, page = get(server, "/anything", host="tv.example.org")
    assert "<title>club · Ghostream</title>" in page
    _, about = get(server, "/about", host="tv.example.org")
    assert "Live now" in about


def test_home_lists_live_streams_and_opens_one_by_name(ffmpeg, ghostream_server) -> None:
    server = ghostream_server()
    _, home = get(server, "/")
    assert "No stream is live" in home
    with publishing(server, "demo:demo"):
        _, home = get(server, "/")
        assert 'href="/demo"' in home and "0 viewers" in home
    request = urllib.request.Request(server.web_url + "/?watch=demo")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.url.endswith("/demo")


def test_viewer_picks_a_lower_quality(ffmpeg, chromium, ghostream_server) -> None:
    server = ghostream_server({"transcoding": {"profiles": ["240p:300:48"]}})
    source = signal_source("640x360", "-tune", "zerolatency")
    with publishing(server, "demo:demo", source=source):
        chromium.get(server.web_url + "/demo")
        playing_over(chromium, "WebRTC")
        options = chromium.execute_script(
            "return [...document.getElementById('quality').options].map((o) => o.value)"
        )
        assert options == ["", "demo@240p", "auto"]
        chromium.execute_script(
            "const q = document.getElementById('quality'); q.value = 'demo@240p';"
            "q.dispatchEvent(new Event('change'));"
        )
        state = wait_for(chromium, PLAYING, lambda s: "(240p)" in s["status"], 30,
                         "the player says it plays the 240p variant")  # fmt: skip
        assert "WebRTC" in state["status"]
        wait_for(chromium, "return document.getElementById('video').videoHeight",
                 lambda height: height == 240, 15, "240-line pictures")  # fmt: skip
        # "Auto" lets LL-HLS adapt between the source and every variant.
        chromium.execute_script(
            "const q = document.getElementById('quality'); q.value = 'auto';"
            "q.dispatchEvent(new Event('change'));"
        )
        state = playing_over(chromium, "LL-HLS", timeout=40)
        assert "(auto)" in state["status"]
        levels = chromium.execute_script("return window.ghostreamPlayer.hls.levels.length")
        assert levels == 2
