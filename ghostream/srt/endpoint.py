"""Trio driver for the sans-IO SRT core: sockets, timers and the public API.

`SrtSocket` is what the rest of the server sees of one connection:
`send(message)`, `receive()`, `aclose()`.  `SrtListener` owns one UDP socket
and routes each datagram by destination socket id, so any number of
connections share a port, as with libsrt.  `connect()` is the caller side.

The connection's own task only sleeps until the core's next timer; incoming
datagrams are fed synchronously by whoever reads the UDP socket and wake that
task when they bring its deadline forward.

The data path avoids Trio wake-ups, which cost more than a datagram's protocol
work (a wake-up alone is ~25 us; a 20 Mbit/s stream brings ~1900 datagrams/s
and as many play times): the socket is read until empty on each wake-up, a
connection's timers run at most once per `TIMER_TICK`, and datagrams go out
with non-blocking sends that only wait when the kernel's buffer is full.
Reading is not held back the same way: a NAK is answered as soon as it comes,
since a late retransmission is a lost packet at the viewer.
"""

from __future__ import annotations

import logging
import os
import socket as stdlib_socket
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from ghostream.exceptiongroups import sole_error
from ghostream.peers import source_host
from ghostream.per_host import HostSlots, OncePerHost, unsaid
from ghostream.srt.connection import (
    Connected,
    Connection,
    ConnectionClosed,
    ConnectionRejected,
    DataReceived,
    State,
)
from ghostream.srt.crypto import CryptoError
from ghostream.srt.handshake import ConnectionRequest, ListenerHandshake
from ghostream.srt.packet import (
    HEADER_SIZE,
    ControlPacket,
    ControlType,
    PacketError,
    RejectReason,
    parse_packet,
    reject_reason_name,
)
from ghostream.srt.steering import Steering
from ghostream.udp_batch import datagrams_of

log = logging.getLogger(__name__)

# Enough for a few seconds of a high-bitrate stream the application is slow to read.
INBOX_LIMIT = 4096
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
SEND_BUFFER_BYTES = 4 * 1024 * 1024
MAX_DATAGRAM = 2048
# Datagrams read per wake-up before other tasks get a turn.
RECEIVE_BATCH = 256
# A connection's timers run once per tick, at most.
TIMER_TICK = 0.010
# Packets sent and not yet acknowledged before `send` waits for ACKs.  A viewer
# joins with a burst (the GOP cache: 2 s of 20 Mbit/s is 3800 packets) that
# would otherwise all be held at once; 1024 still carries 20 Mbit/s over a
# 500 ms round trip.
SEND_WINDOW = 1024
# Control type 0 (handshake) in the first two bytes of a control packet.
_HANDSHAKE_START = b"\x80\x00"
# Handshakes waiting for a decision (authentication, a throttled refusal): per
# sending host, so that one host cannot hold every slot, and in all.
MAX_PENDING_PER_HOST = 4
MAX_PENDING = 256
# Established connections per sending host, unless the listener is told otherwise.
MAX_CLIENTS_PER_HOST = 8


class SrtError(Exception):
    """Base of what the SRT API raises."""


class SrtClosed(SrtError):
    """The connection ended; `reason` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SrtRejected(SrtError):
    """The listener refused us; `code` is the reject reason (1403 = forbidden...)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"connection rejected: {reject_reason_name(code)} ({code})")
        self.code = code


@dataclass(frozen=True, slots=True)
class Reject:
    code: int
    reason: str = ""


Handler = Callable[["SrtSocket"], Awaitable[None]]
AcceptCallback = Callable[[ConnectionRequest], Awaitable["Handler | Reject"]]
OverloadCallback = Callable[[ConnectionRequest, str], None]


class SrtSocket:
    def __init__(
        self,
        connection: Connection,
        udp: stdlib_socket.socket,
        peer: tuple,
        stream_id: str = "",
    ) -> None:
        self.connection = connection
        self.peer = peer
        self.stream_id = stream_id
        # Non-blocking, shared by every connection of a listener.
        self._udp = udp
        self._datagrams = datagrams_of(udp)
        self._inbox: deque[bytes] = deque()
        self._readable = trio.Event()
        self._wakeup = trio.Event()
        self._deadline = float("inf")
        self._closed_reason: str | None = None
        self._rejected: int | None = None
        self.connected = trio.Event()
        self.inbox_overflows = 0
        # Who waits for ACKs: (unacknowledged packets it waits for, its event).
        self._acked: tuple[int, trio.Event] | None = None

    @property
    def closed_reason(self) -> str | None:
        return self._closed_reason

    @property
    def rejection(self) -> int | None:
        """The reject reason, when the listener refused our handshake."""
        return self._rejected

    async def send(self, message: bytes | memoryview) -> None:
        await self.send_many((message,))

    async def send_many(self, messages: Iterable[bytes | memoryview]) -> None:
        """Send messages in order, in as few system calls as the window allows."""
        now = trio.current_time()
        for message in messages:
            if self.connection.unacknowledged >= SEND_WINDOW:
                await self.flush()
                await self._until_unacknowledged(SEND_WINDOW - 1)
                now = trio.current_time()
            if self._closed_reason is not None:
                raise SrtClosed(self._closed_reason)
            self.connection.send(message, now)
        await self.flush()

    async def receive(self) -> bytes:
        """The next message; raises SrtClosed once the peer is gone and all is read."""
        while not self._inbox:
            if self._closed_reason is not None:
                raise SrtClosed(self._closed_reason)
            self._readable = trio.Event()
            await self._readable.wait()
        return self._inbox.popleft()

    async def drain(self) -> None:
        """Wait until the peer acknowledged (or the sender gave up on) all sent data.

        Live SRT does not linger on close, so a sender that must not lose its
        last packets drains before closing.
        """
        await self._until_unacknowledged(0)

    async def _until_unacknowledged(self, at_most: int) -> None:
        while self.connection.unacknowledged > at_most and self._closed_reason is None:
            event = trio.Event()
            self._acked = (at_most, event)
            await event.wait()

    async def aclose(self) -> None:
        if self.connection.state is not State.CLOSED:
            self.connection.close(trio.current_time())
            self._process_events()
            with trio.CancelScope(shield=True):
                await self.flush()

    def feed(self, datagram: bytes, now: float) -> None:
        """Hand the connection a datagram from its peer; `settle` once the batch is fed."""
        self.connection.receive_datagram(datagram, now)

    def settle(self) -> None:
        """Take in what a batch of fed datagrams brought: its events, and any earlier timer."""
        self._process_events()
        timer = self.connection.get_timer()
        if timer is None or timer < self._deadline:
            self._wakeup.set()

    async def flush(self) -> None:
        """Send what the connection has to send, waiting only while the kernel is full."""
        datagrams = self.connection.datagrams_to_send()
        while datagrams:
            try:
                del datagrams[: self._datagrams.send_to(self.peer, datagrams)]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._udp)

    def flush_nowait(self) -> None:
        """Send what the connection has to send; what the kernel refuses is lost.

        For the receive loop, which must not wait on one peer: what it sends
        is ACKs, NAKs and retransmissions, which the protocol repeats.
        """
        datagrams = self.connection.datagrams_to_send()
        if datagrams:
            try:
                self._datagrams.send_to(self.peer, datagrams)
            except BlockingIOError:
                log.debug("send to %s dropped: socket buffer full", self.peer)

    async def drive(self) -> None:
        """Run the connection's timers until it closes, at most once per tick.

        Every buffered packet's play time is a timer: at 20 Mbit/s one
        every half millisecond.  Waking for each would cost more than
        delivering them, so what falls due within a tick (the full ACK
        period) is handled together.
        """
        last_run = float("-inf")
        while True:
            deadline = self.connection.get_timer()
            if deadline is None:
                return
            tick = min(TIMER_TICK, self.connection.recv_latency / 12)
            self._deadline = deadline
            self._wakeup = trio.Event()
            with trio.move_on_at(max(deadline, last_run + tick)):
                await self._wakeup.wait()
            self._deadline = float("inf")
            now = trio.current_time()
            if now >= deadline:
                self.connection.handle_timer(now)
                self._process_events()
                last_run = now
            await self.flush()

    def _process_events(self) -> None:
        if self._acked is not None and (
            self.connection.unacknowledged <= self._acked[0]
            or self.connection.state is State.CLOSED
        ):
            self._acked[1].set()
            self._acked = None
        while (event := self.connection.next_event()) is not None:
            if isinstance(event, DataReceived):
                if len(self._inbox) >= INBOX_LIMIT:
                    self._inbox.popleft()
                    self.inbox_overflows += 1
                self._inbox.append(event.payload)
                self._readable.set()
            elif isinstance(event, Connected):
                self.connected.set()
            elif isinstance(event, ConnectionRejected):
                self._rejected = event.code
                self._closed_reason = f"rejected: {reject_reason_name(event.code)}"
                self._readable.set()
                self.connected.set()
            elif isinstance(event, ConnectionClosed):
                self._closed_reason = event.reason
                self._readable.set()
                self.connected.set()


def _random_id() -> int:
    return (int.from_bytes(os.urandom(4), "big") & 0x3FFFFFFF) or 1


async def open_udp_socket(host: str, port: int, *, shared: bool = False) -> stdlib_socket.socket:
    """Bind a non-blocking UDP socket; an empty host listens on every IPv4 and IPv6 address.

    A `shared` port is bound with SO_REUSEPORT, for the workers of one server.
    """

    def new_socket(family: int) -> stdlib_socket.socket:
        sock = stdlib_socket.socket(family, stdlib_socket.SOCK_DGRAM)
        if shared:
            sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT, 1)
        return sock

    if host in ("", "::"):
        try:
            sock = new_socket(stdlib_socket.AF_INET6)
            sock.setsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY, 0)
            sock.bind(("::", port))
        except OSError:
            sock = new_socket(stdlib_socket.AF_INET)
            sock.bind(("0.0.0.0", port))
    else:
        info = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
        family, _, _, _, address = info[0]
        sock = new_socket(family)
        sock.bind(address)
    sock.setblocking(False)
    for option, size in (
        (stdlib_socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES),
        (stdlib_socket.SO_SNDBUF, SEND_BUFFER_BYTES),
    ):
        try:
            sock.setsockopt(stdlib_socket.SOL_SOCKET, option, size)
        except OSError:
            pass
    return sock


class DatagramReader:
    """Reads a UDP socket a batch at a time.

    After a full batch it only yields to other tasks before reading again,
    which costs less than waiting for readiness (one `epoll_wait` and a
    reschedule); after a partial one the socket is empty, and reading it
    again at once would find nothing.
    """

    def __init__(self, udp: stdlib_socket.socket) -> None:
        self._udp = udp
        self._flowing = False

    async def batch(self) -> list[tuple[bytes, tuple]]:
        """The datagrams waiting (up to a batch); may be empty after a busy one."""
        if self._flowing:
            await trio.lowlevel.checkpoint()
        else:
            await trio.lowlevel.wait_readable(self._udp)
        batch = []
        for _ in range(RECEIVE_BATCH):
            try:
                batch.append(self._udp.recvfrom(MAX_DATAGRAM))
            except BlockingIOError:
                break
            except OSError as exc:
                # ICMP port unreachable from a vanished peer surfaces here on Linux.
                log.debug("receive error: %s", exc)
        self._flowing = len(batch) == RECEIVE_BATCH
        return batch


@dataclass
class ListenerStats:
    datagrams_invalid: int = 0
    datagrams_unroutable: int = 0
    handshakes_rejected: int = 0
    connections_accepted: int = 0


class SrtListener:
    """Accepts SRT callers on one UDP port and runs a handler per connection.

    `max_clients` counts established connections, of which one host holds
    at most `max_per_host`; handshakes still being decided are bounded
    apart, per sending host and in all.  A connection whose peer stays
    silent after the handshake ends within seconds (the core's first-packet
    deadline), so a host that opens connections and never uses them holds
    its few slots only briefly.  A refusal for lack of room goes to
    `on_overload` with the reason, once a minute per host however often the
    host asks.  A wrong passphrase is refused after `guess_delay` seconds,
    so that guessing one is as slow as guessing a password.
    """

    def __init__(
        self,
        host: str,
        port: int,
        accept: AcceptCallback,
        *,
        latency: float = 0.120,
        passphrase: str = "",
        key_length: int = 16,
        max_clients: int = 64,
        max_per_host: int = MAX_CLIENTS_PER_HOST,
        on_overload: OverloadCallback | None = None,
        passphrase_for: Callable[[str], str] | None = None,
        on_rejected: Callable[[tuple, str, int, str], None] | None = None,
        guess_delay: Callable[[ConnectionRequest], float] | None = None,
        steering: Steering | None = None,
    ) -> None:
        self.host = host
        # Set in a worker: the port is shared, and other workers' datagrams are passed on.
        self.steering = steering
        self.on_overload = on_overload
        self.guess_delay = guess_delay
        self.port = port
        self.max_clients = max_clients
        self.stats = ListenerStats()
        self._accept = accept
        self._handshake = ListenerHandshake(
            latency=latency,
            passphrase=passphrase,
            key_length=key_length,
            passphrase_for=passphrase_for,
            on_rejected=on_rejected,
            secret=steering.cookie_secret if steering is not None else None,
        )
        self._connections: dict[int, SrtSocket] = {}
        self._pending: dict[str, int] = {}
        self._hosts = HostSlots(max_per_host)
        self._overload_reports = OncePerHost()
        # The same socket, seen by Trio for the handshakes and raw for the data path.
        self._udp: trio.socket.SocketType | None = None
        self._raw: stdlib_socket.socket | None = None

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    @property
    def address(self) -> tuple:
        assert self._udp is not None
        return self._udp.getsockname()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._raw = await open_udp_socket(self.host, self.port, shared=self.steering is not None)
        self._udp = trio.socket.from_stdlib_socket(self._raw)
        with self._udp:
            async with trio.open_nursery() as nursery:
                if self.steering is not None:
                    await nursery.start(self.steering.receive, self.feed_passed)
                task_status.started()
                await self._receive_loop(nursery)

    async def _receive_loop(self, nursery: trio.Nursery) -> None:
        assert self._raw is not None
        reader = DatagramReader(self._raw)
        while True:
            batch = await reader.batch()
            now = trio.current_time()
            fed: dict[int, SrtSocket] = {}
            for data, peer in batch:
                try:
                    sock = self._connection_for(data, peer)
                    if sock is not None:
                        sock.feed(data, now)
                        fed[id(sock)] = sock
                    elif data[:2] == _HANDSHAKE_START:
                        await self._route(data, peer, nursery)
                except (PacketError, CryptoError):
                    self.stats.datagrams_invalid += 1
                except Exception:
                    self.stats.datagrams_invalid += 1
                    log.exception("SRT datagram from %s could not be handled", peer_text(peer))
            for sock in fed.values():
                sock.settle()
                sock.flush_nowait()

    def _connection_for(self, data: bytes, peer: tuple) -> SrtSocket | None:
        """The connection a datagram is addressed to, if it comes from that peer."""
        if len(data) < HEADER_SIZE:
            self.stats.datagrams_invalid += 1
            return None
        dst = int.from_bytes(data[12:16], "big")
        sock = self._connections.get(dst)
        if sock is not None and sock.peer == peer:
            return sock
        if (
            self.steering is not None
            and dst not in (0, self._handshake.listener_id)
            and self.steering.pass_on(data, dst, peer)
        ):
            return None
        if data[:2] != _HANDSHAKE_START:
            self.stats.datagrams_unroutable += 1
        return None

    def feed_passed(self, data: bytes, peer: tuple) -> None:
        """A datagram for one of our connections that reached another worker first."""
        try:
            sock = self._connection_for(data, peer)
            if sock is not None:
                sock.feed(data, trio.current_time())
                sock.settle()
                sock.flush_nowait()
        except (PacketError, CryptoError):
            self.stats.datagrams_invalid += 1

    def _new_socket_id(self) -> int:
        if self.steering is not None:
            return self.steering.new_socket_id(self._connections.__contains__)
        socket_id = _random_id()
        while socket_id in self._connections:
            socket_id = _random_id()
        return socket_id

    async def _route(self, data: bytes, peer: tuple, nursery: trio.Nursery) -> None:
        assert self._udp is not None
        packet = parse_packet(data)
        now = trio.current_time()
        dst = packet.dst_socket_id
        if (
            isinstance(packet, ControlPacket)
            and packet.type == ControlType.HANDSHAKE
            and dst in (0, self._handshake.listener_id)
        ):
            answer = self._handshake.receive(packet, peer, now)
            if isinstance(answer, bytes):
                await self._udp.sendto(answer, peer)
            elif answer is not None:
                host = source_host(peer[0])
                full = self._room_for(host)
                if full:
                    await self._overloaded(answer, full)
                else:
                    self._pending[host] = self._pending.get(host, 0) + 1
                    nursery.start_soon(self._decide, answer, host)
            return
        # A handshake for one of our connections from its peer was fed to it already.
        self.stats.datagrams_unroutable += 1

    def _room_for(self, host: str) -> str:
        """Why a new handshake from `host` cannot be decided now, or "" if it can."""
        full = self._no_room(host)
        if full:
            return full
        if self._pending.get(host, 0) >= MAX_PENDING_PER_HOST:
            return f"{MAX_PENDING_PER_HOST} connections from this host are already being decided"
        if sum(self._pending.values()) >= MAX_PENDING:
            return f"{MAX_PENDING} connections are already being decided"
        return ""

    def _no_room(self, host: str) -> str:
        """Why one more established connection from `host` is one too many, or ""."""
        if len(self._connections) >= self.max_clients:
            return f"srt.maxClients ({self.max_clients}) reached"
        if self._hosts.full(host):
            limit = self._hosts.limit
            return f"srt.maxClientsPerHost ({limit}) connections from this host already"
        return ""

    async def _overloaded(self, request: ConnectionRequest, why: str) -> None:
        assert self._udp is not None
        unreported = self._overload_reports.due(source_host(request.peer[0]))
        if unreported is not None:
            why += unsaid(unreported)
            if self.on_overload is not None:
                self.on_overload(request, why)
            else:
                log.warning("SRT connection from %s refused: %s", peer_text(request.peer), why)
        self.stats.handshakes_rejected += 1
        now = trio.current_time()
        await self._udp.sendto(
            self._handshake.reject(request, RejectReason.OVERLOAD, now), request.peer
        )

    async def _decide(self, request: ConnectionRequest, host: str) -> None:
        assert self._udp is not None
        try:
            if request.guess_refused is not None:
                # Held while it waits, the host's pending slot bounds its guesses in parallel.
                await trio.sleep(self.guess_delay(request) if self.guess_delay else 0.0)
                self.stats.handshakes_rejected += 1
                now = trio.current_time()
                await self._udp.sendto(self._handshake.refuse_guess(request, now), request.peer)
                return
            try:
                decision = await self._accept(request)
            except Exception:
                log.exception("deciding on SRT connection from %s failed", peer_text(request.peer))
                decision = Reject(RejectReason.INTERNAL_ERROR, "internal error")
        finally:
            self._pending[host] -= 1
            if not self._pending[host]:
                del self._pending[host]
        full = "" if isinstance(decision, Reject) else self._no_room(host)
        if full:
            # Others were let in while this one was being decided.
            await self._overloaded(request, full)
            return
        now = trio.current_time()
        if isinstance(decision, Reject):
            self.stats.handshakes_rejected += 1
            await self._udp.sendto(
                self._handshake.reject(request, decision.code, now), request.peer
            )
            return
        socket_id = self._new_socket_id()
        connection, response = self._handshake.accept(request, socket_id, now)
        sock = SrtSocket(connection, self._raw, request.peer, request.stream_id)
        self._connections[socket_id] = sock
        self._hosts.take(host)
        self.stats.connections_accepted += 1
        try:
            await self._udp.sendto(response, request.peer)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sock.drive)
                try:
                    await decision(sock)
                except SrtClosed:
                    pass
                finally:
                    await sock.aclose()
                    nursery.cancel_scope.cancel()
        finally:
            del self._connections[socket_id]
            self._hosts.give_back(host)
            self._handshake.forget(request.peer, request.peer_socket_id)


@asynccontextmanager
async def connect(
    host: str,
    port: int,
    *,
    streamid: str = "",
    passphrase: str = "",
    latency: float = 0.120,
    key_length: int = 16,
    local_host: str = "",
) -> AsyncIterator[SrtSocket]:
    """Call an SRT listener (bound to `local_host` if given) for as long as the context."""
    info = await trio.socket.getaddrinfo(host, port, type=trio.socket.SOCK_DGRAM)
    family, _, _, _, address = info[0]
    any_host = "::" if family == trio.socket.AF_INET6 else "0.0.0.0"
    udp = await open_udp_socket(local_host or any_host, 0)
    with udp:
        connection = Connection.caller(
            now=trio.current_time(),
            stream_id=streamid,
            passphrase=passphrase,
            key_length=key_length,
            latency=latency,
        )
        sock = SrtSocket(connection, udp, address, streamid)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_caller_receive_loop, sock, udp, address)
                nursery.start_soon(sock.drive)
                await sock.flush()
                await sock.connected.wait()
                if sock.rejection is not None:
                    raise SrtRejected(sock.rejection)
                if connection.state is not State.CONNECTED:
                    raise SrtClosed(sock.closed_reason or "connection failed")
                try:
                    yield sock
                finally:
                    await sock.aclose()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The helper tasks never fail on their own: hand back the caller's error.
            raise sole_error(group) from None


async def _caller_receive_loop(sock: SrtSocket, udp: stdlib_socket.socket, peer: tuple) -> None:
    reader = DatagramReader(udp)
    while True:
        batch = await reader.batch()
        now = trio.current_time()
        for data, source in batch:
            if source[:2] == peer[:2]:
                sock.feed(data, now)
        sock.settle()
        await sock.flush()


def peer_text(peer: tuple) -> str:
    host = peer[0].removeprefix("::ffff:")
    return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
