"""Publish with ffmpeg, watch with ffmpeg/ffprobe/srt-live-transmit, through the real server.

The server runs as a subprocess with its shipped CLI; every peer is a libsrt
program, so these tests prove what users see: that OBS-style publishing and
ffplay-style watching work, and that refusals reach the peer as rejections.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path

import bcrypt
import pytest
from harness.publisher import SOURCE, publishing
from harness.server_process import ServerProcess
from harness.udp_relay import refusal


@pytest.fixture
def peers(require_program) -> None:
    for program in ("ffmpeg", "ffprobe", "srt-live-transmit"):
        require_program(program)


def run_peer(command: list[str], timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def first_frames(server: ServerProcess, streamid: str | None) -> list[dict]:
    """The first video frames a new viewer decodes, as ffprobe reports them."""
    result = run_peer(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-read_intervals", "%+#5",
         "-show_frames", "-show_entries", "frame=key_frame,pict_type", "-of", "json",
         server.srt_url(streamid)],
    )  # fmt: skip
    assert result.returncode == 0, result.stderr.decode()
    # Errors such as "non-existing PPS referenced" mean playback began mid-GOP.
    assert result.stderr == b"", result.stderr.decode()
    return json.loads(result.stdout)["frames"]


def test_ffmpeg_publishes_and_ffmpeg_viewer_decodes_without_errors(
    peers, ghostream_server, tmp_path: Path
) -> None:
    server = ghostream_server()
    with publishing(server, "demo:demo"):
        result = run_peer(
            ["ffmpeg", "-hide_banner", "-v", "error", "-i", server.srt_url("demo"),
             "-map", "0", "-t", "3", "-f", "framemd5", str(tmp_path / "frames.md5")],
        )  # fmt: skip
        assert result.returncode == 0, result.stderr.decode()
        assert result.stderr == b"", result.stderr.decode()
        lines = [
            line for line in (tmp_path / "frames.md5").read_text().splitlines() if line[:1] != "#"
        ]
        video = [line for line in lines if line.startswith("0,")]
        audio = [line for line in lines if line.startswith("1,")]
        # Three seconds at 25 fps, and the audio alongside.
        assert len(video) >= 70
        assert len(audio) >= 100
        assert "publishing demo over SRT" in server.log


def test_late_viewer_decodes_its_first_frame_from_the_gop_cache(peers, ghostream_server) -> None:
    server = ghostream_server()
    with publishing(server, "demo:demo"):
        # Join well into the stream: its first keyframes are long gone from the wire.
        watch_for(server, "demo", 3)
        frames = first_frames(server, "demo")
    assert frames[0]["key_frame"] == 1
    assert frames[0]["pict_type"] == "I"


def test_srt_live_transmit_viewer_receives_a_playable_stream(
    peers, ghostream_server, tmp_path: Path
) -> None:
    server = ghostream_server()
    capture = tmp_path / "capture.ts"
    with publishing(server, "demo:demo"), capture.open("wb") as sink:
        # Its only file output is stdout.
        viewer = subprocess.Popen(
            ["srt-live-transmit", "-q", server.srt_url("demo"), "file://con"],
            stdin=subprocess.DEVNULL, stdout=sink,
        )  # fmt: skip
        try:
            server.wait_for_log("watching demo over SRT")
            # Wait for two seconds of stream rather than for two seconds of clock.
            probe = run_peer(
                [
                    "ffmpeg",
                    "-v",
                    "error",
                    "-i",
                    server.srt_url("demo"),
                    "-t",
                    "2",
                    "-f",
                    "null",
                    "-",
                ]
            )
            assert probe.returncode == 0
        finally:
            viewer.terminate()
            viewer.wait(10)
    streams = run_peer(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0",
         str(capture)]
    )  # fmt: skip
    assert set(streams.stdout.decode().split()) == {"aac", "h264"}
    # The capture was cut at an arbitrary point: leave out its last, partial frame.
    packets = run_peer(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-count_packets",
         "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(capture)]
    )  # fmt: skip
    complete_frames = int(packets.stdout.split()[0]) - 1
    assert complete_frames >= 40
    decoded = run_peer(
        ["ffmpeg", "-v", "error", "-threads", "1", "-i", str(capture),
         "-frames:v", str(complete_frames), "-f", "null", "-"]
    )  # fmt: skip
    assert decoded.returncode == 0
    assert decoded.stderr == b"", decoded.stderr.decode()


def test_passphrase_and_latency_settings_hold_with_libsrt_peers(
    peers, ghostream_server, tmp_path: Path
) -> None:
    """srt.passphrase encrypts both ways, and srt.latency is what libsrt peers negotiate."""
    passphrase = "correct-horse-battery"
    server = ghostream_server({"srt": {"passphrase": passphrase, "latency": 700}})
    secret = {"passphrase": passphrase}
    with publishing(server, "demo:demo", url_options=secret):
        stats = tmp_path / "stats.json"
        viewer = run_peer(
            ["srt-live-transmit", "-q", "-s:100", "-pf:json", f"-statsout:{stats}",
             "-t:4", server.srt_url("demo", passphrase=passphrase), "file://con"],
            timeout=30,
        )  # fmt: skip
        assert len(viewer.stdout) > 50_000, viewer.stderr.decode()
        delays = {int(d) for d in re.findall(r'"msTsbPdDelay"\s*:\s*(\d+)', stats.read_text())}
        assert delays == {700}, stats.read_text()[:500]
        decoded = run_peer(
            ["ffmpeg", "-v", "error", "-i", server.srt_url("demo", **secret), "-t", "2",
             "-f", "null", "-"]
        )  # fmt: skip
        assert decoded.returncode == 0, decoded.stderr.decode()
        # libsrt refuses a wrong passphrase itself (SRT_REJ_BADSECRET), as the server does.
        refused(watch_command, server.srt_url("demo", passphrase="not-the-secret"), 10)


def test_srt_viewer_stays_through_a_publisher_reconnect(
    peers, ghostream_server, tmp_path: Path
) -> None:
    """Within streams.reconnectGrace the viewer's connection is kept and gets the new publish."""
    server = ghostream_server({"streams": {"reconnectGrace": 5}})
    capture = tmp_path / "capture.ts"
    with publishing(server, "demo:demo", seconds=3) as first:
        viewer = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-i", server.srt_url("demo"), "-c", "copy",
             "-f", "mpegts", str(capture)],
            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        server.wait_for_log("watching demo over SRT")
        first.wait(15)
    try:
        with publishing(server, "demo:demo", seconds=3) as second:
            second.wait(15)
        ended = server.wait_for_log("stopped watching demo", 15)
        assert viewer.wait(15) == 0, viewer.stderr.read().decode()
    finally:
        viewer.kill()
    assert "stream ended" in ended
    lines = server.log.splitlines()
    assert sum("watching demo over SRT" in line for line in lines) == 1
    publishes = [i for i, line in enumerate(lines) if "publishing demo over SRT" in line]
    assert len(publishes) == 2
    assert lines.index(ended) > publishes[1]
    packets = run_peer(
        ["ffprobe", "-v", "error", "-select_streams", "v", "-count_packets",
         "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0", str(capture)]
    )  # fmt: skip
    # 25 frames a second from each publisher: more than the first alone could give.
    assert int(packets.stdout.split()[0]) > 90


def test_empty_stream_id_watches_the_only_live_stream(peers, ghostream_server) -> None:
    server = ghostream_server()
    with publishing(server, "demo:demo"):
        frames = first_frames(server, None)
    assert frames[0]["key_frame"] == 1


def test_empty_stream_id_watches_the_configured_default(peers, ghostream_server) -> None:
    server = ghostream_server(
        {"srt": {"defaultStream": "main"}, "auth": {"enabled": False}},
    )
    with publishing(server, "other:x"), publishing(server, "main:x"):
        frames = first_frames(server, None)
        assert frames
        viewers = get_json(server.web_url + "/api/streams")["streams"]
        assert {s["id"] for s in viewers} == {"main", "other"}
        server.wait_for_log("watching main over SRT")


def credentials(**users: str) -> dict:
    return {
        "auth": {
            "basic": {
                "credentials": {
                    user: bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
                    for user, password in users.items()
                }
            }
        }
    }


def refused(command: Callable[[str], list[str]], url: str, code: int) -> None:
    """Run a libsrt peer that must be refused with the reject code `code`."""
    got, stderr = refusal(url, command)
    assert got == code, stderr


def watch_command(url: str) -> list[str]:
    return ["ffprobe", "-loglevel", "info", url]


def publish_command(url: str) -> list[str]:
    return ["ffmpeg", "-hide_banner", "-loglevel", "info", *SOURCE, "-t", "1",
            "-f", "mpegts", url]  # fmt: skip


def rejection_events(server: ServerProcess, stream_id: str) -> list[dict]:
    events = server.admin_json(f"/api/admin/streams/{stream_id}")["events"]
    return [event for event in events if event["kind"] == "rejected"]


def test_wrong_password_and_unknown_user_are_refused(peers, ghostream_server) -> None:
    server = ghostream_server(credentials(alice="s3cret"))
    refused(publish_command, server.srt_url("alice:wrong"), 1403)
    server.wait_for_log(r"SRT alice from 127\.0\.0\.1:\d+ refused: wrong password")
    refused(publish_command, server.srt_url("bob:s3cret"), 1403)
    server.wait_for_log(r"SRT bob from .* refused: unknown user")
    assert "s3cret" not in server.log
    assert [e["reason"] for e in rejection_events(server, "alice")] == ["wrong password"]
    assert json.loads(rejection_events(server, "bob")[0]["detail"]) == {"code": 1403}
    with publishing(server, "alice:s3cret"):
        assert first_frames(server, "alice")


def test_second_publisher_is_refused_and_first_keeps_streaming(peers, ghostream_server) -> None:
    server = ghostream_server()
    with publishing(server, "demo:demo") as first:
        refused(publish_command, server.srt_url("demo:demo"), 1409)
        server.wait_for_log("refused: the stream already has a publisher")
        assert first.poll() is None
        assert first_frames(server, "demo")
    events = rejection_events(server, "demo")
    assert [json.loads(e["detail"])["code"] for e in events] == [1409]


def test_unknown_stream_is_refused(peers, ghostream_server) -> None:
    server = ghostream_server()
    refused(watch_command, server.srt_url("nobody"), 1404)
    server.wait_for_log("SRT nobody from .* refused: no such live stream")
    assert [e["reason"] for e in rejection_events(server, "nobody")] == ["no such live stream"]


def test_max_clients_refuses_the_next_peer(peers, ghostream_server) -> None:
    server = ghostream_server({"srt": {"maxClients": 1}})
    with publishing(server, "demo:demo"):
        refused(watch_command, server.srt_url("demo"), 1402)
        server.wait_for_log(r"refused: srt.maxClients \(1\) reached")
    assert [e["reason"] for e in rejection_events(server, "demo")] == ["srt.maxClients (1) reached"]


def watch_for(server: ServerProcess, streamid: str, seconds: float) -> None:
    """Watch `seconds` of the stream (live, so as long on the clock) and check it decoded."""
    watched = run_peer(
        ["ffmpeg", "-v", "error", "-i", server.srt_url(streamid), "-t", str(seconds),
         "-f", "null", "-"]
    )  # fmt: skip
    assert watched.returncode == 0, watched.stderr.decode()


def test_viewer_counts_and_history_follow_the_sessions(peers, ghostream_server) -> None:
    server = ghostream_server()
    with publishing(server, "demo:demo"):
        watch_for(server, "demo", 1)
        # A viewer that stays for three seconds of stream while the counts are read.
        viewer = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-i", server.srt_url("demo"), "-t", "3", "-f", "null", "-"],
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            server.wait_for_log(r"watching demo over SRT", start=server.line_count())
            assert get_json(server.web_url + "/_stats/demo/") == {"ConnectedViewers": 1}
            stats = get_json(server.web_url + "/api/streams/demo")["stats"]
            assert stats["current_viewers"] == 1
            assert viewer.wait(20) == 0
        finally:
            viewer.kill()
        # The first viewer's leave is the first such line; this one's is the second.
        server.wait_for_log("stopped watching demo: viewer left", count=2)
        assert get_json(server.web_url + "/_stats/demo/") == {"ConnectedViewers": 0}
    detail = server.admin_json("/api/admin/streams/demo")
    assert detail["stats"]["peak_viewers"] == 1
    assert detail["stats"]["total_views"] == 2
    assert detail["stats"]["current_viewers"] == 0
    kinds = sorted(session["kind"] for session in detail["sessions"])
    assert kinds == ["publish", "view", "view"]
    for view in (s for s in detail["sessions"] if s["kind"] == "view"):
        assert view["bytes"] > 0 and view["ended"] > view["started"]


def test_stalled_viewer_changes_nothing_for_others(peers, ghostream_server, tmp_path: Path) -> None:
    server = ghostream_server()
    with publishing(server, "demo:demo") as publisher:
        watch_for(server, "demo", 1)
        stalled = subprocess.Popen(
            ["ffmpeg", "-v", "error", "-i", server.srt_url("demo"), "-f", "null", "-"],
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            line = server.wait_for_log("watching demo over SRT", start=server.line_count())
            stalled_peer = line.split()[4]
            # Connected but frozen: it neither reads nor acknowledges any more.
            stalled.send_signal(signal.SIGSTOP)
            result = run_peer(
                ["ffmpeg", "-v", "error", "-i", server.srt_url("demo"), "-map", "0:v",
                 "-t", "7", "-f", "framemd5", str(tmp_path / "frames.md5")],
            )  # fmt: skip
            assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()
            frames = (tmp_path / "frames.md5").read_text().splitlines()
            assert len([f for f in frames if f.startswith("0,")]) >= 170
            # The server gives up on the frozen peer; the publisher never noticed it.
            server.wait_for_log(f"{stalled_peer} stopped watching demo", timeout=15)
            assert publisher.poll() is None
        finally:
            stalled.kill()
            stalled.wait(10)
    assert "Traceback" not in server.log
