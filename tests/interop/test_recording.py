"""Recorded shows replayed by real players: hls.js in Chromium, ffprobe, after a crash too.

ffmpeg publishes a few seconds over SRT; what was written is read back over
HTTP by ffprobe (the HLS VOD and the MP4) and played in Chromium's replay
page, whose audience chart seeks the video.  The live thumbnail is decoded
back by ffprobe.
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from harness.browser import wait_for
from harness.media import signal_source
from harness.publisher import publishing
from harness.server_process import ADMIN_PASSWORD, ADMIN_USER, ServerProcess
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By

SECONDS = 8
SHOW = {"recording": {"enabled": True}, "streams": {"reconnectGrace": 1}}
AUTHORIZATION = "Basic " + base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()


@pytest.fixture
def peers(require_program) -> None:
    require_program("ffmpeg")
    require_program("ffprobe")


def get(url: str, *, admin: bool = False) -> tuple[int, bytes, dict]:
    headers = {"Authorization": AUTHORIZATION} if admin else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers)


def probe(url: str, *entries: str, admin: bool = False) -> dict:
    headers = ["-headers", f"Authorization: {AUTHORIZATION}\r\n"] if admin else []
    result = subprocess.run(
        ["ffprobe", "-v", "error", *headers, "-show_entries", ":".join(entries), "-of", "json",
         url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def recorded_show(server: ServerProcess, seconds: int = SECONDS) -> dict:
    """Publish `seconds` of test signal and wait until its recording is closed."""
    start = server.line_count()
    with publishing(server, "demo:demo", seconds=seconds) as ffmpeg:
        ffmpeg.wait(seconds + 30)
    server.wait_for_log(r"demo: recording ended", start=start, timeout=30)
    [show] = server.admin_json("/api/admin/shows?stream=demo&limit=1")["shows"]
    assert show["recording"] is not None and show["recording"]["complete"], show
    return show


def test_a_show_is_recorded_replayed_and_downloaded(peers, ghostream_server) -> None:
    server = ghostream_server(SHOW)
    show = recorded_show(server)
    base = f"{server.web_url}/demo/shows/{show['id']}"
    # The admin's, unless recording.public says otherwise.
    assert get(base + "/index.m3u8")[0] == 401
    assert get(base + ".mp4")[0] == 401
    status, playlist, _ = get(base + "/index.m3u8", admin=True)
    assert status == 200 and playlist.decode().rstrip().endswith("#EXT-X-ENDLIST")
    vod = probe(base + "/index.m3u8", "format=duration", "stream=codec_name", admin=True)
    assert {s["codec_name"] for s in vod["streams"]} == {"h264", "aac"}
    mp4 = probe(base + ".mp4", "format=duration,format_name", "stream=codec_name", admin=True)
    assert "mp4" in mp4["format"]["format_name"]
    assert {s["codec_name"] for s in mp4["streams"]} == {"h264", "aac"}
    assert abs(float(mp4["format"]["duration"]) - SECONDS) <= 0.5, mp4
    assert abs(show["recording"]["duration"] - SECONDS) <= 0.5, show
    listing = subprocess.run(
        [*server_cli(server), "history", "shows"], capture_output=True, text=True, timeout=30
    )
    assert "MB" in listing.stdout.splitlines()[-1], listing.stdout


def server_cli(server: ServerProcess) -> list[str]:
    import sys

    return [sys.executable, "-m", "ghostream", "--config", str(server.config_path)]


def test_chromium_plays_the_recording_and_the_chart_seeks_it(
    peers, chromium, ghostream_server
) -> None:
    server = ghostream_server(SHOW | {"recording": {"enabled": True, "public": True}})
    show = recorded_show(server)
    chromium.get(f"{server.web_url}/demo/shows/{show['id']}")
    video = "const v = document.getElementById('video'); return {t: v.currentTime, d: v.duration};"
    wait_for(chromium, "document.getElementById('video').muted = true; return 1", bool, 5, "mute")
    chromium.execute_script("document.getElementById('video').play()")
    wait_for(chromium, video, lambda v: v["t"] > 1.0, 30, "the recording plays")
    # A click near the chart's right end seeks near the show's end.
    chart = chromium.find_element(By.CSS_SELECTOR, "#chart .u-over")
    width = chart.size["width"]
    ActionChains(chromium).move_to_element_with_offset(chart, width // 2 - 5, 0).click().perform()
    seen = wait_for(chromium, video, lambda v: v["t"] > SECONDS / 2, 15, "the chart seeks")
    assert abs(seen["d"] - SECONDS) <= 0.5, seen
    wait_for(chromium, "return document.getElementById('video').ended", bool, 30,
             "the recording plays to its end")  # fmt: skip


def test_a_killed_server_leaves_a_playable_recording_closed_at_the_next_start(
    peers, ghostream_server, tmp_path: Path
) -> None:
    server = ghostream_server(SHOW)
    with publishing(server, "demo:demo", seconds=30):
        # Three segments of 4 s on disk, then the server dies mid-show.
        directory = Path(server.wait_for_log("demo: recording to ").rsplit(" ", 1)[1])
        deadline = time.monotonic() + 40
        while not (directory / "segment-2.m4s").exists():
            assert time.monotonic() < deadline, list(directory.iterdir())
            time.sleep(0.2)
        server.kill()
    assert "#EXT-X-ENDLIST" not in (directory / "index.m3u8").read_text()
    again = ghostream_server(config=server.config)
    again.wait_for_log(r"recording: closed 1 recording\(s\)")
    assert (directory / "index.m3u8").read_text().rstrip().endswith("#EXT-X-ENDLIST")
    played = probe(str(directory / "index.m3u8"), "format=duration")
    assert float(played["format"]["duration"]) >= 8.0
    [show] = again.admin_json("/api/admin/shows?stream=demo")["shows"]
    assert show["recording"]["complete"] is False and show["recording"]["duration"] >= 8.0


def test_an_unwritable_recording_directory_leaves_the_live_stream_alone(
    peers, ghostream_server, tmp_path: Path
) -> None:
    # A file where the directory should be: every write fails, even as root.
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    server = ghostream_server(
        {"recording": {"enabled": True, "directory": str(blocker / "recordings")}}
    )
    server.wait_for_log("recording: cannot use")
    with publishing(server, "demo:demo"):
        server.wait_for_log("demo: recording stopped: .*the live stream goes on")
        frames = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v", "-read_intervals", "%+2",
             "-count_frames", "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0",
             server.srt_url("demo")],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert int(frames.stdout.split()[0]) >= 25, frames
    metrics = get(server.metrics_url)[1].decode()
    assert 'ghostream_recording_failures_total{stream="demo"} 1.0' in metrics
    events = server.admin_json("/api/admin/streams/demo")["events"]
    assert any(e["kind"] == "recording stopped" and e["reason"] for e in events), events


def test_the_live_thumbnail_is_the_stream_picture_and_follows_it(
    peers, ghostream_server, tmp_path: Path
) -> None:
    server = ghostream_server()
    source = signal_source("320x180")
    with publishing(server, "demo:demo", source=source):
        first = wait_thumbnail(server, tmp_path / "first.jpg")
        size = probe(str(first), "stream=codec_name,width,height")["streams"][0]
        assert (size["codec_name"], size["width"], size["height"]) == ("mjpeg", 320, 180)
        deadline = time.monotonic() + 15
        while wait_thumbnail(server, tmp_path / "next.jpg").read_bytes() == first.read_bytes():
            assert time.monotonic() < deadline, "the thumbnail never changed"
            time.sleep(0.5)
        page = get(f"{server.web_url}/demo")[1].decode()
        assert f'content="{server.web_url}/demo/thumbnail.jpg"' in page
    assert get(f"{server.web_url}/nobody/thumbnail.jpg")[0] == 404


def wait_thumbnail(server: ServerProcess, path: Path) -> Path:
    deadline = time.monotonic() + 20
    while True:
        status, body, headers = get(f"{server.web_url}/demo/thumbnail.jpg")
        if status == 200:
            assert headers["content-type"] == "image/jpeg"
            path.write_bytes(body)
            return path
        assert time.monotonic() < deadline, (status, body)
        time.sleep(0.2)
