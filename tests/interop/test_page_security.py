"""The pages carry a Content-Security-Policy naming only configured origins, and play under it."""

from __future__ import annotations

import urllib.request

from harness.browser import console, wait_for
from harness.publisher import publishing
from harness.server_process import ServerProcess

WIDGET = "https://chat.example.org/embed/{{.Path}}"
CSS = "https://cdn.example.com/theme.css"
STUN = "stun:stun.example.net:3478"
PLAYING = """
const video = document.getElementById('video');
return {status: document.getElementById('status').textContent, time: video.currentTime};
"""


def headers(server: ServerProcess, path: str) -> dict[str, str]:
    with urllib.request.urlopen(server.web_url + path, timeout=10) as response:
        return {name.lower(): value for name, value in response.headers.items()}


def playing_over(driver, mode: str) -> None:
    first = wait_for(driver, PLAYING, lambda s: f"Live over {mode}" in s["status"], 40,
                     f"the player says it plays over {mode}")  # fmt: skip
    wait_for(driver, PLAYING, lambda s: s["time"] > first["time"] + 1.0, 15,
             "playback advances")  # fmt: skip


def test_the_player_plays_under_its_policy(require_program, chromium, ghostream_server) -> None:
    require_program("ffmpeg")
    server = ghostream_server(
        {"web": {"widgetURL": WIDGET, "customCss": CSS}, "webrtc": {"STUNServers": [STUN]}}
    )
    page = headers(server, "/demo")
    policy = page["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert directives["frame-src"] == "'self' https://chat.example.org"
    assert directives["style-src"] == "'self' https://cdn.example.com"
    assert "stun.example.net:3478" in directives["connect-src"]
    assert directives["object-src"] == "'none'"
    assert page["x-content-type-options"] == "nosniff"
    assert page["referrer-policy"] == "strict-origin-when-cross-origin"
    api = headers(server, "/api/streams")
    assert api["x-content-type-options"] == "nosniff"
    assert "content-security-policy" not in api

    with publishing(server, "demo:demo"):
        chromium.get(server.web_url + "/demo?nowidget")
        playing_over(chromium, "WebRTC")
        chromium.execute_script(
            "const m = document.getElementById('mode'); m.value = 'hls';"
            "m.dispatchEvent(new Event('change'));"
        )
        playing_over(chromium, "LL-HLS")
        messages = console(chromium)
    assert "Content Security Policy" not in messages, messages
    assert "Refused to" not in messages, messages
