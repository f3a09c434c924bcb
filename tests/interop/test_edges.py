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
from harness.media import probe_frames, signal_source
from harness.publisher import ffmpeg_admitted, publishing
from harness.server_process import ServerProcess
from test_webrtc import open_viewer

KEY = "edge-key-for-tests"
GRACE = 3
IDLE = 2
PASSPHRASE = "origin-passphrase-2026"
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


def viewers_of(server: ServerProcess, stream_id: str, field: str = "viewers") -> int:
    """The server's own counted viewers of a stream (connections, edges included)."""
    streams = get_json(server.web_url + "/api/streams")["streams"]
    return next((s[field] for s in streams if s["id"] == stream_id), 0)


def counter(server: ServerProcess, stream_id: str) -> int:
    return get_json(f"{server.web_url}/_stats/{stream_id}/")["ConnectedViewers"]


def live_ids(server: ServerProcess) -> set[str]:
    streams = get_json(f"{server.web_url}/api/streams")["streams"]
    return {s["id"] for s in streams if s["state"] == "live"}


def metric(server: ServerProcess, name: str, labels: str) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
        text = response.read().decode()
    match = re.search(rf"^{name}\{{{labels}\}} ([0-9.e+]+)$", text, re.MULTILINE)
    return float(match[1]) if match else 0.0


@contextmanager
def srt_viewer(
    server: ServerProcess, stream_id: str, progress: Path | None = None
) -> Iterator[subprocess.Popen]:
    """ffmpeg decoding a stream over SRT until told to stop (or the stream ends).

    With `progress`, ffmpeg writes there how many frames it decoded, twice a second.
    """
    report = ["-stats_period", "0.5", "-progress", str(progress)] if progress else []
    arguments = [*report, "-i", server.srt_url(stream_id), "-f", "null", "-"]
    with ffmpeg_admitted(server, f"watching {stream_id} over SRT", arguments) as process:
        yield process


def test_two_edges_serve_srt_and_llhls_and_the_origin_counts_every_viewer(
    peers, ghostream_server
) -> None:
    origin = ghostream_server(origin_config())
    edge_a = ghostream_server(edge_config(origin))
    edge_b = ghostream_server(edge_config(origin))
    with publishing(origin, "demo:demo"):
        assert len(probe_frames(edge_a.srt_url("demo"), 25)) == 25
        with srt_viewer(edge_a, "demo"), srt_viewer(edge_a, "demo"), srt_viewer(edge_b, "demo"):
            assert len(probe_frames(edge_b.srt_url("demo"), 25)) == 25
            assert len(probe_frames(f"{edge_b.web_url}/demo/index.m3u8", 25)) == 25
            # One pull per edge, however many viewers each has: the origin serves two.
            assert viewers_of(origin, "demo") == 2
            assert metric(origin, "ghostream_viewers", 'protocol="srt",stream="demo"') == 2
            # The streamer's number: the three people, not the two edges.
            eventually(lambda: counter(origin, "demo"), 3)
            assert viewers_of(origin, "demo", "audience") == 3
            assert metric(origin, "ghostream_edge_viewers", 'stream="demo"') == 3
            # A player served by an edge shows the same number, from the origin's answer.
            eventually(lambda: counter(edge_a, "demo"), 3)
        # Everyone left: each edge lets go of its pull (edge B's LL-HLS packager keeps it
        # a little longer, like any LL-HLS viewer), so the origin serves nobody.
        eventually(lambda: metric(origin, "ghostream_viewers", 'protocol="srt",stream="demo"'), 0,
                   IDLE + 25)  # fmt: skip
        assert live_ids(edge_a) == set()
        eventually(lambda: counter(origin, "demo"), 0)


def test_an_edge_pulls_with_the_origins_passphrase(peers, ghostream_server) -> None:
    origin = ghostream_server(origin_config(passphrase=PASSPHRASE))
    config = edge_config(origin)
    config["origin"]["passphrase"] = PASSPHRASE
    edge = ghostream_server(config)
    with publishing(origin, "demo:demo", url_options={"passphrase": PASSPHRASE}):
        assert len(probe_frames(edge.srt_url("demo"), 25)) == 25
        assert metric(origin, "ghostream_viewers", 'protocol="srt",stream="demo"') == 1
    assert PASSPHRASE not in origin.log + edge.log


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
