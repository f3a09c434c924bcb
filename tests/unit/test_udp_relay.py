"""The test relay itself: what it promises (seeded loss, duplicates, reordering) it does."""

from __future__ import annotations

import socket

from harness.udp_relay import UdpRelay

COUNT = 300


def exchange(**impairments: float) -> tuple[list[int], UdpRelay]:
    """Send COUNT numbered datagrams through a relay to a sink; what arrived, in order."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(0.5)
        with (
            UdpRelay(sink.getsockname(), **impairments) as relay,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
        ):
            for number in range(COUNT):
                client.sendto(number.to_bytes(4, "big"), relay.address)
            received = []
            try:
                while True:
                    received.append(int.from_bytes(sink.recv(16), "big"))
            except TimeoutError:
                pass
        return received, relay


def test_without_impairment_everything_arrives_in_order() -> None:
    received, relay = exchange()
    assert received == list(range(COUNT))
    assert relay.dropped == 0


def test_loss_is_reproducible_with_the_same_seed() -> None:
    first, relay = exchange(loss=0.3, seed=3)
    second, _ = exchange(loss=0.3, seed=3)
    assert first == second
    assert 0.15 * COUNT < relay.dropped < 0.45 * COUNT
    assert len(first) == COUNT - relay.dropped


def test_duplicates_and_reordering_happen() -> None:
    received, _ = exchange(duplicate=0.2, reorder=0.2, seed=5)
    assert len(received) > COUNT
    assert sorted(set(received)) == list(range(COUNT))
    assert received != sorted(received)


def test_replies_come_back_to_the_client() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        server.settimeout(2)
        with (
            UdpRelay(server.getsockname()) as relay,
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
        ):
            client.settimeout(2)
            client.sendto(b"ping", relay.address)
            data, peer = server.recvfrom(16)
            server.sendto(b"pong:" + data, peer)
            assert client.recvfrom(16) == (b"pong:ping", relay.address)
