"""Quality variants, watched as a user would: ffmpeg/ffprobe over SRT asking for `id@360p`."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from harness.media import probe_frames, signal_source
from harness.publisher import publishing
from harness.udp_relay import refusal

SOURCE_720P = signal_source("1280x720", "-tune", "zerolatency", "-b:v", "1M")


@pytest.fixture
def ffmpeg(require_program) -> None:
    require_program("ffmpeg")
    require_program("ffprobe")


def live_ids(server) -> set[str]:
    with urllib.request.urlopen(f"{server.web_url}/api/streams", timeout=5) as response:
        return {s["id"] for s in json.load(response)["streams"] if s["state"] == "live"}


def wait_live(server, wanted: set[str], timeout: float = 30) -> None:
    """Until the live streams the public API lists are exactly `wanted`."""
    deadline = time.monotonic() + timeout
    while (live := live_ids(server)) != wanted:
        assert time.monotonic() < deadline, f"live: {live}, expected {wanted}"
        time.sleep(0.2)


def test_an_srt_viewer_of_a_variant_decodes_frames_of_its_height(ffmpeg, ghostream_server) -> None:
    server = ghostream_server({"transcoding": {"profiles": ["360p:500:64"]}})
    with publishing(server, "demo:demo", source=SOURCE_720P):
        assert "demo@360p" not in live_ids(server)
        decoded = probe_frames(server.srt_url("demo@360p"), 25, "width,height,key_frame")
        assert len(decoded) == 25
        assert {(f["width"], f["height"]) for f in decoded} == {(640, 360)}
        assert decoded[0]["key_frame"] == 1
        assert "demo@360p" in live_ids(server)
        # Nobody watches any more: the variant stops by itself, its source goes on.
        wait_live(server, {"demo"})
        server.wait_for_log("demo: 360p variant stopped: nobody watched it")


def probe_command(url: str) -> list[str]:
    return ["ffprobe", "-v", "error", url]


def test_unknown_profiles_and_offline_sources_are_not_found(ffmpeg, ghostream_server) -> None:
    server = ghostream_server({"transcoding": {"profiles": ["360p:500:64", "720p:2500:96"]}})
    # SRT_REJX_NOTFOUND each time: no source yet, no such profile, a profile not below it.
    assert refusal(server.srt_url("demo@360p"), probe_command)[0] == 1404
    with publishing(server, "demo:demo", source=SOURCE_720P):
        assert refusal(server.srt_url("demo@1080p"), probe_command)[0] == 1404
        # A profile as tall as the source would only cost CPU: it is not made.
        assert refusal(server.srt_url("demo@720p"), probe_command)[0] == 1404
    assert "variant started" not in server.log


def test_variants_made_always_start_with_the_publish(ffmpeg, ghostream_server) -> None:
    server = ghostream_server(
        {"transcoding": {"onDemand": False, "profiles": ["360p:500:64", "240p:300:48"]}}
    )
    with publishing(server, "demo:demo", source=SOURCE_720P):
        # Both are live with no viewer having asked for either.
        wait_live(server, {"demo", "demo@360p", "demo@240p"}, 15)
        assert {
            (f["width"], f["height"])
            for f in probe_frames(server.srt_url("demo@240p"), 10, "width,height")
        } == {(426, 240)}


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
        # Fetched only over LL-HLS (no SRT or WebRTC viewer), its playlist polled each second,
        # the variant outlives the idle stop (IDLE_STOP, 10 s) of one nobody watches.
        deadline = time.monotonic() + 12
        while time.monotonic() < deadline:
            with urllib.request.urlopen(
                f"{server.web_url}/demo@240p/media.m3u8", timeout=20
            ) as response:
                assert response.status == 200
            time.sleep(1)
        assert "demo@240p" in live_ids(server)
        assert "240p variant stopped" not in server.log
