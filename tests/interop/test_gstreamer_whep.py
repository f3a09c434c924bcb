"""WHEP with GStreamer's webrtcbin: a second WebRTC stack, with an RSA certificate of its own.

webrtcbin offers `a=setup:actpass` and the server takes the DTLS server
role, as browsers do; an offer that leaves the server the client role must
work too, whatever the key type of the peer's certificate.  An offer of a
video codec the server cannot send is refused before anything starts.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from harness.programs import require_gstreamer
from harness.publisher import publishing, signal_source

CLIENT = Path(__file__).parent.parent / "harness" / "gst_whep.py"


def watch(url: str, *options: str) -> tuple[int, dict]:
    """Run the GStreamer viewer to its end: its exit status and its report."""
    process = subprocess.run(
        [require_gstreamer(), str(CLIENT), url, *options],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = process.stdout.strip().splitlines()
    assert lines, process.stderr
    return process.returncode, json.loads(lines[-1])


@pytest.mark.parametrize(("setup", "role"), [("actpass", "passive"), ("passive", "active")])
def test_webrtcbin_plays_over_whep_in_either_dtls_role(
    require_program, ghostream_server, setup: str, role: str
) -> None:
    require_program("ffmpeg")
    server = ghostream_server()
    with publishing(server, "demo:demo"):
        status, report = watch(f"{server.web_url}/demo/whep", "--setup", setup)
        assert report["status"] == 201, report
        assert report["answer_setup"] == role, report
        assert status == 0, report
        server.wait_for_log(r"watching demo over WebRTC")


def test_an_offer_without_h264_or_vp8_is_refused_before_any_copy_starts(
    require_program, ghostream_server
) -> None:
    require_program("ffmpeg")
    server = ghostream_server()
    # B-frames: an H.264 viewer would get the re-encoded H.264 copy.
    b_frames = signal_source("160x90", "-preset", "veryfast", "-bf", "2")
    with publishing(server, "demo:demo", source=b_frames):
        server.wait_for_log(r"demo: B-frames: WebRTC viewers get a re-encoded copy")
        status, report = watch(f"{server.web_url}/demo/whep", "--codec", "VP9", "--timeout", "5")
        assert status == 1 and report["status"] == 406, report
        assert "H.264" in report["answer"] and "VP8" in report["answer"], report
        # The copies are not started, so nothing to stop: not even a log line of one.
        assert "re-encoded for WebRTC" not in server.log and "variant started" not in server.log
        assert "VP8 copy" not in server.log
