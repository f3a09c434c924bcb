"""A seeded, lossy UDP relay: the network impairments tests need, without tc netem.

Clients send to `relay.address`; each client gets its own upstream socket to
the target, so the server sees one peer per client as it would without the
relay.  Both directions are impaired: loss, duplication, reordering (a packet
held back a few milliseconds, behind those sent after it) and a fixed delay.  One seeded random
generator decides everything, so a failing run can be replayed.
"""

from __future__ import annotations

import heapq
import itertools
import random
import selectors
import socket
import threading
import time
from types import TracebackType

MAX_DATAGRAM = 65535
# A reordered packet arrives this much later, behind the ones sent after it.
REORDER_LAG = 0.004
RECEIVE_BUFFER = 4 * 1024 * 1024


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


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # Bursts must queue here, not overflow: losses are the relay's decision alone.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock
