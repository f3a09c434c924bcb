"""Edge servers: viewers of an edge are served from one pull of the origin's stream.

Every server is a real subprocess on loopback; the viewers are ffmpeg,
ffprobe and Chromium.  The origin is the only one anyone publishes to.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from harness.browser import wait_for
from harness.publisher import publishing, signal_source
from harness.server_process import ServerProcess
from test_webrtc import open_viewer

KEY = "edge-key-for-tests"
GRACE = 3
IDLE = 2
WEBRTC_SOURCE = signal_source("320x180", "-preset", "veryfast", "-tune", "zerolatency")


@pytest.fixture
def peers(require_program) -> None:
    for program in ("ffmpeg", "ffprobe"):
        require_program(program)


def origin_config(**srt: object) -> dict:
    return {
        "srt": {"pullKeys": [KEY], **srt},
        "streams": {"reconnectGrace": GRACE},
        "transcoding": {"enabled": False},
    }


def edge_config(upstream: ServerProcess, *, key: str = KEY) -> dict:
    return {
        "origin": {
            "url": f"srt://127.0.0.1:{upstream.srt_port}",
            "key": key,
            "idleTimeout": IDLE,
            "webUrl": upstream.web_url,
        },
        "srt": {"pullKeys": [KEY]},
        "streams": {"reconnectGrace": GRACE},
        "transcoding": {"enabled": False},
    }


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def eventually(read: Callable[[], object], expected: object, timeout: float = 15.0) -> None:
    """Wait until `read()` returns `expected` (reports and expiries run on their own clocks)."""
    deadline = time.monotonic() + timeout
    while (value := read()) != expected:
        assert time.monotonic() < deadline, f"still {value!r}, expected {expected!r}"
        time.sleep(0.2)


def viewers_of(server: ServerProcess, stream_id: str) -> int:
    """The server's own counted viewers of a stream (connections, edges included)."""
    streams = get_json(server.web_url + "/api/streams")["streams"]
    return next((s["viewers"] for s in streams if s["id"] == stream_id), 0)


def counter(server: ServerProcess, stream_id: str) -> int:
    return get_json(f"{server.web_url}/_stats/{stream_id}/")["ConnectedViewers"]


def metric(server: ServerProcess, name: str, labels: str) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{name}\{{{labels}\}} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


def decoded_frames(url: str, frames: int = 25) -> int:
    """How many of the first `frames` video frames ffprobe decodes from an SRT or HLS URL."""
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-read_intervals", f"%+#{frames}",
         "-show_entries", "frame=key_frame", "-of", "csv=p=0", url],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return len(result.stdout.split())


@contextmanager
def srt_viewer(
    server: ServerProcess, stream_id: str, progress: Path | None = None
) -> Iterator[subprocess.Popen]:
    """ffmpeg decoding a stream over SRT until told to stop (or the stream ends).

    With `progress`, ffmpeg writes there how many frames it decoded, twice a second.
    """
    start = server.line_count()
    report = ["-stats_period", "0.5", "-progress", str(progress)] if progress else []
    process = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-v", "error", *report, "-i", server.srt_url(stream_id),
         "-f", "null", "-"],
        stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        server.wait_for_log(f"watching {stream_id} over SRT", start=start)
        yield process
    finally:
        process.terminate()
        process.wait(10)


def test_two_edges_serve_srt_and_llhls_and_the_origin_counts_every_viewer(
    peers, ghostream_server
) -> None:
    origin = ghostream_server(origin_config())
    edge_a = ghostream_server(edge_config(origin))
    edge_b = ghostream_server(edge_config(origin))
    with publishing(origin, "demo:demo"):
        assert decoded_frames(edge_a.srt_url("demo")) == 25
        with srt_viewer(edge_a, "demo"), srt_viewer(edge_a, "demo"), srt_viewer(edge_b, "demo"):
            # One pull per edge, however many viewers each has.
            assert edge_a.log.count("demo: pulling from the origin") == 1
            assert decoded_frames(edge_b.srt_url("demo")) == 25
            assert decoded_frames(f"{edge_b.web_url}/demo/index.m3u8") == 25
            assert viewers_of(origin, "demo") == 2
            assert metric(origin, "ghostream_viewers", 'protocol="srt",stream="demo"') == 2
            # The streamer's number: the three people, not the two edges.
            eventually(lambda: counter(origin, "demo"), 3)
            assert metric(origin, "ghostream_edge_viewers", 'stream="demo"') == 3
            assert counter(edge_a, "demo") == 2
        # Everyone left: an edge lets go of the stream after its idle timeout (edge B's
        # LL-HLS packager keeps it a little longer, like any LL-HLS viewer).
        edge_a.wait_for_log("demo: pull from the origin stopped", IDLE + 10)
        eventually(lambda: counter(origin, "demo"), 0)


def test_chromium_plays_an_edge_over_whep(peers, chromium, ghostream_server) -> None:
    origin = ghostream_server(origin_config())
    edge = ghostream_server(edge_config(origin))
    with publishing(origin, "demo:demo", source=WEBRTC_SOURCE):
        result = open_viewer(chromium, edge, "demo")
        assert result["state"] == "negotiated", result
        wait_for(
            chromium,
            "return await stats()",
            lambda s: s.get("video", {}).get("framesDecoded", 0) >= 25 and s["currentTime"] > 1,
            25,
            "video decoded from the edge",
        )
        assert "demo: pulling from the origin" in edge.log
        eventually(lambda: counter(origin, "demo"), 1)


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
            assert counter(first, "demo") == 1


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
        assert decoded_frames(edge.srt_url("demo")) == 25


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
        assert decoded_frames(edge.srt_url("demo")) == 25
        refusal(stranger.srt_url("demo"))
        stranger.wait_for_log("demo: cannot pull from the origin: connection rejected: forbidden")
        # WebRTC and LL-HLS viewers of the origin are not affected.
        assert decoded_frames(f"{origin.web_url}/demo/index.m3u8") == 25
        assert post_report(origin, "not-the-edge-key") == 403
        assert post_report(origin, KEY) == 204
        # Added to the edge's own report, which drops to 0 once its viewer's exit is reported.
        eventually(lambda: counter(origin, "demo"), 5, timeout=8)
    # No key ever reaches a log.
    for server in (origin, edge, stranger):
        assert KEY not in server.log and "not-the-edge-key" not in server.log


def test_variants_are_pulled_from_the_origin_that_makes_them(peers, ghostream_server) -> None:
    origin = ghostream_server(origin_config() | {"transcoding": {"profiles": ["72p:100:32"]}})
    edge = ghostream_server(edge_config(origin) | {"transcoding": {"profiles": ["72p:100:32"]}})
    with publishing(origin, "demo:demo"):
        result = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "stream=height",
             "-of", "csv=p=0", edge.srt_url("demo@72p")],
            capture_output=True, timeout=30, stdin=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        assert set(result.stdout.split()) == {"72"}, result.stderr
        origin.wait_for_log("demo: 72p variant started")
        assert "demo@72p: pulling from the origin" in edge.log
        assert "variant started" not in edge.log
