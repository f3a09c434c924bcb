"""Batched UDP sends against real loopback sockets: what is sent is what arrives, in order."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from ghostream import udp_batch
from ghostream.udp_batch import Datagrams


def _socket(family: int, host: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((host, 0))
    sock.setblocking(False)
    return sock


@pytest.fixture(params=[(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")], ids=["v4", "v6"])
def trio_of_sockets(request) -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    family, host = request.param
    try:
        sockets = [_socket(family, host) for _ in range(3)]
    except OSError:
        pytest.skip("no IPv6 loopback")
    yield sockets[0], sockets[1], sockets[2]
    for sock in sockets:
        sock.close()


@pytest.fixture(params=["batched", "fallback"])
def mode(request, monkeypatch) -> str:
    """Every test runs with sendmmsg and GSO, and with the per-datagram fallback."""
    if request.param == "fallback":
        monkeypatch.setattr(udp_batch, "support", lambda: udp_batch.Support(mmsg=False, gso=False))
    elif not udp_batch.support().mmsg:
        pytest.skip("no sendmmsg here")
    return request.param


def _payload(index: int, size: int) -> bytes:
    return index.to_bytes(4, "big") * (size // 4) + bytes(size % 4)


def _receive_all(receiver: socket.socket) -> list[tuple[bytes, tuple]]:
    got = []
    while True:
        try:
            got.append(receiver.recvfrom(70_000))
        except BlockingIOError:
            return got


def test_a_batch_to_two_peers_arrives_whole_and_in_order(trio_of_sockets, mode) -> None:
    sender, first, second = trio_of_sockets
    a, b = first.getsockname(), second.getsockname()
    # Runs of equal sizes to one peer (one GSO message each), a shorter last one, a peer
    # change mid-run, more than GSO's 64 segments and a run over 64 KiB.
    datagrams = [(_payload(i, 1332), a) for i in range(70)]
    datagrams += [(_payload(70, 400), a), (_payload(71, 1332), b), (_payload(72, 1332), a)]
    datagrams += [(_payload(73 + i, 1500), b) for i in range(50)]
    datagrams += [(_payload(200, 20), b)]
    assert Datagrams(sender).send(datagrams) == len(datagrams)

    for receiver, address in ((first, a), (second, b)):
        expected = [data for data, to in datagrams if to == address]
        got = _receive_all(receiver)
        assert [data for data, _ in got] == expected
        assert {source for _, source in got} == {sender.getsockname()}


def test_datagrams_of_other_types_are_sent_as_their_bytes(trio_of_sockets, mode) -> None:
    sender, receiver, _ = trio_of_sockets
    to = receiver.getsockname()
    view = memoryview(b"xx" + _payload(1, 100))[2:]
    Datagrams(sender).send([(view, to), (bytearray(_payload(2, 100)), to), (b"last", to)])
    got = [data for data, _ in _receive_all(receiver)]
    assert got == [_payload(1, 100), _payload(2, 100), b"last"]


def test_a_refused_datagram_is_dropped_and_the_rest_go(trio_of_sockets, mode) -> None:
    sender, receiver, _ = trio_of_sockets
    to = receiver.getsockname()
    too_big = bytes(70_000)
    sent = Datagrams(sender).send([(b"before", to), (too_big, to), (b"after", to)])
    assert sent == 3
    got = [data for data, _ in _receive_all(receiver)]
    assert got == [b"before", b"after"]
