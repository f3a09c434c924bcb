"""An in-memory network for driving the sans-IO SRT core with a fake clock.

A caller `Connection` and a `ListenerHandshake` (which then creates the
listener's `Connection`) exchange datagrams over a seeded lossy link; time
only moves when nothing is due, so minutes of streaming run in milliseconds
and every run with the same seed is identical.
"""

from __future__ import annotations

import heapq
import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ghostream.srt.connection import (
    Connected,
    Connection,
    ConnectionClosed,
    ConnectionRejected,
    DataReceived,
    Event,
)
from ghostream.srt.handshake import ConnectionRequest, ListenerHandshake
from ghostream.srt.packet import ControlPacket, ControlType, parse_packet

CALLER = ("127.0.0.1", 40000)


@dataclass
class Link:
    """One direction of the network: delay, loss, reordering, duplication."""

    delay: float = 0.010
    loss: float = 0.0
    reorder: float = 0.0
    duplicate: float = 0.0
    seed: int = 1
    drop_if: Callable[[bytes], bool] | None = None
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def arrivals(self, datagram: bytes, now: float) -> list[float]:
        if self.drop_if is not None and self.drop_if(datagram):
            return []
        if self.rng.random() < self.loss:
            return []
        delay = self.delay
        if self.rng.random() < self.reorder:
            delay += self.rng.uniform(0.001, 0.030)
        times = [now + delay]
        if self.rng.random() < self.duplicate:
            times.append(now + delay + self.rng.uniform(0, 0.020))
        return times


@dataclass
class Received:
    at: float
    payload: bytes


class Simulation:
    def __init__(
        self,
        *,
        forward: Link | None = None,
        backward: Link | None = None,
        decide: Callable[[ConnectionRequest], int | None] = lambda request: None,
        caller_kwargs: dict | None = None,
        listener_kwargs: dict | None = None,
        start: float = 1000.0,
    ) -> None:
        self.now = start
        self.forward = forward or Link()
        self.backward = backward or Link(seed=2)
        self.decide = decide
        self.listener = ListenerHandshake(**(listener_kwargs or {}))
        self.caller = Connection.caller(now=self.now, **(caller_kwargs or {}))
        self.server: Connection | None = None
        self.requests: list[ConnectionRequest] = []
        self.caller_events: list[Event] = []
        self.server_events: list[Event] = []
        self.server_received: list[Received] = []
        self.caller_received: list[Received] = []
        self._queue: list[tuple[float, int, str, bytes]] = []
        self._order = itertools.count()
        self._flush()

    # Network.

    def _flush(self) -> None:
        for datagram in self.caller.datagrams_to_send():
            for at in self.forward.arrivals(datagram, self.now):
                heapq.heappush(self._queue, (at, next(self._order), "server", datagram))
        if self.server is not None:
            for datagram in self.server.datagrams_to_send():
                self._to_caller(datagram)
        self._collect()

    def _to_caller(self, datagram: bytes) -> None:
        for at in self.backward.arrivals(datagram, self.now):
            heapq.heappush(self._queue, (at, next(self._order), "caller", datagram))

    def _collect(self) -> None:
        for conn, events, received in (
            (self.caller, self.caller_events, self.caller_received),
            (self.server, self.server_events, self.server_received),
        ):
            if conn is None:
                continue
            while (event := conn.next_event()) is not None:
                if isinstance(event, DataReceived):
                    received.append(Received(self.now, event.payload))
                else:
                    events.append(event)

    def _deliver_to_server(self, datagram: bytes) -> None:
        packet = parse_packet(datagram)
        is_listener_hs = (
            isinstance(packet, ControlPacket)
            and packet.type == ControlType.HANDSHAKE
            and packet.dst_socket_id in (0, self.listener.listener_id)
        )
        if is_listener_hs:
            answer = self.listener.receive(packet, CALLER, self.now)
            if isinstance(answer, bytes):
                self._to_caller(answer)
            elif answer is not None:
                self.requests.append(answer)
                if answer.guess_refused is not None:
                    # The listener's owner decides when its refusal goes: `refuse_guesses`.
                    return
                code = self.decide(answer)
                if code is not None:
                    self._to_caller(self.listener.reject(answer, code, self.now))
                else:
                    self.server, response = self.listener.accept(answer, 777, self.now)
                    self._to_caller(response)
        elif self.server is not None and packet.dst_socket_id == self.server.socket_id:
            self.server.receive_packet(packet, self.now)

    def refuse_guesses(self) -> None:
        """Send the late refusals of the requests that carried a wrong passphrase."""
        for request in self.requests:
            if request.guess_refused is not None:
                self._to_caller(self.listener.refuse_guess(request, self.now))

    # Time.

    def run_until(self, end: float, *, until: Callable[[], bool] | None = None) -> None:
        self._flush()
        while self.now < end:
            if until is not None and until():
                return
            candidates = [end]
            if self._queue:
                candidates.append(self._queue[0][0])
            for conn in (self.caller, self.server):
                if conn is not None and (timer := conn.get_timer()) is not None:
                    candidates.append(timer)
            self.now = max(self.now, min(candidates))
            while self._queue and self._queue[0][0] <= self.now:
                _, _, target, datagram = heapq.heappop(self._queue)
                if target == "server":
                    self._deliver_to_server(datagram)
                else:
                    self.caller.receive_datagram(datagram, self.now)
            for conn in (self.caller, self.server):
                if conn is not None and (timer := conn.get_timer()) is not None:
                    if timer <= self.now:
                        conn.handle_timer(self.now)
            self._flush()

    def run_for(self, seconds: float, **kwargs) -> None:
        self.run_until(self.now + seconds, **kwargs)

    def connect(self) -> None:
        self.run_for(1.0, until=lambda: self.server is not None and self.connected)
        assert self.connected, self.caller_events

    @property
    def connected(self) -> bool:
        return any(isinstance(e, Connected) for e in self.caller_events)

    @property
    def rejection(self) -> int | None:
        codes = [e.code for e in self.caller_events if isinstance(e, ConnectionRejected)]
        return codes[0] if codes else None

    def closed(self, events: list[Event]) -> str | None:
        reasons = [e.reason for e in events if isinstance(e, ConnectionClosed)]
        return reasons[0] if reasons else None

    def stream(self, sender: Connection, messages: list[bytes], interval: float) -> list[float]:
        """Send messages at a steady rate, as a live encoder would; returns send times."""
        times = []
        for message in messages:
            sender.send(message, self.now)
            times.append(self.now)
            self._flush()
            self.run_for(interval)
        return times


def messages(count: int, size: int = 1316) -> list[bytes]:
    return [i.to_bytes(4, "big") * (size // 4) for i in range(count)]
