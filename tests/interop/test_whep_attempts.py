"""WHEP offers that never become views: refused ones, and ones whose client never connects.

The client is plain HTTP with a hand-written offer: a real browser's SDP
shape (H.264 and Opus, receive only) whose ICE credentials no one will
ever answer to, as a client that vanishes after its POST, or a hostile
one, would leave it.
"""

from __future__ import annotations

import http.client
import re
import time
import urllib.request

import pytest
from harness.publisher import publishing
from harness.server_process import ServerProcess

FINGERPRINT = ":".join(["AB"] * 32)
SILENT_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic: WMS",
        "m=video 9 UDP/TLS/RTP/SAVPF 102",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:sIlE",
        "a=ice-pwd:nobodyanswersthesechecks",
        f"a=fingerprint:sha-256 {FINGERPRINT}",
        "a=setup:actpass",
        "a=mid:0",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtpmap:102 H264/90000",
        "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:sIlE",
        "a=ice-pwd:nobodyanswersthesechecks",
        f"a=fingerprint:sha-256 {FINGERPRINT}",
        "a=setup:actpass",
        "a=mid:1",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "",
    ]
)
CONNECT_TIMEOUT = 3


@pytest.fixture
def server(ghostream_server, require_program) -> ServerProcess:
    require_program("ffmpeg")
    return ghostream_server(
        {"webrtc": {"connectTimeout": CONNECT_TIMEOUT, "maxSessionsPerHost": 2}}
    )


def post_offer(server: ServerProcess, sdp: str, source: str = "127.0.0.1") -> tuple[int, str]:
    host, port = server.web_url.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=15, source_address=(source, 0))
    try:
        connection.request(
            "POST", "/demo/whep", body=sdp.encode(), headers={"Content-Type": "application/sdp"}
        )
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def history_of(server: ServerProcess, until, timeout: float = 20.0) -> dict:
    """The stream's admin view once `until` holds of it (the history is written in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        detail = server.admin_json("/api/admin/streams/demo")
        if until(detail) or time.monotonic() > deadline:
            return detail
        time.sleep(0.2)


def webrtc_refusals(detail: dict) -> list[str]:
    return [
        e["reason"]
        for e in detail["events"]
        if e["kind"] == "rejected" and e["protocol"] == "webrtc"
    ]


def webrtc_views(detail: dict) -> list[dict]:
    return [s for s in detail["sessions"] if s.get("protocol") == "webrtc"]


def metric(server: ServerProcess, name: str) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    match = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert match, name
    return float(match[1])


def test_a_refused_offer_is_a_refusal_event_not_a_view(server) -> None:
    with publishing(server, "demo:demo"):
        status, body = post_offer(server, "v=0\r\nm=video 9 UDP\r\n")
        assert status == 400, body
        detail = history_of(server, webrtc_refusals)
    assert webrtc_refusals(detail) == ["malformed or unusable offer"]
    assert webrtc_views(detail) == []


def test_an_offer_that_never_connects_ends_within_the_bound(server) -> None:
    with publishing(server, "demo:demo"):
        start = server.line_count()
        status, answer = post_offer(server, SILENT_OFFER)
        assert status == 201, answer
        assert "a=candidate" in answer
        # Answered, not connected: no viewer, no connected session.
        assert metric(server, "ghostream_webrtc_connected_sessions") == 0
        counter = urllib.request.urlopen(f"{server.web_url}/_stats/demo/", timeout=5).read()
        assert counter == b'{"ConnectedViewers":0}'
        server.wait_for_log(
            rf"stopped watching demo over WebRTC: did not connect \(ICE and DTLS\) within "
            rf"{CONNECT_TIMEOUT} s",
            CONNECT_TIMEOUT + 10,
            start=start,
        )
        detail = history_of(server, webrtc_refusals)
    assert webrtc_refusals(detail) == [
        f"never connected: did not connect (ICE and DTLS) within {CONNECT_TIMEOUT} s"
    ]
    assert webrtc_views(detail) == []


def test_one_host_holds_a_bounded_number_of_sessions(server) -> None:
    with publishing(server, "demo:demo"):
        assert [post_offer(server, SILENT_OFFER)[0] for _ in range(2)] == [201, 201]
        refused = [post_offer(server, SILENT_OFFER) for _ in range(5)]
        assert {status for status, _ in refused} == {429}
        assert "webrtc.maxSessionsPerHost (2)" in refused[0][1]
        # Another address still gets in.
        assert post_offer(server, SILENT_OFFER, source="127.0.0.2")[0] == 201
    lines = [line for line in server.log.splitlines() if "WHEP offer for demo" in line]
    assert len(lines) == 1, lines
