"""The TCP connection a forward writer's PyAV container opened, so that its owner can cut it.

PyAV opens a network output without an interrupt callback and shows no
socket: a write to a target that stopped reading blocks until the target
reads again, which may be never.  To stop such a writer its owner shuts the
connection down, the blocked write fails at once, and the thread can be
joined.  The connection is found among the process's descriptors by its
peer address.  So that no writer ever takes another's, writers connect to
one address one at a time and each claims its connection as soon as it is
made.  Outputs that are not TCP (files, UDP, SRT) never block for good and
have nothing to cut.
"""

from __future__ import annotations

import os
import socket
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

DEFAULT_PORTS = {"rtmp": 1935, "rtmps": 443}
TCP_SCHEMES = {"rtmp", "rtmps", "tcp"}
# How often a writer waiting for its turn to connect looks whether it was stopped.
TURN_CHECK = 0.1

# Guards the two sets: addresses being connected to, and connections owned by a writer.
_lock = threading.Lock()
_connecting: set[tuple[str, int]] = set()
_claimed: set[int] = set()


class Stopped(Exception):
    """The writer was stopped while it waited for its turn to connect."""

    def __init__(self) -> None:
        super().__init__("stopped before it could connect")


class TargetConnection:
    """One writer's connection to its target, from its first write until the writer ends."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            port = parts.port or DEFAULT_PORTS.get(scheme)
        except ValueError:
            port = None
        tcp = scheme in TCP_SCHEMES and parts.hostname and port
        self.address = (parts.hostname, port) if tcp else None
        self.stopping = threading.Event()
        self._peers: set[tuple[str, int]] = set()
        self._inode: int | None = None
        self._connecting = False

    @contextmanager
    def connecting(self) -> Iterator[None]:
        """Around the writer's first write, which connects: its connection is claimed after it.

        Blocking (name resolution, waiting for another writer to the same
        address): for the writer's thread only.  Stopped when `cut` came first.
        """
        if self.address is None:
            yield
            return
        try:
            found = socket.getaddrinfo(*self.address, type=socket.SOCK_STREAM)
            self._peers = {(info[4][0], info[4][1]) for info in found}
        except OSError:
            pass  # the container's own connect fails the same way, and says so
        while not self._take_turn():
            if self.stopping.wait(TURN_CHECK):
                raise Stopped
        try:
            yield
            with _lock:
                found = _unclaimed(self._peers)
                if len(found) == 1:
                    self._inode = found[0]
                    _claimed.add(self._inode)
        finally:
            with _lock:
                _connecting.discard(self.address)
                self._connecting = False

    def _take_turn(self) -> bool:
        with _lock:
            if self.address in _connecting:
                return False
            _connecting.add(self.address)
            self._connecting = True
            return True

    def cut(self) -> None:
        """Shut the connection down, so that a write or read blocked on it fails at once."""
        self.stopping.set()
        with _lock:
            if self._inode is not None:
                inodes = [self._inode]
            elif self._connecting:
                # This writer's turn: an unclaimed connection to its address is its own.
                inodes = _unclaimed(self._peers)
            else:
                return
            for fd, inode in _sockets():
                if inode in inodes:
                    try:
                        with _socket(fd) as sock:
                            sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass  # closed meanwhile: nothing left to cut

    def release(self) -> None:
        """The writer ended: its connection is closed, and its number may come back."""
        if self._inode is not None:
            with _lock:
                _claimed.discard(self._inode)


def _sockets() -> Iterator[tuple[int, int]]:
    """The process's open sockets: descriptor and inode."""
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in descriptors:
        fd = int(name)
        try:
            info = os.fstat(fd)
        except OSError:
            continue
        if stat.S_ISSOCK(info.st_mode):
            yield fd, info.st_ino


def _socket(fd: int) -> socket.socket:
    """A socket object for a descriptor someone else owns: it closes only its own copy."""
    return socket.socket(fileno=os.dup(fd))


def _unclaimed(peers: set[tuple[str, int]]) -> list[int]:
    """Inodes of connections to one of `peers` that no writer owns yet."""
    found = []
    for fd, inode in _sockets():
        if inode in _claimed:
            continue
        try:
            with _socket(fd) as sock:
                if sock.type != socket.SOCK_STREAM:
                    continue
                peer = sock.getpeername()
        except OSError:
            continue
        if isinstance(peer, tuple) and (peer[0], peer[1]) in peers:
            found.append(inode)
    return found
