"""Nothing a client sends can grow without bound: bodies, headers, stream ids, handshakes."""

from __future__ import annotations

import select
import socket
from pathlib import Path

import pytest
import trio
from harness.server_process import ServerProcess

from ghostream.srt.endpoint import MAX_PENDING_PER_HOST, Reject, SrtListener, SrtRejected, connect
from ghostream.srt.packet import RejectReason

CHUNK = 64 * 1024
PULL_KEY = "an-edge-key-for-tests"
TEN_MB = 10 * 1024 * 1024


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def whep_request(server: ServerProcess, headers: str) -> socket.socket:
    host, port = server.web_url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(
        f"POST /demo/whep HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/sdp\r\n"
        f"{headers}\r\n".encode()
    )
    return sock


def status_of(sock: socket.socket) -> int:
    answer = b""
    while b"\r\n" not in answer:
        chunk = sock.recv(4096)
        assert chunk, answer
        answer += chunk
    return int(answer.split(b" ", 2)[1])


@pytest.fixture
def server(ghostream_server) -> ServerProcess:
    return ghostream_server()


def test_a_streamed_ten_megabyte_offer_is_refused_early(server: ServerProcess) -> None:
    with whep_request(server, "Content-Length: 100\r\n") as warm_up:
        warm_up.sendall(b"v=0\r\n" * 20)
        status_of(warm_up)
    before = rss_kib(server.process.pid)
    with whep_request(server, "Transfer-Encoding: chunked\r\n") as sock:
        sent = 0
        chunk = f"{CHUNK:x}\r\n".encode() + b"a" * CHUNK + b"\r\n"
        while sent < TEN_MB and not select.select([sock], [], [], 0)[0]:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += CHUNK
        assert status_of(sock) == 413
    assert rss_kib(server.process.pid) - before < 4 * 1024


def test_a_declared_ten_megabyte_offer_is_refused_before_it_is_sent(server) -> None:
    with whep_request(server, f"Content-Length: {TEN_MB}\r\n") as sock:
        assert status_of(sock) == 413


def test_too_many_headers_are_refused(server: ServerProcess) -> None:
    many = "".join(f"X-Filler-{n}: {n}\r\n" for n in range(200))
    with whep_request(server, many + "Content-Length: 0\r\n") as sock:
        assert status_of(sock) == 431


def test_a_header_block_past_16_kib_is_refused(server: ServerProcess) -> None:
    """One long header, not many: the server stops reading an unfinished block at 16 KiB."""
    host, port = server.web_url.removeprefix("http://").rsplit(":", 1)

    def unfinished(size: int) -> socket.socket:
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Filler: ".encode())
        sock.sendall(b"a" * size)
        return sock

    with unfinished(12 * 1024) as sock:
        sock.sendall(b"\r\n\r\n")
        assert status_of(sock) == 200
    # Refused without waiting for the rest (which never comes).
    with unfinished(20 * 1024) as sock:
        assert status_of(sock) in (400, 431)


async def test_one_host_cannot_hold_every_srt_slot() -> None:
    """Handshakes held undecided from one host leave room for others; maxClients counts
    established connections only."""
    release = trio.Event()
    held = []

    async def accept(request):
        if request.stream_id == "hold":
            held.append(request)
            await release.wait()
            return Reject(RejectReason.FORBIDDEN)
        return serve

    async def serve(sock) -> None:
        await trio.sleep_forever()

    listener = SrtListener("127.0.0.1", 0, accept, max_clients=1)
    outcomes: list[int | str] = []

    async def attempt(local_host: str, streamid: str) -> None:
        try:
            async with connect(
                "127.0.0.1", listener.address[1], streamid=streamid, local_host=local_host
            ):
                outcomes.append("connected")
                await trio.sleep_forever()
        except SrtRejected as exc:
            outcomes.append(exc.code)

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(listener.serve)
            for _ in range(MAX_PENDING_PER_HOST + 2):
                nursery.start_soon(attempt, "127.0.0.1", "hold")
            while len(held) < MAX_PENDING_PER_HOST or len(outcomes) < 2:
                await trio.sleep(0.01)
            assert outcomes == [RejectReason.OVERLOAD] * 2
            nursery.start_soon(attempt, "127.0.0.2", "ok")
            while len(outcomes) < 3:
                await trio.sleep(0.01)
            assert outcomes[2] == "connected"
            # The one slot is taken now: a third host is refused for room.
            nursery.start_soon(attempt, "127.0.0.3", "ok")
            while len(outcomes) < 4:
                await trio.sleep(0.01)
            assert outcomes[3] == RejectReason.OVERLOAD
            assert len(held) == MAX_PENDING_PER_HOST
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/demo/whep", "Content-Type: application/sdp\r\n"),
        ("/_edges/viewers", f"Authorization: Bearer {PULL_KEY}\r\n"),
    ],
)
def test_a_chunked_body_over_its_limit_is_answered_at_once_and_the_connection_closed(
    ghostream_server, path: str, headers: str
) -> None:
    """The client sends past the limit and waits: it hears 413 and the end, not silence."""
    server = ghostream_server({"srt": {"pullKeys": [PULL_KEY]}})
    host, port = server.web_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
            f"{headers}\r\n".encode()
        )
        chunk = f"{CHUNK:x}\r\n".encode() + b"a" * CHUNK + b"\r\n"
        sock.sendall(chunk * 2)
        answer = b""
        while received := sock.recv(4096):
            answer += received
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 413"), answer
    assert b"\r\nconnection: close" in head, answer
