"""Many UDP datagrams per system call: UDP GSO and `sendmmsg`.

Each datagram through Python's `sendto` is a system call, the kernel's
whole per-packet path and the interpreter's overhead; a live stream
brings thousands a second per peer.  `Datagrams.send` sends a run of
equal-size datagrams to one peer (the last may be shorter: the packets of
a video frame, a viewer's SRT packets of one loop turn) as one GSO
message that the kernel cuts up, and several messages (other peers) in
one `sendmmsg`.  CPython lacks `sendmmsg`, so it is reached through
`ctypes` on Linux's libc.  Where GSO or `sendmmsg` is missing, the same
method falls back to a call per message or per datagram; what is used is
chosen once per process and logged once.

Receiving stays with `recvfrom`: measured on loopback, `recvmmsg` through
`ctypes` cost as much per datagram, and more for the few a wake-up finds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import socket
import struct
import sys
import weakref
from dataclasses import dataclass
from functools import cache

log = logging.getLogger(__name__)

Address = tuple
Datagram = tuple[bytes, Address]

# Linux's UDP_SEGMENT (GSO) socket option and control message; CPython 3.11 does not name it.
UDP_SEGMENT = 103
# The kernel cuts at most this many segments from one GSO message, of 64 KiB in all.
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
# Datagrams per system call.
BATCH = 256
# Peer addresses remembered in their C form (a viewer's datagrams all go to one).
ADDRESS_CACHE = 4096
_SEGMENT_SIZE = struct.Struct("@H")
# struct mmsghdr on 64-bit Linux: msghdr (name, namelen, iov, iovlen, control, controllen,
# flags) then the length sent.  Written and read with `struct`, which costs far
# less per field than ctypes structures.
_MMSGHDR = struct.Struct("@PI4xPNPNi4xI4x")
_IOVEC = struct.Struct("@PN")
# A control message carrying the GSO segment size: cmsghdr (len, level, type) and a u16,
# padded to CMSG_SPACE(2).
_CMSG = struct.Struct("@NiiH6x")
_CMSG_LEN = _CMSG.size - 6


@dataclass(frozen=True)
class Support:
    """What this kernel and platform offer."""

    mmsg: bool
    gso: bool

    def describe(self) -> str:
        calls = "sendmmsg" if self.mmsg else "a system call per message"
        gso = "UDP GSO" if self.gso else "no UDP GSO (not offered here)"
        return f"{calls}, {gso}"


class _Libc:
    """libc's `sendmmsg`, and where a `bytes` object's contents start from its id()."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self.sendmmsg = libc.sendmmsg
        self.sendmmsg.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int)
        probe = b"ghostream probe"
        start = ctypes.cast(ctypes.c_char_p(probe), ctypes.c_void_p).value
        if start is None or ctypes.string_at(start, len(probe)) != probe:
            raise OSError("bytes objects are laid out unexpectedly")
        self.bytes_offset = start - id(probe)


@cache
def _libc() -> _Libc | None:
    if not sys.platform.startswith("linux") or struct.calcsize("P") != 8:
        return None
    try:
        return _Libc()
    except (OSError, AttributeError):
        return None


@cache
def support() -> Support:
    """Probe once, on a throwaway socket, and say in the log what will be used."""
    gso = False
    if sys.platform.startswith("linux"):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.setsockopt(socket.SOL_UDP, UDP_SEGMENT, 1200)
            gso = True
        except OSError:
            pass
        finally:
            probe.close()
    found = Support(mmsg=_libc() is not None, gso=gso)
    log.info("UDP datagrams are sent with %s", found.describe())
    return found


_of_socket: weakref.WeakKeyDictionary[socket.socket, Datagrams] = weakref.WeakKeyDictionary()


def datagrams_of(sock: socket.socket) -> Datagrams:
    """The one `Datagrams` of a socket, for all who send on it."""
    found = _of_socket.get(sock)
    if found is None:
        found = _of_socket[sock] = Datagrams(sock)
    return found


class Datagrams:
    """Batched sends on one non-blocking UDP socket.

    The C arrays are made once and reused; a datagram's bytes are handed to
    the kernel where they lie.  Not for use from several threads at once.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        found = support()
        self._libc = _libc() if found.mmsg else None
        self._gso = found.gso
        self._names: dict[Address, tuple[ctypes.Array, int]] = {}
        if self._libc is not None:
            self._send_iov = ctypes.create_string_buffer(BATCH * _IOVEC.size)
            self._send_msgs = ctypes.create_string_buffer(BATCH * _MMSGHDR.size)
            self._controls = ctypes.create_string_buffer(BATCH * _CMSG.size)

    @property
    def gso(self) -> bool:
        return self._gso

    def send(self, datagrams: list[Datagram]) -> int:
        """Send from the start of `datagrams`; how many went (all, unless the kernel's
        buffer filled: BlockingIOError when not even the first did).

        A datagram the kernel refuses for another reason (no route, too
        large) is dropped with a debug line: UDP loses datagrams anyway.
        """
        if len(datagrams) == 1:
            return self.send_one(*datagrams[0])
        sent = 0
        while sent < len(datagrams):
            runs = self._runs(datagrams, sent, BATCH if self._libc is not None else 1)
            try:
                try:
                    done = self._send_runs(datagrams, sent, runs)
                except ConnectionRefusedError:
                    done = self._send_runs(datagrams, sent, runs)
            except BlockingIOError:
                if sent:
                    return sent
                raise
            except OSError as exc:
                if runs[0] > 1 and exc.errno in (errno.EIO, errno.EINVAL):
                    self._gso = False
                    log.info("UDP GSO refused (%s): sending without it", exc.strerror)
                    continue
                log.debug("send to %s failed: %s", datagrams[sent][1], exc)
                done = runs[0]
            sent += done
        return sent

    def send_to(self, address: Address, payloads: list[bytes]) -> int:
        """`send` for datagrams all to one peer."""
        if len(payloads) == 1:
            return self.send_one(payloads[0], address)
        return self.send([(payload, address) for payload in payloads])

    def send_one(self, data: bytes, address: Address) -> int:
        """`send` for a lone datagram, which the batch calls would only slow down."""
        try:
            try:
                self._sock.sendto(data, address)
            except ConnectionRefusedError:
                # The ICMP error of an earlier datagram (to a peer that went away) is
                # reported by the next call on the socket, and that call sent nothing.
                self._sock.sendto(data, address)
        except BlockingIOError:
            raise
        except OSError as exc:
            log.debug("send to %s failed: %s", address, exc)
        return 1

    def _runs(self, datagrams: list[Datagram], start: int, limit: int) -> list[int]:
        """Datagram counts of the next messages (at most `limit`, of BATCH datagrams in all):
        with GSO, each a run of equal-size datagrams to one peer, the last maybe shorter."""
        runs = []
        index = start
        total = min(len(datagrams), start + BATCH)
        while index < total and len(runs) < limit:
            data, address = datagrams[index]
            end = index + 1
            if self._gso:
                size = length = len(data)
                while end < total and end - index < GSO_MAX_SEGMENTS:
                    following, to = datagrams[end]
                    if to != address or len(following) > size or length + size > GSO_MAX_BYTES:
                        break
                    length += len(following)
                    end += 1
                    if len(following) < size:
                        break
            runs.append(end - index)
            index = end
        return runs

    def _send_runs(self, datagrams: list[Datagram], start: int, runs: list[int]) -> int:
        """One system call for these messages; how many datagrams went."""
        if len(runs) == 1:
            data, address = datagrams[start]
            if runs[0] == 1:
                self._sock.sendto(data, address)
            else:
                segment = [(socket.SOL_UDP, UDP_SEGMENT, _SEGMENT_SIZE.pack(len(data)))]
                parts = [part for part, _ in datagrams[start : start + runs[0]]]
                self._sock.sendmsg(parts, segment, 0, address)
            return runs[0]
        return self._sendmmsg(datagrams, start, runs)

    def _sendmmsg(self, datagrams: list[Datagram], start: int, runs: list[int]) -> int:
        libc = self._libc
        assert libc is not None
        iov = ctypes.addressof(self._send_iov)
        controls = ctypes.addressof(self._controls)
        vectors: list[int] = []
        # What the C arrays point into must live until the call returns.
        held: list[object] = []
        index = start
        for number, run in enumerate(runs):
            first = index
            for data, _ in datagrams[index : index + run]:
                if type(data) is not bytes:
                    data = bytes(data)
                    held.append(data)
                vectors += (id(data) + libc.bytes_offset, len(data))
            index += run
            name, namelen = self._name_of(datagrams[first][1])
            held.append(name)
            control = control_length = 0
            if run > 1:
                control_length = _CMSG.size
                control = controls + number * _CMSG.size
                _CMSG.pack_into(
                    self._controls,
                    number * _CMSG.size,
                    _CMSG_LEN,
                    socket.SOL_UDP,
                    UDP_SEGMENT,
                    len(datagrams[first][0]),
                )
            _MMSGHDR.pack_into(
                self._send_msgs,
                number * _MMSGHDR.size,
                ctypes.addressof(name),
                namelen,
                iov + (first - start) * _IOVEC.size,
                run,
                control,
                control_length,
                0,
                0,
            )
        struct.pack_into(f"@{len(vectors)}N", self._send_iov, 0, *vectors)
        count = libc.sendmmsg(self._fd, self._send_msgs, len(runs), 0)
        if count < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return sum(runs[:count])

    def _name_of(self, address: Address) -> tuple[ctypes.Array, int]:
        found = self._names.get(address)
        if found is None:
            if len(self._names) >= ADDRESS_CACHE:
                self._names.clear()
            found = self._names[address] = _sockaddr(self._sock.family, address)
        return found


def _sockaddr(family: int, address: Address) -> tuple[ctypes.Array, int]:
    """The C `sockaddr` of an address as Python's socket module takes it."""
    host, port = address[0], address[1]
    if family == socket.AF_INET6:
        if ":" not in host:
            host = "::ffff:" + host
        flow = address[2] if len(address) > 2 else 0
        scope = address[3] if len(address) > 3 else 0
        raw = (
            struct.pack("@H", socket.AF_INET6)
            + struct.pack("!HI", port, flow)
            + socket.inet_pton(socket.AF_INET6, host)
            + struct.pack("@I", scope)
        )
    else:
        raw = struct.pack("@H", socket.AF_INET) + struct.pack("!H", port)
        raw += socket.inet_pton(socket.AF_INET, host) + bytes(8)
    return ctypes.create_string_buffer(raw, len(raw)), len(raw)
