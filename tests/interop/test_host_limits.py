"""One host cannot keep everyone else out: per-host limits on SRT, WebRTC and telnet.

The hostile host is 127.0.0.2; real viewers (ffmpeg, browsers' offers,
telnet) come from 127.0.0.1.  Its SRT connections are our own sans-IO
caller driven by hand: it completes the handshake, then never says a word.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
from contextlib import closing
from functools import partial

import httpx
import pytest
import trio
from harness.publisher import publishing
from harness.server_process import ServerProcess, free_port

from ghostream.audience import PAGES_PER_HOST
from ghostream.srt.connection import Connection, ConnectionRejected, State

FLOODER = "127.0.0.2"
PER_HOST = 8
VIEWERS = 3
# The publisher, the real viewers, and the flooder's share: nothing to spare.
MAX_CLIENTS = 1 + VIEWERS + PER_HOST
PART = re.compile(r'URI="(part-[0-9a-f]+-\d+-\d+\.m4s)"')


@pytest.fixture
def server(ghostream_server, require_program) -> ServerProcess:
    require_program("ffmpeg")
    return ghostream_server({"srt": {"maxClients": MAX_CLIENTS, "maxClientsPerHost": PER_HOST}})


async def silent_caller(port: int, streamid: str, sockets: list) -> int | None:
    """Complete an SRT handshake from the flooder's address and then stay silent.

    None when connected, else the listener's reject code.  The socket stays
    open (in `sockets`): a silent peer, not a vanished one.
    """
    udp = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sockets.append(udp)
    await udp.bind((FLOODER, 0))
    connection = Connection.caller(now=trio.current_time(), stream_id=streamid)
    rejected = None
    with trio.fail_after(10):
        while connection.state is State.CONNECTING:
            for datagram in connection.datagrams_to_send():
                await udp.sendto(datagram, ("127.0.0.1", port))
            with trio.move_on_at(connection.get_timer() or trio.current_time()):
                data = await udp.recv(2048)
                connection.receive_datagram(data, trio.current_time())
            connection.handle_timer(trio.current_time())
            while (event := connection.next_event()) is not None:
                if isinstance(event, ConnectionRejected):
                    rejected = event.code
    return rejected


async def test_silent_srt_connections_from_one_host_leave_room_for_viewers(server) -> None:
    outcomes: list[int | None] = []
    sockets: list = []

    async def flood() -> None:
        while True:
            async with trio.open_nursery() as nursery:
                for _ in range(4 * PER_HOST):

                    async def one() -> None:
                        outcomes.append(await silent_caller(server.srt_port, "demo", sockets))

                    nursery.start_soon(one)
            await trio.sleep(0.5)

    async def watch() -> subprocess.CompletedProcess:
        return await trio.run_process(
            ["ffmpeg", "-v", "error", "-i", server.srt_url("demo"), "-t", "2", "-f", "null", "-"],
            capture_stderr=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    with publishing(server, "demo:demo"):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            with trio.fail_after(30):
                while outcomes.count(1402) < PER_HOST:
                    await trio.sleep(0.05)
            results: list[subprocess.CompletedProcess] = []

            async def viewer() -> None:
                results.append(await watch())

            async with trio.open_nursery() as viewers:
                for _ in range(VIEWERS):
                    viewers.start_soon(viewer)
            # The flooder's connections end for their silence, and it takes new ones.
            server.wait_for_log(
                rf"{FLOODER}:\d+ stopped watching demo: nothing from the peer after the handshake"
            )
            nursery.cancel_scope.cancel()
    for udp in sockets:
        udp.close()
    for result in results:
        assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert outcomes.count(None) > PER_HOST
    # Refused again and again, the host is reported once.
    refusals = [line for line in server.log.splitlines() if f"from {FLOODER}:" in line]
    assert len(refusals) == 1, refusals


def test_telnet_connections_per_host_are_bounded(ghostream_server) -> None:
    port = free_port()
    server = ghostream_server(
        {
            "telnet": {
                "enabled": True,
                "listenAddress": f"127.0.0.1:{port}",
                "maxClientsPerHost": 2,
            },
            "transcoder": {"text": {"enabled": True}},
        }
    )
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        for sock in held:
            assert read_until(sock, b"Enter stream name: ")
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as refused:
                assert b"Too many viewers" in read_until(refused, b"later.\r\n")
        # Another host still gets the prompt.
        with socket.create_connection(
            ("127.0.0.1", port), timeout=10, source_address=(FLOODER, 0)
        ) as other:
            assert read_until(other, b"Enter stream name: ")
    finally:
        for sock in held:
            sock.close()
    refusals = [line for line in server.log.splitlines() if "telnet client" in line]
    assert len(refusals) == 1 and "telnet.maxClientsPerHost (2)" in refusals[0], refusals
    server.stop()
    assert history_refusals(server) == [("telnet", refusals[0].partition("refused: ")[2])]


def history_refusals(server: ServerProcess) -> list[tuple[str, str]]:
    """Protocol and reason of every refusal in the history, oldest first."""
    with closing(sqlite3.connect(server.history_path)) as db:
        rows = db.execute("SELECT protocol, reason FROM events WHERE kind = 'rejected' ORDER BY id")
        return list(rows)


def read_until(sock: socket.socket, end: bytes) -> bytes:
    """What the server sends up to and including `end`; fails if the connection ends first."""
    received = b""
    while end not in received:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    return received


async def test_made_up_page_ids_from_one_host_do_not_inflate_the_count(server) -> None:
    """Thousands of ids from one host, on the counter and on LL-HLS media, add a few at most."""
    counter = f"{server.web_url}/_stats/demo/"
    flooder = httpx.AsyncHTTPTransport(local_address=FLOODER)
    with publishing(server, "demo:demo"):
        async with (
            httpx.AsyncClient(transport=flooder, timeout=15) as hostile,
            httpx.AsyncClient(timeout=15) as client,
            trio.open_nursery() as nursery,
        ):
            for _ in range(VIEWERS):
                nursery.start_soon(
                    partial(trio.run_process, srt_viewer(server), stdin=subprocess.DEVNULL)
                )
            with trio.fail_after(20):
                while (await client.get(counter)).json()["ConnectedViewers"] < VIEWERS:
                    await trio.sleep(0.2)
            for number in range(3000):
                await hostile.get(counter, params={"uid": f"made-up-{number}"})
            with trio.fail_after(30):
                media = (await hostile.get(f"{server.web_url}/demo/media.m3u8")).text
                while not (parts := PART.findall(media)):
                    media = (await hostile.get(f"{server.web_url}/demo/media.m3u8")).text
            for number in range(300):
                header = {"x-ghostream-viewer": f"made-up-media-{number}"}
                fetched = await hostile.get(f"{server.web_url}/demo/{parts[-1]}", headers=header)
                assert fetched.status_code == 200
            count = (await client.get(counter)).json()["ConnectedViewers"]
            nursery.cancel_scope.cancel()
    # The real viewers, the host's few pages, and its other media fetches as one.
    assert VIEWERS <= count <= VIEWERS + 2 * PAGES_PER_HOST + 1, count
    server.stop()
    with closing(sqlite3.connect(server.history_path)) as db:
        views = db.execute(
            "SELECT COUNT(*) FROM sessions WHERE protocol = 'llhls' AND peer LIKE ?",
            (f"{FLOODER}:%",),
        ).fetchone()[0]
    assert views <= PAGES_PER_HOST + 1, views


def srt_viewer(server: ServerProcess) -> list[str]:
    return ["ffmpeg", "-v", "error", "-i", server.srt_url("demo"), "-f", "null", "-"]


async def test_behind_a_trusted_proxy_each_forwarded_client_is_its_own_host(
    ghostream_server,
) -> None:
    """Pages through the proxy (127.0.0.1) count per client; a client's own header is ignored."""
    server = ghostream_server({"web": {"trustedProxies": ["127.0.0.1"]}})
    counter = f"{server.web_url}/_stats/demo/"
    clients = 2 * PAGES_PER_HOST
    async with httpx.AsyncClient(timeout=15) as proxy:
        for number in range(clients):
            forwarded = {"X-Forwarded-For": f"10.9.9.9, 198.51.100.{number + 1}"}
            await proxy.get(counter, params={"uid": f"page-{number}"}, headers=forwarded)
        assert (await proxy.get(counter)).json()["ConnectedViewers"] == clients
    transport = httpx.AsyncHTTPTransport(local_address=FLOODER)
    async with httpx.AsyncClient(transport=transport, timeout=15) as direct:
        for number in range(clients):
            forwarded = {"X-Forwarded-For": f"203.0.113.{number + 1}"}
            await direct.get(counter, params={"uid": f"spoof-{number}"}, headers=forwarded)
        assert (await direct.get(counter)).json()["ConnectedViewers"] == clients + PAGES_PER_HOST
