"""SRT wire formats: data and control packets, the handshake and its extensions.

Parsing is strict about sizes and lenient about content a peer may add later
(unknown handshake extensions are kept, not rejected), because libsrt peers of
other versions and hardware encoders add fields we do not know.  Every parse
error is a `PacketError` so that the connection layer can drop and count a bad
datagram with a single ``except``.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from enum import IntEnum

SEQ_MASK = 0x7FFFFFFF
MSGNO_MASK = 0x03FFFFFF
TIMESTAMP_MASK = 0xFFFFFFFF
HEADER_SIZE = 16
HANDSHAKE_CIF_SIZE = 48
SRT_VERSION = 0x010503

_HEADER = struct.Struct("!IIII")
_HANDSHAKE = struct.Struct("!IHHIIIIII16s")
_HSREQ = struct.Struct("!IIHH")


class PacketError(ValueError):
    """A datagram that is not a well-formed SRT packet."""


class ControlType(IntEnum):
    HANDSHAKE = 0x0000
    KEEPALIVE = 0x0001
    ACK = 0x0002
    NAK = 0x0003
    CONGESTION_WARNING = 0x0004
    SHUTDOWN = 0x0005
    ACKACK = 0x0006
    DROPREQ = 0x0007
    PEERERROR = 0x0008
    USER = 0x7FFF


class UserSubtype(IntEnum):
    HSREQ = 1
    HSRSP = 2
    KMREQ = 3
    KMRSP = 4


class HandshakeType(IntEnum):
    DONE = 0xFFFFFFFD
    AGREEMENT = 0xFFFFFFFE
    CONCLUSION = 0xFFFFFFFF
    WAVEAHAND = 0x00000000
    INDUCTION = 0x00000001


class ExtensionType(IntEnum):
    HSREQ = 1
    HSRSP = 2
    KMREQ = 3
    KMRSP = 4
    SID = 5
    CONGESTION = 6
    FILTER = 7
    GROUP = 8


# Handshake "extension field" flags of a conclusion.
EXT_FLAG_HSREQ = 0x1
EXT_FLAG_KMREQ = 0x2
EXT_FLAG_CONFIG = 0x4
# Extension field value of a version 5 induction response.
INDUCTION_MAGIC = 0x4A17
# Extension field value of a version 4 induction request (UDT_DGRAM).
UDT_DGRAM = 2

# HSREQ/HSRSP flags.
FLAG_TSBPDSND = 0x01
FLAG_TSBPDRCV = 0x02
FLAG_CRYPT = 0x04
FLAG_TLPKTDROP = 0x08
FLAG_PERIODICNAK = 0x10
FLAG_REXMITFLG = 0x20
FLAG_STREAM = 0x40
FLAG_PACKET_FILTER = 0x80
LIVE_FLAGS = 0x3F

# A handshake type above this value is a rejection; the reason is type - 1000.
REJECTION_BASE = 1000


class RejectReason(IntEnum):
    """Reject codes libsrt understands (SRT_REJ_* and SRT_REJX_*)."""

    UNKNOWN = 0
    SYSTEM = 1
    PEER = 2
    RESOURCE = 3
    ROGUE = 4
    BACKLOG = 5
    IPE = 6
    CLOSE = 7
    VERSION = 8
    RDVCOOKIE = 9
    BADSECRET = 10
    UNSECURE = 11
    MESSAGEAPI = 12
    CONGESTION = 13
    FILTER = 14
    GROUP = 15
    TIMEOUT = 16
    CRYPTO = 17
    BAD_REQUEST = 1400
    UNAUTHORIZED = 1401
    OVERLOAD = 1402
    FORBIDDEN = 1403
    NOTFOUND = 1404
    BAD_MODE = 1405
    UNACCEPTABLE = 1406
    CONFLICT = 1409
    NOTSUP_MEDIA = 1415
    LOCKED = 1423
    INTERNAL_ERROR = 1500
    UNAVAILABLE = 1503


def reject_reason_name(code: int) -> str:
    try:
        return RejectReason(code).name.lower()
    except ValueError:
        return f"code {code}"


# Sequence-number arithmetic (31 bits, wrapping).


def seq_add(seq: int, n: int) -> int:
    return (seq + n) & SEQ_MASK


def seq_diff(a: int, b: int) -> int:
    """Signed distance a - b, correct across the wrap."""
    return ((a - b + 0x40000000) & SEQ_MASK) - 0x40000000


@dataclass(slots=True)
class DataPacket:
    seq: int
    msgno: int
    timestamp: int
    dst_socket_id: int
    payload: bytes
    position: int = 3
    in_order: bool = False
    key_flag: int = 0
    retransmitted: bool = False

    def to_bytes(self) -> bytes:
        word1 = (
            (self.position << 30)
            | (int(self.in_order) << 29)
            | (self.key_flag << 27)
            | (int(self.retransmitted) << 26)
            | (self.msgno & MSGNO_MASK)
        )
        return (
            _HEADER.pack(
                self.seq & SEQ_MASK, word1, self.timestamp & TIMESTAMP_MASK, self.dst_socket_id
            )
            + self.payload
        )


@dataclass(slots=True)
class ControlPacket:
    type: int
    timestamp: int
    dst_socket_id: int
    cif: bytes = b""
    subtype: int = 0
    type_info: int = 0

    def to_bytes(self) -> bytes:
        word0 = 0x80000000 | (self.type << 16) | self.subtype
        return (
            _HEADER.pack(word0, self.type_info, self.timestamp & TIMESTAMP_MASK, self.dst_socket_id)
            + self.cif
        )


Packet = DataPacket | ControlPacket


def parse_packet(datagram: bytes) -> Packet:
    if len(datagram) < HEADER_SIZE:
        raise PacketError(f"datagram of {len(datagram)} bytes is shorter than an SRT header")
    word0, word1, timestamp, dst = _HEADER.unpack_from(datagram)
    if word0 & 0x80000000:
        return ControlPacket(
            type=(word0 >> 16) & 0x7FFF,
            subtype=word0 & 0xFFFF,
            type_info=word1,
            timestamp=timestamp,
            dst_socket_id=dst,
            cif=bytes(datagram[HEADER_SIZE:]),
        )
    return DataPacket(
        seq=word0,
        msgno=word1 & MSGNO_MASK,
        timestamp=timestamp,
        dst_socket_id=dst,
        payload=bytes(datagram[HEADER_SIZE:]),
        position=word1 >> 30,
        in_order=bool(word1 & 0x20000000),
        key_flag=(word1 >> 27) & 0x3,
        retransmitted=bool(word1 & 0x04000000),
    )


# Handshake.


@dataclass(slots=True)
class Handshake:
    version: int
    hs_type: int
    socket_id: int
    isn: int = 0
    encryption: int = 0
    extension_field: int = 0
    mss: int = 1500
    flow_window: int = 8192
    cookie: int = 0
    peer_ip: bytes = bytes(16)
    extensions: list[tuple[int, bytes]] = field(default_factory=list)

    @classmethod
    def parse(cls, cif: bytes) -> Handshake:
        if len(cif) < HANDSHAKE_CIF_SIZE:
            raise PacketError(f"handshake of {len(cif)} bytes is shorter than 48")
        (
            version,
            encryption,
            extension_field,
            isn,
            mss,
            flow_window,
            hs_type,
            socket_id,
            cookie,
            peer_ip,
        ) = _HANDSHAKE.unpack_from(cif)
        extensions = []
        offset = HANDSHAKE_CIF_SIZE
        while offset + 4 <= len(cif):
            ext_type, words = struct.unpack_from("!HH", cif, offset)
            end = offset + 4 + 4 * words
            if end > len(cif):
                raise PacketError(f"handshake extension {ext_type} runs past the packet end")
            extensions.append((ext_type, bytes(cif[offset + 4 : end])))
            offset = end
        return cls(
            version=version,
            hs_type=hs_type,
            socket_id=socket_id,
            isn=isn & SEQ_MASK,
            encryption=encryption,
            extension_field=extension_field,
            mss=mss,
            flow_window=flow_window,
            cookie=cookie,
            peer_ip=peer_ip,
            extensions=extensions,
        )

    def to_bytes(self) -> bytes:
        parts = [
            _HANDSHAKE.pack(
                self.version,
                self.encryption,
                self.extension_field,
                self.isn,
                self.mss,
                self.flow_window,
                self.hs_type,
                self.socket_id,
                self.cookie,
                self.peer_ip,
            )
        ]
        for ext_type, content in self.extensions:
            if len(content) % 4:
                raise ValueError(f"extension {ext_type} is not a whole number of words")
            parts.append(struct.pack("!HH", ext_type, len(content) // 4))
            parts.append(content)
        return b"".join(parts)

    def extension(self, ext_type: int) -> bytes | None:
        for kind, content in self.extensions:
            if kind == ext_type:
                return content
        return None


def encode_peer_ip(host: str) -> bytes:
    """The peer address field, in libsrt's host-order-words layout (nobody checks it)."""
    raw = ipaddress.ip_address(host).packed.ljust(16, b"\0")
    return b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))


@dataclass(slots=True, frozen=True)
class HsReq:
    """HSREQ/HSRSP: SRT version, capability flags and the two TSBPD latencies (ms)."""

    srt_version: int
    flags: int
    recv_latency: int
    send_latency: int

    @classmethod
    def parse(cls, content: bytes) -> HsReq:
        if len(content) < _HSREQ.size:
            raise PacketError("HSREQ extension shorter than 12 bytes")
        version, flags, recv_latency, send_latency = _HSREQ.unpack_from(content)
        return cls(version, flags, recv_latency, send_latency)

    def to_bytes(self) -> bytes:
        return _HSREQ.pack(self.srt_version, self.flags, self.recv_latency, self.send_latency)


def encode_string(text: str) -> bytes:
    """SID/congestion strings: NUL-padded to words, bytes reversed inside each word."""
    raw = text.encode()
    raw += bytes(-len(raw) % 4)
    return b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))


def decode_string(content: bytes) -> str:
    if len(content) % 4:
        raise PacketError("string extension is not a whole number of words")
    raw = b"".join(content[i : i + 4][::-1] for i in range(0, len(content), 4))
    try:
        return raw.rstrip(b"\0").decode()
    except UnicodeDecodeError as exc:
        raise PacketError("string extension is not valid UTF-8") from exc


# ACK and loss lists.


@dataclass(slots=True, frozen=True)
class AckInfo:
    last_ack_seq: int
    rtt: int = 0
    rtt_var: int = 0
    available_buffer: int = 0
    packet_rate: int = 0
    capacity: int = 0
    receive_rate: int = 0

    @classmethod
    def parse(cls, cif: bytes) -> AckInfo:
        if len(cif) < 4:
            raise PacketError("ACK shorter than 4 bytes")
        count = min(len(cif) // 4, 7)
        return cls(*struct.unpack_from(f"!{count}I", cif))

    def to_bytes(self) -> bytes:
        return struct.pack(
            "!7I",
            self.last_ack_seq & SEQ_MASK,
            self.rtt,
            self.rtt_var,
            self.available_buffer,
            self.packet_rate,
            self.capacity,
            self.receive_rate,
        )


def encode_loss_list(ranges: list[tuple[int, int]]) -> bytes:
    """Encode inclusive (first, last) sequence ranges as an NAK CIF."""
    words: list[int] = []
    for first, last in ranges:
        if first == last:
            words.append(first)
        else:
            words.extend((first | 0x80000000, last))
    return struct.pack(f"!{len(words)}I", *words)


def decode_loss_list(cif: bytes) -> list[tuple[int, int]]:
    if len(cif) % 4:
        raise PacketError("loss list is not a whole number of words")
    words = struct.unpack(f"!{len(cif) // 4}I", cif)
    ranges = []
    i = 0
    while i < len(words):
        word = words[i]
        if word & 0x80000000:
            if i + 1 >= len(words) or words[i + 1] & 0x80000000:
                raise PacketError("loss list range has no end")
            first, last = word & SEQ_MASK, words[i + 1]
            if seq_diff(last, first) < 0:
                raise PacketError("loss list range ends before it starts")
            ranges.append((first, last))
            i += 2
        else:
            ranges.append((word, word))
            i += 1
    return ranges


def decode_dropreq(cif: bytes) -> tuple[int, int]:
    if len(cif) < 8:
        raise PacketError("DROPREQ shorter than 8 bytes")
    first, last = struct.unpack_from("!II", cif)
    return first & SEQ_MASK, last & SEQ_MASK
