"""The streamer's dashboard in headless Chromium, and the admin JSON API behind it.

Screenshots (desktop and phone width) go to `test-output/screenshots/` for a
person to look at.
"""

from __future__ import annotations

import base64
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from harness.browser import wait_for
from harness.media import srt_viewer
from harness.publisher import publishing
from harness.server_process import ADMIN_PASSWORD, ADMIN_USER, ServerProcess

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
CHART = """
const state = window.dashboard;
const canvas = document.querySelector('#chart canvas');
if (!state || !state.series || !canvas) return null;
const srt = state.series.viewers.srt || [];
return {srt: srt, legend: document.getElementById('chart-now').textContent,
        live: document.getElementById('live').textContent,
        peak: document.getElementById('show-stats').textContent};
"""


def status_of(server: ServerProcess, path: str, authorization: str = "") -> int:
    headers = {"Authorization": authorization} if authorization else {}
    request = urllib.request.Request(server.web_url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def server(require_program, ghostream_server) -> ServerProcess:
    for program in ("ffmpeg", "srt-live-transmit"):
        require_program(program)
    return ghostream_server({"auth": {"failureDelay": 50, "maxFailureDelay": 200}})


def test_dashboard_needs_the_admin_credential_and_charts_two_srt_viewers(
    server: ServerProcess, chromium
) -> None:
    credential = "Basic " + base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()
    for path in ("/admin", "/api/admin/live", "/api/admin/shows", "/api/admin/shows/1"):
        assert status_of(server, path) == 401, path
    assert status_of(server, "/admin", "Basic " + base64.b64encode(b"admin:wrong").decode()) == 401

    # Refused: the browser asks for a user and password (headless, it shows nothing).
    chromium.get(server.web_url + "/admin")
    assert "Viewers over time" not in chromium.page_source
    assert not chromium.find_elements("css selector", "#chart")

    viewers: list[subprocess.Popen] = []
    with publishing(server, "demo:demo", seconds=60):
        try:
            for _ in range(2):
                viewers.append(srt_viewer(server.srt_url("demo")))
            chromium.execute_cdp_cmd("Network.enable", {})
            chromium.execute_cdp_cmd(
                "Network.setExtraHTTPHeaders", {"headers": {"Authorization": credential}}
            )
            chromium.get(server.web_url + "/admin")
            seen = wait_for(
                chromium,
                CHART,
                lambda value: bool(value) and value["srt"][-1:] == [2] and max(value["srt"]) == 2,
                30,
                "the chart: two SRT viewers now",
            )
            assert "srt 2" in seen["legend"]
            assert "demo" in seen["live"] and "srt 2" in seen["live"]
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            chromium.save_screenshot(str(SCREENSHOTS / "admin-dashboard.png"))
            chromium.set_window_size(390, 844)
            chromium.get(server.web_url + "/admin")
            wait_for(chromium, CHART, bool, 15, "the chart at phone width")
            width = chromium.execute_script("return document.documentElement.scrollWidth")
            assert width <= 390, "the dashboard scrolls sideways on a phone"
            chromium.save_screenshot(str(SCREENSHOTS / "admin-dashboard-phone.png"))
        finally:
            for viewer in viewers:
                viewer.terminate()
                viewer.wait(10)
    assert status_of(server, "/api/admin/shows", credential) == 200
