"""SRT connections that stay with their worker while workers share one UDP port.

With SO_REUSEPORT the kernel picks a worker's socket by hashing the peer's
address over the sockets in the group, and the pick changes whenever a
worker leaves or joins (a restart).  A connection's state lives in one
worker, so each worker writes its number into the socket ids it hands out
(bits 22 to 29; the peer puts our id in every packet it sends) and a
datagram that lands in another worker is passed to its owner over the
owner's unix datagram socket, with the peer's address in front.  A handshake
(destination id 0) is answered wherever it lands: the workers' SYN cookies
share one key, written by the parent in the runtime directory.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

import trio

from ghostream.config import WorkerRole

log = logging.getLogger(__name__)

WORKER_SHIFT = 22
WORKER_MASK = 0xFF
RANDOM_MASK = (1 << WORKER_SHIFT) - 1
# The peer's address in front of a passed datagram: its text, then a separator.
SEPARATOR = b"\n"
MAX_PASSED = 4096
COOKIE_KEY = "cookie.key"

Feed = Callable[[bytes, tuple], None]


def owner_of(socket_id: int) -> int:
    return (socket_id >> WORKER_SHIFT) & WORKER_MASK


def new_socket_id(worker: int, taken: Callable[[int], bool]) -> int:
    """A random socket id that names `worker` and is not `taken`."""
    while True:
        low = int.from_bytes(os.urandom(3), "big") & RANDOM_MASK
        socket_id = (worker << WORKER_SHIFT) | low
        if low and not taken(socket_id):
            return socket_id


def _address(runtime: Path, index: int) -> str:
    return str(runtime / f"srt-{index}.sock")


def encode_peer(peer: tuple) -> bytes:
    return " ".join(str(part) for part in peer).encode() + SEPARATOR


def decode_peer(data: bytes) -> tuple[tuple, bytes]:
    """The peer and the datagram; ValueError if `data` is not a passed datagram."""
    head, separator, datagram = data.partition(SEPARATOR)
    if not separator:
        raise ValueError("no peer address")
    host, *numbers = head.decode().split(" ")
    if len(numbers) not in (1, 3):
        raise ValueError("malformed peer address")
    return (host, *(int(number) for number in numbers)), datagram


class Steering:
    """One worker's socket ids and its link to the other workers' SRT listeners."""

    def __init__(self, role: WorkerRole) -> None:
        self.role = role
        self.cookie_secret = (role.runtime / COOKIE_KEY).read_bytes()
        self._passing_to: set[int] = set()
        self._out = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._out.setblocking(False)

    def new_socket_id(self, taken: Callable[[int], bool]) -> int:
        return new_socket_id(self.role.index, taken)

    def pass_on(self, datagram: bytes, socket_id: int, peer: tuple) -> bool:
        """Send a datagram for another worker's connection there; False if it is ours."""
        owner = owner_of(socket_id)
        if owner == self.role.index or owner >= self.role.count:
            return False
        if owner not in self._passing_to:
            self._passing_to.add(owner)
            log.info("passing datagrams of worker %d's SRT connections to it", owner)
        try:
            self._out.sendto(encode_peer(peer) + datagram, _address(self.role.runtime, owner))
        except OSError as exc:
            # The owner is restarting (no socket yet) or full: SRT repeats what matters.
            log.debug("datagram for worker %d dropped: %s", owner, exc)
        return True

    async def receive(self, feed: Feed, *, task_status: trio.TaskStatus[None]) -> None:
        """Feed the datagrams other workers pass to this one until cancelled (then close)."""
        path = _address(self.role.runtime, self.role.index)
        with self._out, trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as inbox:
            # A previous run of this worker (killed) left its socket file.
            Path(path).unlink(missing_ok=True)
            await inbox.bind(path)
            task_status.started()
            while True:
                data = await inbox.recv(MAX_PASSED)
                try:
                    peer, datagram = decode_peer(data)
                except (ValueError, UnicodeDecodeError):
                    log.debug("malformed datagram passed by another worker")
                    continue
                feed(datagram, peer)
