"""Every session's ICE on the server's shared ports.

aioice opens sockets of its own for each peer connection.  Here a peer
connection's aioice `Connection` is instead handed, before it gathers,
endpoints on the server's shared sockets: one per UDP port of the range and
one on the ICE-TCP port (RFC 6544 passive, RFC 4571 framing).  Incoming
datagrams reach the right endpoint through `IceRoutes`.  What this needs of
aioice's internals goes through `internals`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
import struct
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from aioice.candidate import Candidate, candidate_foundation, candidate_priority
from aiortc import RTCPeerConnection

from ghostream.udp_batch import Datagrams
from ghostream.webrtc import internals
from ghostream.webrtc.internals import StunProtocol
from ghostream.webrtc.routes import Address, IceRoutes

log = logging.getLogger(__name__)

# Kernel receive buffer of a shared UDP socket: it carries every session's packets.
UDP_RECEIVE_BUFFER = 4 * 1024 * 1024
# A TCP connection must prove it belongs to a session this soon, and so many may wait.
TCP_HANDSHAKE_TIMEOUT = 10.0
MAX_TCP_WAITING = 1024
# A browser sends STUN, DTLS and RTCP: small packets.  A longer frame closes the connection,
# so that what one waits for stays small.
MAX_TCP_FRAME = 8192
# Bytes queued on a slow TCP viewer beyond which packets are dropped, as UDP would.
TCP_SEND_BUFFER = 1024 * 1024
# ICE-TCP candidates rank below UDP (RFC 6544 section 4.2), so UDP wins when both work.
TCP_LOCAL_PREFERENCE = 8191
# How long a STUN server may take to tell a shared port's public address.
STUN_TIMEOUT = 10.0

Drop = Callable[[str], None]


class Endpoint(asyncio.DatagramTransport):
    """A session's piece of a shared port; aioice takes it for a socket of its own."""

    protocol: StunProtocol

    def __init__(self, port: UdpPort | TcpPort) -> None:
        super().__init__()
        self._port = port
        self._closed = False

    def sendto(self, data: bytes, addr: Any = None) -> None:
        if not self._closed:
            self._port.send(self.protocol, data, addr[:2])

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._port.detach(self.protocol)
            self.protocol.connection_lost(None)

    def abort(self) -> None:
        self.close()


class UdpPort(asyncio.DatagramProtocol):
    """One UDP socket of the range, shared by every session given it.

    What the sessions send in one turn of the event loop goes out together
    at its end (`Datagrams`): a video frame's RTP packets to one browser
    as one GSO message, several browsers' in one `sendmmsg`, rather than a
    system call per packet.
    """

    def __init__(self, on_drop: Drop, sock: socket.socket) -> None:
        self.routes: IceRoutes[StunProtocol] = IceRoutes(on_drop)
        self.transport: asyncio.DatagramTransport | None = None
        # This socket's address and port as a STUN server saw them (a NAT's outside).
        self.reflexive: Address | None = None
        self._datagrams = Datagrams(sock)
        self._outgoing: list[tuple[bytes, Address]] = []

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        address = (addr[0], addr[1])
        target = self.routes.route(data, address)
        if target is not None:
            _deliver(target, data, address, self.routes)

    def error_received(self, exc: Exception) -> None:
        """ICMP errors of one browser's path must not touch the others."""

    def send(self, protocol: StunProtocol, data: bytes, addr: Address) -> None:
        self.routes.sent(protocol, data, addr)
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append((data, addr))

    def _flush(self) -> None:
        assert self.transport is not None
        outgoing, self._outgoing = self._outgoing, []
        if self.transport.is_closing():
            return
        try:
            sent = self._datagrams.send(outgoing)
        except BlockingIOError:
            sent = 0
        # The transport queues what the kernel has no room for, until it has.
        for data, addr in outgoing[sent:]:
            self.transport.sendto(data, addr)

    def detach(self, protocol: StunProtocol) -> None:
        self.routes.remove(protocol)


class TcpPort:
    """The ICE-TCP listening port: each browser connection carries one session's frames."""

    def __init__(self, host: str, on_drop: Drop) -> None:
        self.host = host
        self.routes: IceRoutes[StunProtocol] = IceRoutes(on_drop)
        self.connections: dict[Address, TcpConnection] = {}
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    def send(self, protocol: StunProtocol, data: bytes, addr: Address) -> None:
        connection = self.connections.get(addr)
        # Checks aioice sends to a browser's `tcptype active` candidates go nowhere: those
        # browsers connect to us.
        if connection is not None and connection.owner is protocol:
            self.routes.sent(protocol, data, addr)
            connection.send_frame(data)

    def detach(self, protocol: StunProtocol) -> None:
        self.routes.remove(protocol)
        for connection in [c for c in self.connections.values() if c.owner is protocol]:
            connection.close()

    def frame_received(self, connection: TcpConnection, frame: bytes) -> None:
        target = self.routes.route(frame, connection.peer)
        if target is None:
            if connection.owner is None:
                connection.close()
            return
        connection.owner = target
        _deliver(target, frame, connection.peer, self.routes)

    def lost(self, connection: TcpConnection) -> None:
        if self.connections.get(connection.peer) is connection:
            del self.connections[connection.peer]
            self.routes.forget(connection.peer)


class TcpConnection(asyncio.Protocol):
    """One browser's ICE-TCP connection, framed by RFC 4571 (a 16-bit length per packet)."""

    def __init__(self, port: TcpPort) -> None:
        self._port = port
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer: Address = ("", 0)
        self.owner: StunProtocol | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        waiting = sum(1 for c in self._port.connections.values() if c.owner is None)
        if waiting >= MAX_TCP_WAITING:
            transport.close()
            return
        self._port.connections[self.peer] = self
        asyncio.get_running_loop().call_later(TCP_HANDSHAKE_TIMEOUT, self._expire)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        start = 0
        while len(buffer) - start >= 2:
            (size,) = struct.unpack_from("!H", buffer, start)
            if size > MAX_TCP_FRAME:
                self.close()
                return
            if len(buffer) - start - 2 < size:
                break
            frame = bytes(buffer[start + 2 : start + 2 + size])
            start += 2 + size
            self._port.frame_received(self, frame)
            if self.transport is None or self.transport.is_closing():
                return
        del buffer[:start]

    def connection_lost(self, exc: Exception | None) -> None:
        self._port.lost(self)

    def send_frame(self, data: bytes) -> None:
        assert self.transport is not None
        if self.transport.get_write_buffer_size() > TCP_SEND_BUFFER:
            return
        self.transport.write(struct.pack("!H", len(data)) + data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def _expire(self) -> None:
        if self.owner is None:
            self.close()


class IceMux:
    """The server's shared ICE ports, and each peer connection's endpoints on them.

    `public_ips` are announced in candidates before the interfaces' own
    addresses, for servers behind NAT or in a container.
    """

    def __init__(
        self,
        udp_ports: Iterable[int],
        tcp_address: tuple[str, int] | None,
        public_ips: Iterable[str] = (),
        on_drop: Drop = lambda reason: None,
    ) -> None:
        self._udp_wanted = list(udp_ports)
        self._tcp_address = tcp_address
        self._public_ips = list(public_ips)
        self._on_drop = on_drop
        # Per port of the range: its IPv4 socket, then its IPv6 one when the host has IPv6.
        self.udp: list[list[UdpPort]] = []
        self.tcp: TcpPort | None = None
        self._turn = itertools.count()
        self._endpoints: dict[RTCPeerConnection, list[Endpoint]] = {}

    @property
    def ready(self) -> bool:
        return bool(self.udp or self.tcp)

    async def start(self) -> None:
        """Bind the shared sockets; a port already in use is skipped with a warning."""
        loop = asyncio.get_running_loop()
        for number in self._udp_wanted:
            bound = []
            for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
                sock = _udp_socket(family, host, number)
                if sock is None:
                    continue
                _, port = await loop.create_datagram_endpoint(
                    partial(UdpPort, self._on_drop, sock), sock=sock
                )
                bound.append(port)
            if bound:
                self.udp.append(bound)
            else:
                log.warning("WebRTC UDP port %d is in use by another program; skipped", number)
        if not self.udp:
            log.error("no WebRTC UDP port of %s could be opened", self._udp_wanted)
        if self._tcp_address is not None:
            host, number = self._tcp_address
            tcp = TcpPort(host, self._on_drop)
            try:
                tcp.server = await loop.create_server(
                    lambda: TcpConnection(tcp), host or None, number
                )
            except OSError as exc:
                log.error("ICE-TCP port %s:%d cannot be opened: %s", host, number, exc.strerror)
            else:
                self.tcp = tcp

    async def stop(self) -> None:
        for family_ports in self.udp:
            for port in family_ports:
                assert port.transport is not None
                port.transport.close()
        self.udp.clear()
        if self.tcp is not None and self.tcp.server is not None:
            self.tcp.server.close()
            for connection in list(self.tcp.connections.values()):
                connection.close()
            self.tcp = None

    async def discover(self, stun_url: str) -> None:
        """Ask a STUN server each IPv4 port's public address, to announce it as well."""
        try:
            server = internals.stun_server(stun_url)
        except ValueError as exc:
            log.warning("webrtc.STUNServers: %r is not a STUN URL (%s); not used", stun_url, exc)
            return
        hosts = [*self._public_ips, *internals.host_addresses(ipv6=False)]
        ports = [p for family_ports in self.udp for p in family_ports if _fits(p, "0.0.0.0")]
        if not hosts:
            return
        found = await asyncio.gather(
            *(self._reflexive(port, hosts[0], server) for port in ports), return_exceptions=True
        )
        for port, result in zip(ports, found, strict=True):
            if isinstance(result, BaseException):
                log.warning(
                    "STUN server %s did not tell the public address of WebRTC port %d (%s); "
                    "behind NAT, set webrtc.publicIPs",
                    stun_url,
                    port.port,
                    result.__class__.__name__,
                )
            else:
                port.reflexive = result
                log.info("WebRTC port %d is reached at %s:%d", port.port, *result)

    async def _reflexive(self, port: UdpPort, host: str, server: Address) -> Address:
        # A probe with no ICE agent behind it: only the STUN server's reply is routed to it.
        endpoint = Endpoint(port)
        probe = internals.new_protocol(None, endpoint, _candidate(port, host))
        endpoint.protocol = probe
        port.routes.add(f"stun-{id(probe)}", "", probe)
        try:
            async with asyncio.timeout(STUN_TIMEOUT):
                return await internals.public_address(probe, server)
        finally:
            port.detach(probe)

    async def attach(self, pc: RTCPeerConnection) -> None:
        """Give a peer connection's ICE agent endpoints on the shared ports, before it gathers.

        Call after setRemoteDescription (bundling has left one ICE transport)
        and before setLocalDescription (which gathers).  ValueError when the
        offer did not bundle its media.
        """
        connection = internals.bundled_connection(pc)
        endpoints = self._endpoints.setdefault(pc, [])
        hosts = [*self._public_ips, *internals.host_addresses()]
        ports: list[UdpPort | TcpPort] = []
        if self.udp:
            ports += self.udp[next(self._turn) % len(self.udp)]
        if self.tcp is not None:
            ports.append(self.tcp)
        protocols, candidates = [], []
        for port in ports:
            if isinstance(port, TcpPort) and port.host:
                hosts = [*self._public_ips, port.host]
            announced = [_candidate(port, host) for host in hosts if _fits(port, host)]
            if not announced:
                continue
            if isinstance(port, UdpPort) and port.reflexive is not None:
                announced.append(_reflexive_candidate(port.reflexive, announced[0]))
            endpoint = Endpoint(port)
            endpoint.protocol = internals.new_protocol(connection, endpoint, announced[0])
            port.routes.add(connection.local_username, connection.local_password, endpoint.protocol)
            endpoints.append(endpoint)
            protocols.append(endpoint.protocol)
            candidates += announced
        internals.adopt(connection, protocols, candidates)

    def release(self, pc: RTCPeerConnection) -> None:
        """Free a peer connection's routes, even if aiortc did not close it."""
        for endpoint in self._endpoints.pop(pc, []):
            endpoint.close()


def _deliver(target: StunProtocol, data: bytes, address: Address, routes: IceRoutes) -> None:
    """Hand a datagram to its session; what it chokes on must not reach the shared socket.

    aioice raises on some authenticated but malformed requests (a binding
    request without PRIORITY); on a shared socket that would stop every
    session's traffic, so it is dropped and counted like other refused input.
    """
    try:
        target.datagram_received(data, address)
    except Exception as exc:  # noqa: BLE001 - any session's failure stays in that session
        log.debug("datagram from %s refused by its session: %r", address, exc)
        routes.refused()


def _udp_socket(family: int, host: str, number: int) -> socket.socket | None:
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM)
    except OSError:
        return None
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
        sock.bind((host, number))
    except OSError:
        sock.close()
        return None
    sock.setblocking(False)
    return sock


def _fits(port: UdpPort | TcpPort, host: str) -> bool:
    """Whether a browser can reach `host` on this socket (same address family)."""
    version = ipaddress.ip_address(host.split("%")[0]).version
    if isinstance(port, TcpPort):
        assert port.server is not None
        families = {s.family for s in port.server.sockets}
    else:
        assert port.transport is not None
        families = {port.transport.get_extra_info("socket").family}
    return (socket.AF_INET6 if version == 6 else socket.AF_INET) in families


def _reflexive_candidate(address: Address, base: Candidate) -> Candidate:
    return Candidate(
        foundation=candidate_foundation("srflx", "udp", base.host),
        component=1,
        transport="udp",
        priority=candidate_priority(1, "srflx"),
        host=address[0],
        port=address[1],
        type="srflx",
        related_address=base.host,
        related_port=base.port,
    )


def _candidate(port: UdpPort | TcpPort, host: str) -> Candidate:
    if isinstance(port, TcpPort):
        return Candidate(
            foundation=candidate_foundation("host", "tcp", host),
            component=1,
            transport="tcp",
            priority=candidate_priority(1, "host", TCP_LOCAL_PREFERENCE),
            host=host,
            port=port.port,
            type="host",
            tcptype="passive",
        )
    return Candidate(
        foundation=candidate_foundation("host", "udp", host),
        component=1,
        transport="udp",
        priority=candidate_priority(1, "host"),
        host=host,
        port=port.port,
        type="host",
    )
