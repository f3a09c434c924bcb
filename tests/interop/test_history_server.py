"""The history of a real server session: publishes with a reconnect, SRT, WebRTC, LL-HLS viewers.

The projections the server kept while it ran must equal those that
`ghostream history rebuild` makes from its log alone; `history shows` tells
the show as it happened; LL-HLS players are counted while they fetch parts.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import sqlite_utils
from harness.browser import wait_for
from harness.cli import ghostream
from harness.media import srt_viewer
from harness.publisher import publishing
from harness.server_process import ServerProcess

from ghostream.history import projections

WHEP_PAGE = Path(__file__).parent / "pages" / "whep.html"
PART = re.compile(r'URI="(part-[^"]+\.m4s)"')


@pytest.fixture
def peers(require_program) -> None:
    for program in ("ffmpeg", "srt-live-transmit"):
        require_program(program)


def viewer_count(server: ServerProcess) -> int:
    return httpx.get(f"{server.web_url}/_stats/demo/").json()["ConnectedViewers"]


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.2)


def fetch_parts(server: ServerProcess, user_agent: str, count: int) -> None:
    """An LL-HLS player without the page: playlist, then parts, as VLC or Safari would."""
    with httpx.Client(base_url=f"{server.web_url}/demo/", timeout=30) as client:
        client.headers["User-Agent"] = user_agent
        for _ in range(count):
            playlist = client.get("media.m3u8").text
            for name in PART.findall(playlist)[-2:]:
                assert client.get(name).status_code == 200


def test_projections_of_a_real_session_equal_a_rebuild(
    peers, ghostream_server, chromium, tmp_path: Path
) -> None:
    server = ghostream_server({"auth": {"enabled": False}, "streams": {"reconnectGrace": 3}})
    srt_viewers: list[subprocess.Popen] = []
    try:
        with publishing(server, "demo:demo", seconds=30) as first:
            for _ in range(2):
                srt_viewers.append(srt_viewer(server.srt_url("demo")))
            wait_until(lambda: viewer_count(server) == 2, 20, "two SRT viewers")
            chromium.get(f"{WHEP_PAGE.as_uri()}?whep={server.web_url}/demo/whep&kinds=video,audio")
            result = wait_for(
                chromium,
                "return window.result",
                lambda r: r and r.get("state") not in (None, "starting"),
                20,
                "WHEP negotiation",
            )
            assert result["status"] == 201, result
            server.wait_for_log("watching demo over WebRTC")
            fetch_parts(server, "VLC/3.0", 3)
            fetch_parts(server, "Safari/17", 3)
            assert viewer_count(server) == 5
            first.terminate()
            first.wait(10)
        # The publisher comes back within the grace: the same show goes on.
        with publishing(server, "demo:demo", seconds=30):
            fetch_parts(server, "VLC/3.0", 2)
            srt_viewers.pop().terminate()
            chromium.get("about:blank")
            wait_until(lambda: viewer_count(server) == 2, 20, "one SRT viewer and WebRTC left")
        # LL-HLS players that stop fetching leave after 10 s; the stream ends after the grace.
        wait_until(lambda: viewer_count(server) <= 1, 30, "LL-HLS players gone")
        server.wait_for_log("stopped watching demo", 30)
    finally:
        for viewer in srt_viewers:
            viewer.terminate()
            viewer.wait(10)
    server.stop()

    db = sqlite_utils.Database(sqlite3.connect(server.history_path))
    incremental = projections.dump(db)
    db.conn.close()
    config = str(server.config_path)
    rebuilt = ghostream("--config", config, "history", "rebuild", home=tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr
    db = sqlite_utils.Database(sqlite3.connect(server.history_path))
    assert projections.dump(db) == incremental
    protocols = {p for (p,) in db.execute("SELECT protocol FROM sessions WHERE kind = 'view'")}
    assert protocols == {"srt", "webrtc", "llhls"}
    assert db.execute("SELECT count(*) FROM sessions WHERE ended IS NULL").fetchone() == (0,)

    shows = ghostream("--config", config, "history", "shows", "--json", home=tmp_path)
    assert shows.returncode == 0, shows.stderr
    [show] = [json.loads(line) for line in shows.stdout.splitlines()]
    assert show["stream"] == "demo" and show["publishes"] == 2 and not show["live"]
    # Two SRT viewers, one WebRTC and two LL-HLS players at once; one LL-HLS player came back.
    assert show["peak_viewers"] == 5
    assert show["views"] in (5, 6)
    assert show["unique_viewers"] == 1  # all from 127.0.0.1
    table = ghostream("--config", config, "history", "shows", home=tmp_path)
    assert table.stdout.splitlines()[0].split()[:3] == ["STARTED", "DURATION", "STREAM"]
    assert " demo " in table.stdout.splitlines()[1]
