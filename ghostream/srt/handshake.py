"""The listener's side of the HSv5 handshake, free of sockets and clocks.

A listener answers inductions with a SYN cookie and no state, so a flood of
forged inductions costs it nothing.  A conclusion that passes the cookie and
the protocol checks becomes a `ConnectionRequest` for the application to
accept or reject (authentication is asynchronous); so does one with a wrong
passphrase, marked as such, so that its refusal can wait like a wrong
password's and guessing stays slow.  Callers repeat their
conclusion until answered, so the listener remembers each answer by (peer
address, caller socket id) and repeats it word for word: a second connection
for the same caller would break libsrt's handshake.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from ghostream.srt.connection import Connection
from ghostream.srt.crypto import BadSecret, CryptoError, KeyMaterial, StreamCipher
from ghostream.srt.packet import (
    EXT_FLAG_HSREQ,
    EXT_FLAG_KMREQ,
    FLAG_STREAM,
    INDUCTION_MAGIC,
    LIVE_FLAGS,
    REJECTION_BASE,
    SRT_VERSION,
    ControlPacket,
    ControlType,
    ExtensionType,
    Handshake,
    HandshakeType,
    HsReq,
    RejectReason,
    decode_string,
    encode_peer_ip,
)

Address = tuple  # (host, port) or (host, port, flowinfo, scope_id)

# How long an answer is kept for a caller that repeats its conclusion.
ANSWER_MEMORY = 10.0
COOKIE_PERIOD = 60.0
MAX_STREAM_ID = 512


class HandshakeRejected(Exception):
    """A conclusion that breaks the protocol; `code` goes back to the caller."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class ConnectionRequest:
    """A caller that completed the handshake checks and waits for a decision."""

    peer: Address
    peer_socket_id: int
    stream_id: str
    isn: int
    peer_timestamp: int
    arrived: float
    recv_latency: float
    send_latency: float
    encryption: int
    hs_extension_km: bytes | None
    cipher: StreamCipher | None
    peer_mss: int = 1500
    # A wrong passphrase: refused like the rest, but decided (late) like a wrong password.
    guess_refused: HandshakeRejected | None = None
    key: tuple = field(init=False)

    def __post_init__(self) -> None:
        self.key = (self.peer, self.peer_socket_id)


@dataclass(slots=True)
class _Answer:
    datagram: bytes
    at: float
    connection_id: int | None


class ListenerHandshake:
    """Handshake logic shared by every connection of one listening socket.

    The passphrase may depend on the stream id (`passphrase_for`), which is
    only known from the conclusion: the induction advertises the key length
    of the default passphrase alone.
    """

    def __init__(
        self,
        *,
        latency: float = 0.120,
        passphrase: str = "",
        key_length: int = 16,
        listener_id: int | None = None,
        secret: bytes | None = None,
        passphrase_for: Callable[[str], str] | None = None,
        on_rejected: Callable[[Address, str, int, str], None] | None = None,
    ) -> None:
        self.latency = latency
        self.passphrase = passphrase
        self.passphrase_for = passphrase_for
        # Told of each conclusion refused here (peer, raw stream id, code, reason), once.
        self.on_rejected = on_rejected
        self.key_length = key_length
        self.listener_id = listener_id or (int.from_bytes(os.urandom(4), "big") & 0x3FFFFFFF) or 1
        # The SYN cookies' key: shared by the workers of one server, so that a
        # conclusion reaching another worker than its induction still passes.
        self._secret = secret or os.urandom(16)
        self._answers: dict[tuple, _Answer] = {}
        self._pending: set[tuple] = set()

    def cookie(self, peer: Address, now: float, *, previous: bool = False) -> int:
        period = int(now // COOKIE_PERIOD) - int(previous)
        message = f"{peer[0]}|{peer[1]}|{period}".encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return struct.unpack_from("!I", digest)[0]

    def receive(
        self, packet: ControlPacket, peer: Address, now: float
    ) -> bytes | ConnectionRequest | None:
        """Answer a handshake addressed to the listener.

        Returns a datagram to send back, a request awaiting `accept`/`reject`,
        or None when the packet deserves no answer.
        """
        hs = Handshake.parse(packet.cif)
        if hs.hs_type == HandshakeType.INDUCTION:
            return self._induction_response(hs, peer, now)
        if hs.hs_type != HandshakeType.CONCLUSION:
            return None
        key = (peer, hs.socket_id)
        self._forget_old(now)
        answer = self._answers.get(key)
        if answer is not None:
            return answer.datagram
        if key in self._pending:
            return None
        if hs.cookie not in (self.cookie(peer, now), self.cookie(peer, now, previous=True)):
            return None
        try:
            request = self._check_conclusion(hs, packet.timestamp, peer, now)
        except HandshakeRejected as rejection:
            if self.on_rejected is not None:
                sid = hs.extension(ExtensionType.SID)
                raw_id = decode_string(sid)[:MAX_STREAM_ID] if sid is not None else ""
                self.on_rejected(peer, raw_id, rejection.code, rejection.reason)
            return self.reject_conclusion(peer, hs.socket_id, rejection.code, now)
        self._pending.add(key)
        return request

    def accept(
        self, request: ConnectionRequest, socket_id: int, now: float
    ) -> tuple[Connection, bytes]:
        if request.guess_refused is not None:
            raise ValueError("a caller with a wrong passphrase cannot be accepted")
        connection = Connection.accepted(
            now=now,
            socket_id=socket_id,
            peer_socket_id=request.peer_socket_id,
            isn=request.isn,
            peer_timestamp=request.peer_timestamp,
            peer_timestamp_arrival=request.arrived,
            recv_latency=request.recv_latency,
            send_latency=request.send_latency,
            cipher=request.cipher,
        )
        extensions = [
            (
                ExtensionType.HSRSP,
                HsReq(
                    SRT_VERSION,
                    LIVE_FLAGS,
                    round(request.recv_latency * 1000),
                    round(request.send_latency * 1000),
                ).to_bytes(),
            )
        ]
        flags = EXT_FLAG_HSREQ
        if request.hs_extension_km is not None:
            extensions.append((ExtensionType.KMRSP, request.hs_extension_km))
            flags |= EXT_FLAG_KMREQ
        response = Handshake(
            version=5,
            hs_type=HandshakeType.CONCLUSION,
            socket_id=socket_id,
            isn=request.isn,
            encryption=request.encryption,
            extension_field=flags,
            mss=min(request.peer_mss, 1500),
            cookie=0,
            peer_ip=encode_peer_ip(request.peer[0]),
            extensions=extensions,
        )
        datagram = ControlPacket(
            type=ControlType.HANDSHAKE,
            timestamp=connection.timestamp(now),
            dst_socket_id=request.peer_socket_id,
            cif=response.to_bytes(),
        ).to_bytes()
        self._pending.discard(request.key)
        self._answers[request.key] = _Answer(datagram, now, socket_id)
        return connection, datagram

    def reject(self, request: ConnectionRequest, code: int, now: float) -> bytes:
        self._pending.discard(request.key)
        return self.reject_conclusion(request.peer, request.peer_socket_id, code, now)

    def refuse_guess(self, request: ConnectionRequest, now: float) -> bytes:
        """The late refusal of a request that carries a wrong passphrase."""
        rejection = request.guess_refused
        assert rejection is not None
        if self.on_rejected is not None:
            self.on_rejected(request.peer, request.stream_id, rejection.code, rejection.reason)
        return self.reject(request, rejection.code, now)

    def reject_conclusion(self, peer: Address, peer_socket_id: int, code: int, now: float) -> bytes:
        response = Handshake(
            version=5,
            hs_type=REJECTION_BASE + code,
            socket_id=self.listener_id,
            peer_ip=encode_peer_ip(peer[0]),
        )
        datagram = ControlPacket(
            type=ControlType.HANDSHAKE,
            timestamp=0,
            dst_socket_id=peer_socket_id,
            cif=response.to_bytes(),
        ).to_bytes()
        self._answers[(peer, peer_socket_id)] = _Answer(datagram, now, None)
        return datagram

    def forget(self, peer: Address, peer_socket_id: int) -> None:
        """Drop the remembered answer of a connection that has ended."""
        self._answers.pop((peer, peer_socket_id), None)

    def _forget_old(self, now: float) -> None:
        # Answers of live connections stay until `forget`; rejections expire.
        expired = [
            key
            for key, answer in self._answers.items()
            if answer.connection_id is None and now - answer.at > ANSWER_MEMORY
        ]
        for key in expired:
            del self._answers[key]

    def _induction_response(self, hs: Handshake, peer: Address, now: float) -> bytes:
        response = Handshake(
            version=5,
            hs_type=HandshakeType.INDUCTION,
            socket_id=self.listener_id,
            isn=hs.isn,
            encryption=self.key_length // 8 if self.passphrase else 0,
            extension_field=INDUCTION_MAGIC,
            mss=min(hs.mss, 1500) or 1500,
            flow_window=hs.flow_window,
            cookie=self.cookie(peer, now),
            peer_ip=encode_peer_ip(peer[0]),
        )
        return ControlPacket(
            type=ControlType.HANDSHAKE,
            timestamp=0,
            dst_socket_id=hs.socket_id,
            cif=response.to_bytes(),
        ).to_bytes()

    def _check_conclusion(
        self, hs: Handshake, timestamp: int, peer: Address, now: float
    ) -> ConnectionRequest:
        if hs.version < 5:
            raise HandshakeRejected(RejectReason.VERSION, "only HSv5 callers are supported")
        hsreq_bytes = hs.extension(ExtensionType.HSREQ)
        if hsreq_bytes is None:
            raise HandshakeRejected(RejectReason.VERSION, "conclusion without HSREQ")
        hsreq = HsReq.parse(hsreq_bytes)
        if hsreq.flags & FLAG_STREAM:
            raise HandshakeRejected(RejectReason.MESSAGEAPI, "file mode is not supported")
        # FLAG_PACKET_FILTER only advertises support; the FILTER extension asks for one.
        if hs.extension(ExtensionType.FILTER) is not None:
            raise HandshakeRejected(RejectReason.FILTER, "packet filters are not supported")
        congestion = hs.extension(ExtensionType.CONGESTION)
        if congestion is not None and decode_string(congestion) not in ("", "live"):
            raise HandshakeRejected(RejectReason.CONGESTION, "only live congestion control")
        sid = hs.extension(ExtensionType.SID)
        stream_id = decode_string(sid) if sid is not None else ""
        if len(stream_id.encode()) > MAX_STREAM_ID:
            raise HandshakeRejected(RejectReason.BAD_REQUEST, "stream id too long")
        kmreq = hs.extension(ExtensionType.KMREQ)
        cipher = None
        guess_refused = None
        passphrase = self.passphrase_for(stream_id) if self.passphrase_for else self.passphrase
        if passphrase:
            if kmreq is None:
                raise HandshakeRejected(RejectReason.UNSECURE, "caller has no passphrase")
            try:
                cipher = StreamCipher.from_key_material(KeyMaterial.parse(kmreq), passphrase)
            except BadSecret:
                guess_refused = HandshakeRejected(RejectReason.BADSECRET, "wrong passphrase")
            except CryptoError as exc:
                raise HandshakeRejected(RejectReason.BADSECRET, "bad key material") from exc
        elif kmreq is not None:
            raise HandshakeRejected(RejectReason.UNSECURE, "caller encrypts, server does not")
        return ConnectionRequest(
            peer=peer,
            peer_socket_id=hs.socket_id,
            stream_id=stream_id,
            isn=hs.isn,
            peer_timestamp=timestamp,
            arrived=now,
            # Each direction uses the larger of the receiver's and sender's wish.
            recv_latency=max(self.latency, hsreq.send_latency / 1000),
            send_latency=max(self.latency, hsreq.recv_latency / 1000),
            encryption=hs.encryption,
            hs_extension_km=kmreq if cipher is not None else None,
            cipher=cipher,
            peer_mss=hs.mss,
            guess_refused=guess_refused,
        )
