"""ICE on shared ports, and the aioice/aiortc behaviour it relies on, with real aiortc peers.

If an aioice or aiortc upgrade changes what these tests see,
`ghostream/webrtc/internals.py` (the one module that reaches into
their internals) must change with it.
They run in a trio-asyncio loop, as the server does.
"""

from __future__ import annotations

import asyncio
import re
import socket
import struct

from aioice import stun
from aiortc import RTCPeerConnection, RTCSessionDescription
from harness.aio import run_asyncio

from ghostream.webrtc.icemux import IceMux

LOOPBACK = "127.0.0.1"


async def offer_from_browser() -> RTCPeerConnection:
    """An aiortc peer playing the browser: it offers to receive video and audio."""
    browser = RTCPeerConnection()
    browser.addTransceiver("video", direction="recvonly")
    browser.addTransceiver("audio", direction="recvonly")
    await browser.setLocalDescription(await browser.createOffer())
    return browser


async def answer_through(mux: IceMux, browser: RTCPeerConnection) -> RTCPeerConnection:
    """The server's side, as the WebRTC service negotiates it."""
    server = RTCPeerConnection()
    server.addTransceiver("video", direction="sendonly")
    server.addTransceiver("audio", direction="sendonly")
    await server.setRemoteDescription(browser.localDescription)
    await mux.attach(server)
    await server.setLocalDescription(await server.createAnswer())
    return server


async def connected(*pcs: RTCPeerConnection) -> None:
    async with asyncio.timeout(30):
        while any(pc.connectionState != "connected" for pc in pcs):
            await asyncio.sleep(0.05)


def check(username: str, password: str, *, priority: bool = True) -> bytes:
    """A browser's connectivity check, signed with the server's ICE password."""
    message = stun.Message(stun.Method.BINDING, stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    if priority:
        message.attributes["PRIORITY"] = 1853824767
    message.add_message_integrity(password.encode())
    return bytes(message)


def credentials(server: RTCPeerConnection, browser: RTCPeerConnection) -> tuple[str, str]:
    """The USERNAME and password of the browser's checks to the server."""
    ours, theirs = (
        re.search(rf"a=ice-{field}:(\S+)", pc.localDescription.sdp).group(1)
        for pc, field in ((server, "ufrag"), (browser, "ufrag"))
    )
    password = re.search(r"a=ice-pwd:(\S+)", server.localDescription.sdp).group(1)
    return f"{ours}:{theirs}", password


def candidates(sdp: str) -> list[list[str]]:
    return [line.split() for line in re.findall(r"a=candidate:(.*)", sdp)]


def test_peers_connect_through_one_shared_port_and_free_it() -> None:
    async def main() -> None:
        mux = IceMux([0], (LOOPBACK, 0), [LOOPBACK])
        await mux.start()
        ports = {("udp", str(p.port)) for p in mux.udp[0]} | {("tcp", str(mux.tcp.port))}
        servers, browsers = [], []
        for _ in range(3):
            browser = await offer_from_browser()
            server = await answer_through(mux, browser)
            answer = server.localDescription.sdp
            # Only the shared ports are answered: aioice gathered nothing of its own.
            assert {(c[2], c[5]) for c in candidates(answer)} <= ports
            assert any(c[2] == "tcp" and c[-1] == "passive" for c in candidates(answer))
            await browser.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            servers.append(server)
            browsers.append(browser)
        await connected(*servers, *browsers)
        assert len(mux.udp[0][0].routes) == 3 and len(mux.tcp.routes) == 3
        for pc in servers + browsers:
            await pc.close()
        for server in servers:
            mux.release(server)
        assert sum(len(p.routes) for p in mux.udp[0]) == 0 and len(mux.tcp.routes) == 0
        await mux.stop()

    run_asyncio(main)


def test_a_browser_on_ice_tcp_is_learned_from_its_first_check() -> None:
    """RFC 6544 passive: the browser's TCP address was never signalled, yet it is answered
    and checked back (aioice makes it a peer-reflexive candidate of the TCP endpoint)."""

    async def main() -> None:
        mux = IceMux([0], (LOOPBACK, 0), [LOOPBACK])
        await mux.start()
        browser = await offer_from_browser()
        server = await answer_through(mux, browser)
        reader, writer = await asyncio.open_connection(LOOPBACK, mux.tcp.port)
        first = check(*credentials(server, browser))
        writer.write(struct.pack("!H", len(first)) + first)
        seen = set()
        async with asyncio.timeout(5):
            while {0x0101, 0x0001} - seen:
                (size,) = struct.unpack("!H", await reader.readexactly(2))
                frame = await reader.readexactly(size)
                seen.add(struct.unpack_from("!H", frame)[0])
        writer.close()
        # Frames longer than a browser sends, and frames naming no session, end the connection.
        for junk in (b"\xff\xff" + bytes(100), struct.pack("!H", 20) + bytes(20)):
            reader, writer = await asyncio.open_connection(LOOPBACK, mux.tcp.port)
            writer.write(junk)
            async with asyncio.timeout(5):
                assert await reader.read() == b""
            writer.close()
        for pc in (server, browser):
            await pc.close()
        mux.release(server)
        await mux.stop()

    run_asyncio(main)


def test_what_chokes_aioice_stays_out_of_the_shared_socket() -> None:
    """aioice raises on an authenticated binding request without PRIORITY."""

    async def main() -> None:
        dropped: list[str] = []
        mux = IceMux([0], None, [LOOPBACK], dropped.append)
        await mux.start()
        browser = await offer_from_browser()
        server = await answer_through(mux, browser)
        await browser.setRemoteDescription(server.localDescription)
        await connected(server, browser)
        malformed = check(*credentials(server, browser), priority=False)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(malformed, (LOOPBACK, mux.udp[0][0].port))
            async with asyncio.timeout(5):
                while "refused_by_session" not in dropped:
                    await asyncio.sleep(0.05)
        assert server.connectionState == "connected"
        for pc in (server, browser):
            await pc.close()
        mux.release(server)
        await mux.stop()

    run_asyncio(main)


def test_a_stun_server_tells_each_port_its_public_address() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        class StunServer(asyncio.DatagramProtocol):
            def connection_made(self, transport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr) -> None:
                asked = stun.parse_message(data)
                reply = stun.Message(
                    stun.Method.BINDING, stun.Class.RESPONSE, transaction_id=asked.transaction_id
                )
                reply.attributes["XOR-MAPPED-ADDRESS"] = ("203.0.113.9", 40000)
                self.transport.sendto(bytes(reply), addr)

        server_transport, _ = await loop.create_datagram_endpoint(
            StunServer, local_addr=(LOOPBACK, 0)
        )
        stun_port = server_transport.get_extra_info("sockname")[1]
        mux = IceMux([0], None, [LOOPBACK])
        await mux.start()
        await mux.discover(f"stun:{LOOPBACK}:{stun_port}")
        assert mux.udp[0][0].reflexive == ("203.0.113.9", 40000)
        assert len(mux.udp[0][0].routes) == 0  # the probe is gone
        browser = await offer_from_browser()
        server = await answer_through(mux, browser)
        assert ["203.0.113.9", "40000", "typ", "srflx"] == next(
            c[4:8] for c in candidates(server.localDescription.sdp) if c[7] == "srflx"
        )
        await mux.discover("turn:nothing")  # not a STUN URL: said, and ignored
        for pc in (server, browser):
            await pc.close()
        mux.release(server)
        await mux.stop()
        server_transport.close()

    run_asyncio(main)
