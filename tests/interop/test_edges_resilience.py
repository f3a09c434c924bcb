"""Edges keep serving through what happens to the origin, and an origin chooses its edges.

A chain of edges follows a publisher reconnecting; an origin restart ends
the edges' viewers after the grace; an offline stream or an unreachable
origin answers like any offline stream; `srt.pullOnly` keeps plain SRT
viewers off an origin.  Every server is a real subprocess on loopback.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from harness.media import probe_frames
from harness.publisher import publishing
from harness.server_process import ServerProcess
from test_edges import (
    GRACE,
    IDLE,
    KEY,
    counter,
    edge_config,
    eventually,
    origin_config,
    srt_viewer,
    viewers_of,
)


@pytest.fixture
def peers(require_program) -> None:
    for program in ("ffmpeg", "ffprobe"):
        require_program(program)


def frames_decoded(progress: Path) -> int:
    found = re.findall(r"^frame=([0-9]+)$", progress.read_text(), re.MULTILINE)
    return int(found[-1]) if found else 0


def test_a_chain_of_edges_survives_the_publisher_reconnecting(
    peers, ghostream_server, tmp_path: Path
) -> None:
    origin = ghostream_server(origin_config())
    first = ghostream_server(edge_config(origin))
    second = ghostream_server(edge_config(first))
    progress = tmp_path / "progress.txt"
    with (
        publishing(origin, "demo:demo") as publisher,
        srt_viewer(second, "demo", progress) as viewer,
    ):
        publisher.terminate()
        # The publisher is gone: the edges keep their viewers through the grace...
        origin.wait_for_log("stopped publishing demo")
        with publishing(origin, "demo:demo"):
            # ...and the new publisher's pictures reach the end of the chain.
            decoded = frames_decoded(progress)
            eventually(lambda: frames_decoded(progress) > decoded + 25, True)
            assert viewer.poll() is None
            # Each edge published the new publisher's stream anew, as the origin did.
            first.wait_for_log("demo: the origin ended the pull")
            second.wait_for_log("demo: the origin ended the pull")
            assert viewers_of(origin, "demo") == 1
            eventually(lambda: counter(origin, "demo"), 1)
            eventually(lambda: counter(second, "demo"), 1)


def test_after_an_origin_restart_viewers_end_with_the_grace_and_come_back(
    peers, ghostream_server
) -> None:
    origin = ghostream_server(origin_config())
    edge = ghostream_server(edge_config(origin))
    with publishing(origin, "demo:demo"), srt_viewer(edge, "demo") as viewer:
        origin.stop()
        stopped = time.monotonic()
        # The edge's viewer waits out the grace, then hears the stream ended.
        viewer.wait(GRACE + 15)
        assert time.monotonic() - stopped > GRACE - 1
        edge.wait_for_log("stopped watching demo: stream ended")
    origin = ghostream_server(config=origin.config)
    with publishing(origin, "demo:demo"):
        assert len(probe_frames(edge.srt_url("demo"), 25)) == 25


def test_offline_streams_and_an_unreachable_origin_answer_as_offline(
    peers, ghostream_server
) -> None:
    origin = ghostream_server(origin_config())
    edge = ghostream_server(edge_config(origin))
    result = subprocess.run(
        ["ffprobe", "-v", "info", edge.srt_url("nobody")],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert result.returncode != 0 and "rejection reason" in result.stderr, result.stderr
    edge.wait_for_log("SRT nobody from .* refused: no such live stream")
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"{edge.web_url}/nobody/index.m3u8", timeout=10)
    assert error.value.code == 404
    origin.stop()
    start = edge.line_count()
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(f"{edge.web_url}/demo/index.m3u8", timeout=10)
    assert error.value.code == 404
    edge.wait_for_log("demo: cannot pull from the origin: .*retrying", start=start)
    # While no one asks any more, the edge stops trying.
    edge.wait_for_log("demo: pull from the origin stopped", IDLE + 10, start=start)
    # One line for the outage, not one per retry.
    assert edge.log.count("demo: cannot pull from the origin") == 1


def refusal(url: str) -> str:
    result = subprocess.run(
        ["ffprobe", "-v", "info", url],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert result.returncode != 0 and "rejection reason" in result.stderr, result.stderr
    return result.stderr


def post_report(server: ServerProcess, key: str) -> int:
    request = urllib.request.Request(
        server.web_url + "/_edges/viewers",
        data=json.dumps({"edge": "e1", "viewers": {"demo": 5}}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_an_origin_reserved_to_its_edges_refuses_plain_srt_viewers_and_unknown_keys(
    peers, ghostream_server
) -> None:
    origin = ghostream_server(origin_config(pullOnly=True))
    edge = ghostream_server(edge_config(origin))
    stranger = ghostream_server(edge_config(origin, key="not-the-edge-key"))
    with publishing(origin, "demo:demo"):
        refusal(origin.srt_url("demo"))
        origin.wait_for_log("refused: only edges may watch over SRT here")
        assert len(probe_frames(edge.srt_url("demo"), 25)) == 25
        refusal(stranger.srt_url("demo"))
        # Publishers go to the origin; an edge would only shadow its stream.
        refusal(edge.srt_url("demo:demo"))
        edge.wait_for_log("refused: this server is an edge: publish to its origin")
        stranger.wait_for_log("demo: cannot pull from the origin: connection rejected: forbidden")
        assert post_report(origin, "not-the-edge-key") == 403
        assert post_report(origin, KEY) == 200
        # Added to the edge's own report, which drops to 0 once its viewer's exit is reported.
        eventually(lambda: counter(origin, "demo"), 5, timeout=8)
        # WebRTC and LL-HLS viewers of the origin are not affected (after the count: an
        # LL-HLS player counts as a viewer until 10 s after its last fetch).
        assert len(probe_frames(f"{origin.web_url}/demo/index.m3u8", 25)) == 25
    # No key ever reaches a log.
    for server in (origin, edge, stranger):
        assert KEY not in server.log and "not-the-edge-key" not in server.log
