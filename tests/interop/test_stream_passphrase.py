"""A stream with its own SRT passphrase: libsrt peers with it get in, others are refused."""

from __future__ import annotations

import re
import subprocess
import urllib.request

import pytest
from harness.media import signal_source
from harness.server_process import ServerProcess

STREAM_PASSPHRASE = "only-for-demo-2026"


@pytest.fixture
def server(require_program, ghostream_server) -> ServerProcess:
    for program in ("ffmpeg", "srt-live-transmit"):
        require_program(program)
    return ghostream_server({"srt": {"passphrases": {"demo": STREAM_PASSPHRASE}}})


def view(
    server: ServerProcess, passphrase: str, streamid: str = "demo"
) -> subprocess.CompletedProcess:
    options = {"passphrase": passphrase} if passphrase else {}
    return subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "info", "-i", server.srt_url(streamid, **options),
         "-t", "1", "-f", "null", "-"],
        capture_output=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_a_stream_passphrase_admits_its_peers_only(server: ServerProcess) -> None:
    source = subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-re", *signal_source(),
         "-t", "20", "-f", "mpegts", "-"],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    publisher = subprocess.Popen(
        ["srt-live-transmit", "-q", "-chunk:1316", "file://con",
         server.srt_url("demo:demo", passphrase=STREAM_PASSPHRASE)],
        stdin=source.stdout, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        server.wait_for_log("publishing demo over SRT")
        watched = view(server, STREAM_PASSPHRASE)
        assert watched.returncode == 0, watched.stderr.decode()
        wrong = view(server, "not-the-passphrase")
        assert wrong.returncode != 0
        assert b"Incorrect passphrase" in wrong.stderr
        assert view(server, "").returncode != 0
        server.wait_for_log("SRT demo from .* refused: wrong passphrase")
        server.wait_for_log("SRT demo from .* refused: caller has no passphrase")
        # Streams without their own passphrase need none.
        other = view(server, "", streamid="nobody")
        assert other.returncode != 0
        server.wait_for_log("SRT nobody from .* refused: no such live stream")
        assert publisher.poll() is None
    finally:
        for process in (publisher, source):
            process.kill()
            process.wait()
    assert STREAM_PASSPHRASE not in server.log
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        metrics = response.read().decode()
    assert 'ghostream_rejections_total{protocol="srt",reason="bad_secret"} 1.0' in metrics


def test_guessing_a_passphrase_is_slowed_like_guessing_a_password(
    require_program, ghostream_server
) -> None:
    """Each wrong passphrase from a host waits longer before its refusal; the right one does not."""
    require_program("ffmpeg")
    server = ghostream_server(
        {"srt": {"passphrase": STREAM_PASSPHRASE}, "auth": {"failureDelay": 300}}
    )
    for attempt in range(3):
        wrong = view(server, f"wrong-guess-number-{attempt}")
        assert b"Incorrect passphrase" in wrong.stderr, wrong.stderr.decode()
    server.wait_for_log("SRT demo from .* refused: wrong passphrase", count=3)
    # The first mistake is free, then the wait doubles: 0.3 s, 0.6 s.
    delays = re.findall(r"another wrong passphrase, refused in ([0-9.]+) s", server.log)
    assert delays == ["0.3", "0.6"]
    mark = server.line_count()
    right = view(server, STREAM_PASSPHRASE)
    assert right.returncode != 0
    server.wait_for_log("SRT demo from .* refused: no such live stream", start=mark)
    assert "another wrong passphrase" not in "\n".join(server.log.splitlines()[mark:])
    assert server.log.count("refused: wrong passphrase") == 3
