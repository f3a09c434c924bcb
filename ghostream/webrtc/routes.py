"""Which WebRTC session a datagram on a shared port belongs to (sans-IO).

Every browser talks to the same few sockets, so each datagram must be given
to its session.  A browser's first packets are STUN binding requests whose
USERNAME starts with the session's ufrag and whose MESSAGE-INTEGRITY proves
it knows the session's password: that teaches the table the browser's
address, and STUN from that address follows it.  DTLS and SRTP are taken
only from the address the session itself sends them to (the pair ICE
selected), so a replayed binding request from elsewhere cannot inject
records into a session's DTLS.  Replies to STUN requests a session sent
itself are known by their transaction id.  Anything else is dropped with the
reason counted.

Demultiplexing follows RFC 7983: a first byte of 0-3 is STUN.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Target = TypeVar("Target", bound=Hashable)
Address = tuple[str, int]

MAGIC_COOKIE = b"\x21\x12\xa4\x42"
BINDING_REQUEST = 0x0001
CLASS_BITS = 0x0110
RESPONSE_CLASSES = (0x0100, 0x0110)
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
HEADER = 20
# Addresses one session may be reached from (a browser has a handful of candidates).
MAX_ADDRESSES = 16
# STUN transactions a port remembers, and for how long (aioice gives up after ~40 s).
MAX_TRANSACTIONS = 4096
TRANSACTION_LIFETIME = 60.0

# Why a datagram was dropped: a closed set, for a metric label.
UNKNOWN_ADDRESS = "unknown_address"
UNKNOWN_USERNAME = "unknown_username"
BAD_INTEGRITY = "bad_integrity"
MALFORMED_STUN = "malformed_stun"
UNSELECTED_ADDRESS = "unselected_address"
REFUSED_BY_SESSION = "refused_by_session"
REASONS = (
    UNKNOWN_ADDRESS,
    UNKNOWN_USERNAME,
    BAD_INTEGRITY,
    MALFORMED_STUN,
    UNSELECTED_ADDRESS,
    REFUSED_BY_SESSION,
)


@dataclass(frozen=True, slots=True)
class StunHeader:
    """What routing needs from a STUN message: its type, transaction, and credentials."""

    message_type: int
    transaction_id: bytes
    username: str | None
    # Offset of the MESSAGE-INTEGRITY attribute, for checking it.
    integrity_at: int | None


def is_stun(data: bytes) -> bool:
    return len(data) >= HEADER and data[0] < 4 and data[4:8] == MAGIC_COOKIE


def parse_stun(data: bytes) -> StunHeader | None:
    """The routing fields of a STUN message; None when its attributes do not add up."""
    message_type, length = struct.unpack_from("!HH", data)
    if length % 4 or HEADER + length > len(data):
        return None
    username = integrity_at = None
    offset = HEADER
    end = HEADER + length
    while offset + 4 <= end:
        kind, size = struct.unpack_from("!HH", data, offset)
        value_end = offset + 4 + size
        if value_end > end:
            return None
        if kind == USERNAME and integrity_at is None:
            try:
                username = data[offset + 4 : value_end].decode()
            except UnicodeDecodeError:
                return None
        elif kind == MESSAGE_INTEGRITY:
            if size != 20:
                return None
            integrity_at = offset
        offset = value_end + (-size % 4)
    return StunHeader(message_type, data[8:20], username, integrity_at)


def integrity_holds(data: bytes, integrity_at: int, password: str) -> bool:
    """RFC 8489 section 14.5: HMAC-SHA1 over the message up to the attribute, length adjusted."""
    signed = bytearray(data[:integrity_at])
    struct.pack_into("!H", signed, 2, integrity_at + 24 - HEADER)
    expected = hmac.new(password.encode(), bytes(signed), hashlib.sha1).digest()
    return hmac.compare_digest(expected, data[integrity_at + 4 : integrity_at + 24])


@dataclass
class _Credentials(Generic[Target]):
    target: Target
    ufrag: str
    password: str
    addresses: OrderedDict[Address, None] = field(default_factory=OrderedDict)
    # Where the session sends DTLS and SRTP, once it does: the only source it takes them from.
    media_address: Address | None = None


class IceRoutes(Generic[Target]):
    """The routing table of one shared port: ufrag and address → session endpoint."""

    def __init__(self, on_drop: Callable[[str], None] = lambda reason: None) -> None:
        self._on_drop = on_drop
        self._by_ufrag: dict[str, _Credentials[Target]] = {}
        self._by_target: dict[Target, _Credentials[Target]] = {}
        self._by_address: dict[Address, Target] = {}
        self._transactions: OrderedDict[bytes, tuple[Target, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_target)

    def add(self, ufrag: str, password: str, target: Target) -> None:
        """A session's endpoint on this port, reached by browsers knowing ufrag and password."""
        if ufrag in self._by_ufrag:
            raise ValueError(f"ufrag {ufrag!r} is already routed on this port")
        credentials = _Credentials(target, ufrag, password)
        self._by_ufrag[ufrag] = credentials
        self._by_target[target] = credentials

    def remove(self, target: Target) -> None:
        """Forget a session's endpoint: its ufrag, addresses and transactions."""
        credentials = self._by_target.pop(target, None)
        if credentials is None:
            return
        del self._by_ufrag[credentials.ufrag]
        for address in credentials.addresses:
            if self._by_address.get(address) == target:
                del self._by_address[address]
        for transaction, (owner, _) in list(self._transactions.items()):
            if owner == target:
                del self._transactions[transaction]

    def forget(self, address: Address) -> None:
        """An address that no longer reaches its session (a closed TCP connection)."""
        target = self._by_address.pop(address, None)
        if target is not None:
            self._by_target[target].addresses.pop(address, None)

    def addresses(self, target: Target) -> list[Address]:
        credentials = self._by_target.get(target)
        return list(credentials.addresses) if credentials else []

    def route(self, data: bytes, address: Address) -> Target | None:
        """The endpoint an incoming datagram is for, or None (and a counted reason)."""
        if not is_stun(data):
            target = self._known(address)
            if target is not None:
                media_address = self._by_target[target].media_address
                if media_address is not None and media_address != address:
                    return self._drop(UNSELECTED_ADDRESS)
            return target
        header = parse_stun(data)
        if header is None:
            return self._drop(MALFORMED_STUN)
        if header.message_type == BINDING_REQUEST:
            return self._binding_request(data, header, address)
        if (header.message_type & CLASS_BITS) in RESPONSE_CLASSES:
            owner = self._transactions.pop(header.transaction_id, None)
            if owner is not None and owner[0] in self._by_target:
                return owner[0]
        return self._known(address)

    def sent(self, target: Target, data: bytes, address: Address, now: float | None = None) -> None:
        """Note a datagram an endpoint sends: where its media goes, what its requests are."""
        if not is_stun(data):
            credentials = self._by_target.get(target)
            if credentials is not None:
                credentials.media_address = address
            return
        if data[0] & 0x01 or data[1] & 0x10:
            return  # not a request
        now = time.monotonic() if now is None else now
        transactions = self._transactions
        transactions[data[8:20]] = (target, now)
        transactions.move_to_end(data[8:20])
        while transactions:
            oldest, (_, at) = next(iter(transactions.items()))
            if len(transactions) <= MAX_TRANSACTIONS and now - at < TRANSACTION_LIFETIME:
                break
            del transactions[oldest]

    def _binding_request(self, data: bytes, header: StunHeader, address: Address) -> Target | None:
        ufrag = (header.username or "").partition(":")[0]
        credentials = self._by_ufrag.get(ufrag)
        if credentials is None:
            return self._drop(UNKNOWN_USERNAME)
        if header.integrity_at is None or not integrity_holds(
            data, header.integrity_at, credentials.password
        ):
            return self._drop(BAD_INTEGRITY)
        self._learn(credentials, address)
        return credentials.target

    def _learn(self, credentials: _Credentials[Target], address: Address) -> None:
        previous = self._by_address.get(address)
        if previous is not None and previous != credentials.target:
            self._by_target[previous].addresses.pop(address, None)
        self._by_address[address] = credentials.target
        credentials.addresses[address] = None
        credentials.addresses.move_to_end(address)
        if len(credentials.addresses) > MAX_ADDRESSES:
            oldest, _ = credentials.addresses.popitem(last=False)
            del self._by_address[oldest]

    def _known(self, address: Address) -> Target | None:
        target = self._by_address.get(address)
        if target is None:
            return self._drop(UNKNOWN_ADDRESS)
        return target

    def refused(self) -> None:
        """A datagram routed to a session that the session's ICE agent could not take."""
        self._drop(REFUSED_BY_SESSION)

    def _drop(self, reason: str) -> None:
        self._on_drop(reason)
        return None
