"""A seeded, lossy UDP relay: the network impairments tests need, without tc netem.

Clients send to `relay.address`; each client gets its own upstream socket to
the target, so the server sees one peer per client as it would without the
relay.  Both directions are impaired: loss, duplication, reordering (a packet
held back a few milliseconds, behind those sent after it) and a fixed delay.  One seeded random
generator decides everything, so a failing run can be replayed.

It also notes every SRT handshake it passes on (when, which way, its type), so
that a test reads a refusal's reject code as the libsrt peer received it: libsrt
tools print only a category ("Application-defined rejection reason").
"""

from __future__ import annotations

import heapq
import itertools
import random
import selectors
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from types import TracebackType

MAX_DATAGRAM = 65535
# A reordered packet arrives this much later, behind the ones sent after it.
REORDER_LAG = 0.004
RECEIVE_BUFFER = 4 * 1024 * 1024
# A handshake's type above this is a refusal: 1000 + the reject code (1404 travels as 2404).
REJECTION_BASE = 1000
CONCLUSION = 0xFFFFFFFF


def handshake_type(datagram: bytes) -> int | None:
    """The type of an SRT handshake control packet (header, then the type 20 bytes in)."""
    if len(datagram) < 40 or datagram[:2] != b"\x80\x00":
        return None
    return int.from_bytes(datagram[36:40], "big")


class UdpRelay:
    def __init__(
        self,
        target: tuple[str, int],
        *,
        loss: float = 0.0,
        reorder: float = 0.0,
        duplicate: float = 0.0,
        delay_ms: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.target = target
        self.loss = loss
        self.reorder = reorder
        self.duplicate = duplicate
        self.delay = delay_ms / 1000
        self.forwarded = 0
        self.dropped = 0
        # (monotonic time, from the target?, type) of each SRT handshake passed on.
        self.handshakes: list[tuple[float, bool, int]] = []
        self._random = random.Random(seed)
        self._front = _udp_socket()
        self._upstream: dict[tuple, socket.socket] = {}
        self._clients: dict[socket.socket, tuple] = {}
        self._schedule: list[tuple[float, int, socket.socket, tuple, bytes]] = []
        self._order = itertools.count()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._front, selectors.EVENT_READ)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="udp-relay", daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        return self._front.getsockname()

    def url(self, srt_url: str) -> str:
        """An `srt://host:port?...` URL of the target, through the relay."""
        rest = srt_url.removeprefix("srt://").split("?", 1)
        return f"srt://127.0.0.1:{self.address[1]}" + ("?" + rest[1] if len(rest) > 1 else "")

    def reject_codes(self) -> list[int]:
        """The reject codes of the refusals the target sent, in order (e.g. 1404, 10)."""
        return [kind - REJECTION_BASE for _, back, kind in self.handshakes if back and kind > 1000]

    def refusal_delays(self) -> list[float]:
        """Seconds from each caller's first conclusion handshake to the refusal it got."""
        delays, asked = [], None
        for at, back, kind in list(self.handshakes):
            if not back and kind == CONCLUSION and asked is None:
                asked = at
            elif back and kind > REJECTION_BASE and asked is not None:
                delays.append(at - asked)
                asked = None
        return delays

    def __enter__(self) -> UdpRelay:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopping.set()
        self._thread.join(2)
        self._selector.close()
        for sock in [self._front, *self._upstream.values()]:
            sock.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            timeout = 0.05
            if self._schedule:
                timeout = max(0.0, min(timeout, self._schedule[0][0] - time.monotonic()))
            for key, _ in self._selector.select(timeout):
                self._receive(key.fileobj)  # type: ignore[arg-type]
            self._send_due()

    def _receive(self, sock: socket.socket) -> None:
        while True:
            try:
                data, sender = sock.recvfrom(MAX_DATAGRAM)
            except (BlockingIOError, ConnectionRefusedError):
                return
            kind = handshake_type(data)
            if kind is not None:
                self.handshakes.append((time.monotonic(), sock is not self._front, kind))
            if sock is self._front:
                self._impair(self._upstream_for(sender), self.target, data)
            else:
                self._impair(self._front, self._clients[sock], data)

    def _upstream_for(self, client: tuple) -> socket.socket:
        upstream = self._upstream.get(client)
        if upstream is None:
            upstream = _udp_socket()
            self._upstream[client] = upstream
            self._clients[upstream] = client
            self._selector.register(upstream, selectors.EVENT_READ)
        return upstream

    def _impair(self, out: socket.socket, destination: tuple, data: bytes) -> None:
        chance = self._random.random
        if chance() < self.loss:
            self.dropped += 1
            return
        copies = 2 if chance() < self.duplicate else 1
        due = time.monotonic() + self.delay
        if chance() < self.reorder:
            due += REORDER_LAG
        for _ in range(copies):
            self._later(due, out, destination, data)

    def _later(self, due: float, out: socket.socket, destination: tuple, data: bytes) -> None:
        heapq.heappush(self._schedule, (due, next(self._order), out, destination, data))

    def _send_due(self) -> None:
        now = time.monotonic()
        while self._schedule and self._schedule[0][0] <= now:
            _, _, out, destination, data = heapq.heappop(self._schedule)
            try:
                out.sendto(data, destination)
                self.forwarded += 1
            except OSError:
                self.dropped += 1


def refusal(url: str, command: Callable[[str], list[str]], timeout: float = 30) -> tuple[int, str]:
    """Run a libsrt peer, `command(url)`, that must be refused: the reject code it received
    and its stderr. A crash or a timeout brings no refusal, so it fails here."""
    host, port = url.removeprefix("srt://").split("?", 1)[0].rsplit(":", 1)
    with UdpRelay((host, int(port))) as relay:
        result = subprocess.run(
            command(relay.url(url)), capture_output=True, timeout=timeout,
            stdin=subprocess.DEVNULL, text=True, errors="replace",
        )  # fmt: skip
    codes = set(relay.reject_codes())
    assert len(codes) == 1, f"reject codes {codes}; the peer said: {result.stderr[-2000:]}"
    return codes.pop(), result.stderr


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Bursts must queue here, not overflow: losses are the relay's decision alone.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock
