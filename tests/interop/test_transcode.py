"""Quality variants, watched as a user would: ffmpeg/ffprobe over SRT asking for `id@360p`."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request

import pytest
from harness.media import signal_source
from harness.publisher import publishing

SOURCE_720P = signal_source("1280x720", "-tune", "zerolatency", "-b:v", "1M")


@pytest.fixture
def ffmpeg(require_program) -> None:
    require_program("ffmpeg")
    require_program("ffprobe")


def frames(url: str, count: int = 25) -> list[dict]:
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-read_intervals", f"%+#{count}",
         "-show_frames", "-show_entries", "frame=width,height,key_frame", "-of", "json", url],
        capture_output=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    return json.loads(result.stdout)["frames"]


def live_ids(server) -> set[str]:
    with urllib.request.urlopen(f"{server.web_url}/api/streams", timeout=5) as response:
        return {s["id"] for s in json.load(response)["streams"] if s["state"] == "live"}


def test_an_srt_viewer_of_a_variant_decodes_frames_of_its_height(ffmpeg, ghostream_server) -> None:
    server = ghostream_server({"transcoding": {"profiles": ["360p:500:64"]}})
    with publishing(server, "demo:demo", source=SOURCE_720P):
        assert "demo@360p" not in live_ids(server)
        decoded = frames(server.srt_url("demo@360p"))
        assert len(decoded) == 25
        assert {(f["width"], f["height"]) for f in decoded} == {(640, 360)}
        assert decoded[0]["key_frame"] == 1
        server.wait_for_log("demo: 360p variant started")
        assert "demo@360p" in live_ids(server)
        # Nobody watches any more: the variant stops by itself.
        server.wait_for_log("demo: 360p variant stopped: nobody watched it", 30)


def test_unknown_profiles_and_offline_sources_are_not_found(ffmpeg, ghostream_server) -> None:
    server = ghostream_server({"transcoding": {"profiles": ["360p:500:64", "720p:2500:96"]}})
    refused = subprocess.run(
        ["ffprobe", "-v", "error", server.srt_url("demo@360p")], capture_output=True, timeout=30
    )
    assert refused.returncode != 0 and b"rejection reason" in refused.stderr.lower()
    with publishing(server, "demo:demo", source=SOURCE_720P):
        refused = subprocess.run(
            ["ffprobe", "-v", "error", server.srt_url("demo@1080p")],
            capture_output=True, timeout=30,
        )  # fmt: skip
        assert refused.returncode != 0
        # A profile as tall as the source would only cost CPU: it is not made.
        refused = subprocess.run(
            ["ffprobe", "-v", "error", server.srt_url("demo@720p")],
            capture_output=True, timeout=30,
        )  # fmt: skip
        assert refused.returncode != 0
    assert "variant started" not in server.log


def test_variants_made_always_start_with_the_publish(ffmpeg, ghostream_server) -> None:
    server = ghostream_server(
        {"transcoding": {"onDemand": False, "profiles": ["360p:500:64", "240p:300:48"]}}
    )
    with publishing(server, "demo:demo", source=SOURCE_720P):
        server.wait_for_log("demo: 360p variant started", 15)
        server.wait_for_log("demo: 240p variant started", 15)
        assert {(f["width"], f["height"]) for f in frames(server.srt_url("demo@240p"), 10)} == {
            (426, 240)
        }


def test_llhls_players_get_variants_and_keep_them_alive(ffmpeg, ghostream_server) -> None:
    server = ghostream_server({"transcoding": {"profiles": ["240p:300:48"]}})
    source = signal_source("640x360", "-tune", "zerolatency")
    with publishing(server, "demo:demo", source=source, seconds=60):
        plain = urllib.request.urlopen(f"{server.web_url}/demo/index.m3u8", timeout=20).read()
        assert b"demo@240p" not in plain
        # A player that adapts asks for every variant that can be made.
        url = f"{server.web_url}/demo/index.m3u8?variants"
        listing = urllib.request.urlopen(url, timeout=20).read().decode()
        assert "RESOLUTION=426x240" in listing and "../demo@240p/media.m3u8" in listing
        # Fetched only over LL-HLS (no SRT or WebRTC viewer), the variant stays up.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with urllib.request.urlopen(
                f"{server.web_url}/demo@240p/media.m3u8", timeout=20
            ) as response:
                assert response.status == 200
            time.sleep(1)
        assert "240p variant stopped" not in server.log
