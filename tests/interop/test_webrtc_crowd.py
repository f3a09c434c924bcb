"""Many browsers on the shared WebRTC ports, ICE-TCP, and hostile traffic on those ports.

Headless Chromium is the peer: one page holds many peer connections, as
many tabs would, and each reports what it decoded from its own getStats().
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import socket
import struct
import urllib.request
from pathlib import Path

import pytest
from harness.browser import wait_for
from harness.media import signal_source
from harness.publisher import publishing
from harness.server_process import ServerProcess

PAGE = Path(__file__).parent / "pages" / "crowd.html"
SMALL = signal_source("320x180", "-tune", "zerolatency")
CROWD = 20


@pytest.fixture
def ffmpeg(require_program) -> None:
    require_program("ffmpeg")


def metric(server: ServerProcess, name: str) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{.*}})? (\S+)$", text, re.M))


def open_viewers(driver, server: ServerProcess, count: int, tcp_only: bool = False) -> list:
    driver.get(PAGE.as_uri())
    driver.execute_script(
        "start(arguments[0], arguments[1], arguments[2])",
        f"{server.web_url}/demo/whep",
        count,
        tcp_only,
    )
    return wait_for(
        driver,
        "return summary()",
        lambda viewers: len(viewers) == count and all(v["state"] != "starting" for v in viewers),
        60,
        "WHEP negotiations",
    )


def all_play(frames: int, packets: int = 10):
    def check(viewers: list) -> bool:
        return all(
            v.get("video", {}).get("framesDecoded", 0) >= frames
            and v.get("audio", {}).get("packetsReceived", 0) >= packets
            for v in viewers
        )

    return check


def viewer_counter(server: ServerProcess) -> bytes:
    return urllib.request.urlopen(f"{server.web_url}/_stats/demo/", timeout=5).read()


def test_twenty_browsers_share_one_udp_port_and_leave(ffmpeg, chromium, ghostream_server) -> None:
    # Twenty tabs of one machine: more than one address may hold by default.
    server = ghostream_server({"webrtc": {"maxSessionsPerHost": CROWD}})
    port = server.config["webrtc"]["minPortUDP"]
    assert port == server.config["webrtc"]["maxPortUDP"]
    with publishing(server, "demo:demo", source=SMALL, seconds=120):
        viewers = open_viewers(chromium, server, CROWD)
        assert [v["status"] for v in viewers] == [201] * CROWD, viewers
        for viewer in viewers:
            udp = re.findall(r"a=candidate:\S+ 1 udp \d+ \S+ (\d+) typ host", viewer["answer"])
            assert udp and set(udp) == {str(port)}
        stats = wait_for(chromium, "return await stats()", all_play(25), 90, "every viewer plays")
        assert {s["protocol"] for s in stats} == {"udp"}
        assert metric(server, "ghostream_webrtc_connected_sessions") == CROWD
        # Half leave with DELETE, half as a closed tab does: without a word to the server.
        for index in range(CROWD):
            chromium.execute_script("return leave(arguments[0], arguments[1])", index, index % 2)
        # The gauge drops as a session stops sending; the viewer count once its
        # peer connection is closed too, which may take a moment longer.
        wait_for(
            chromium,
            "return 0",
            lambda _: (
                metric(server, "ghostream_webrtc_connected_sessions") == 0
                and viewer_counter(server) == b'{"ConnectedViewers":0}'
            ),
            60,
            "every session ended on the server and left the viewer count",
        )
        # Their routes are gone: a new viewer still gets the port, and plays.
        again = open_viewers(chromium, server, 1)
        assert again[0]["status"] == 201
        wait_for(chromium, "return (await stats()).slice(-1)", all_play(10), 30, "newcomer plays")
    assert "Traceback" not in server.log


def test_a_browser_without_udp_plays_over_ice_tcp(ffmpeg, chromium, ghostream_server) -> None:
    server = ghostream_server()
    tcp_port = server.config["webrtc"]["tcpListenAddress"].rsplit(":", 1)[1]
    with publishing(server, "demo:demo", source=SMALL):
        (viewer,) = open_viewers(chromium, server, 1, tcp_only=True)
        assert viewer["status"] == 201, viewer
        assert re.search(
            rf"a=candidate:\S+ 1 tcp \d+ \S+ {tcp_port} typ host tcptype passive", viewer["answer"]
        ), viewer["answer"]
        (stats,) = wait_for(chromium, "return await stats()", all_play(25), 30, "plays over TCP")
        assert stats["protocol"] == "tcp"
    assert "Traceback" not in server.log


def binding_request(username: str, password: str | None, priority: bool = True) -> bytes:
    """A browser's STUN binding request; its MESSAGE-INTEGRITY forged when no password is given."""

    def attribute(kind: int, value: bytes) -> bytes:
        return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)

    attributes = attribute(0x0006, username.encode())  # USERNAME
    if priority:
        attributes += attribute(0x0024, struct.pack("!I", 1853824767))  # PRIORITY
        attributes += attribute(0x802A, os.urandom(8))  # ICE-CONTROLLING
    header = struct.pack("!HH4s12s", 0x0001, len(attributes) + 24, b"\x21\x12\xa4\x42",
                         os.urandom(12))  # fmt: skip
    digest = (
        hmac.new(password.encode(), header + attributes, hashlib.sha1).digest()
        if password is not None
        else os.urandom(20)
    )
    return header + attributes + attribute(0x0008, digest)


def test_junk_replays_and_forgeries_do_not_disturb_a_viewer(
    ffmpeg, chromium, ghostream_server
) -> None:
    server = ghostream_server()
    port = server.config["webrtc"]["minPortUDP"]
    with publishing(server, "demo:demo", source=SMALL, seconds=60):
        (viewer,) = open_viewers(chromium, server, 1)
        ufrag = re.search(r"a=ice-ufrag:(\S+)", viewer["answer"]).group(1)
        password = re.search(r"a=ice-pwd:(\S+)", viewer["answer"]).group(1)
        browser = re.search(r"a=ice-ufrag:(\S+)", viewer["offer"]).group(1)
        wait_for(chromium, "return await stats()", all_play(25), 30, "playing")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as attacker:
            attacker.connect(("127.0.0.1", port))
            for _ in range(200):
                attacker.send(os.urandom(100))  # junk
                attacker.send(b"\x80\x60" + os.urandom(150))  # RTP-looking
                attacker.send(b"\x16\xfe\xfd" + os.urandom(80))  # DTLS-looking
                attacker.send(binding_request(f"{ufrag}:x", None))  # forged integrity
                attacker.send(binding_request("nobody:x", password))  # someone else's
            # A valid request replayed from elsewhere: this address reaches the session now,
            # and what it sends next goes to the session's DTLS and SRTP, which refuse it.
            attacker.send(binding_request(f"{ufrag}:{browser}", password))
            attacker.settimeout(5)
            assert attacker.recv(1500)[:2] == b"\x01\x01"  # a binding success response
            # Authenticated, but without the PRIORITY aioice expects.
            attacker.send(binding_request(f"{ufrag}:{browser}", password, priority=False))
            for _ in range(200):
                attacker.send(b"\x80\x60" + os.urandom(150))
                attacker.send(b"\x16\xfe\xfd" + os.urandom(80))
        with socket.create_connection(
            ("127.0.0.1", int(server.config["webrtc"]["tcpListenAddress"].rsplit(":", 1)[1]))
        ) as junk:
            junk.sendall(struct.pack("!H", 50) + os.urandom(50))
            junk.settimeout(5)
            with contextlib.suppress(ConnectionResetError):
                assert junk.recv(100) == b""  # closed: it names no session
        before = chromium.execute_script("return await stats()")[0]["video"]["framesDecoded"]
        wait_for(chromium, "return await stats()", all_play(before + 50), 20, "keeps playing")
    dropped = metric(server, "ghostream_webrtc_dropped_packets_total")
    assert dropped >= 200 * 5, dropped
    assert "Traceback" not in server.log
