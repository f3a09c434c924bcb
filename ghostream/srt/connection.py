"""The SRT connection state machine (live mode), free of sockets and clocks.

Like h11 and aioquic, a `Connection` only reacts to what it is given: datagrams
with the time they arrived, messages to send, and timer expiries.  It answers
with datagrams to put on the wire, events for the application and the time at
which it next needs `handle_timer`.  This is what lets the tests replay loss,
reordering and half an hour of timestamps in milliseconds, and what keeps the
Trio driver a thin loop.

One connection sends and receives at once (HSv5 has no direction), so it holds
both halves: the sender's buffer with retransmission on NAK, and the
receiver's buffer with loss detection, ACK/NAK and timestamp-based delivery
(TSBPD) that drops what comes too late to be useful in a live stream.
"""

from __future__ import annotations

import os
import struct
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from ghostream.srt.buffers import LossList, ReceiveBuffer, SendBuffer, unwrap
from ghostream.srt.crypto import (
    KK_EVEN,
    BadSecret,
    CryptoError,
    KeyMaterial,
    StreamCipher,
    parse_km_state,
)
from ghostream.srt.packet import (
    EXT_FLAG_CONFIG,
    EXT_FLAG_HSREQ,
    EXT_FLAG_KMREQ,
    HEADER_SIZE,
    INDUCTION_MAGIC,
    LIVE_FLAGS,
    MSGNO_MASK,
    REJECTION_BASE,
    SEQ_MASK,
    SRT_VERSION,
    TIMESTAMP_MASK,
    UDT_DGRAM,
    AckInfo,
    ControlPacket,
    ControlType,
    DataPacket,
    ExtensionType,
    Handshake,
    HandshakeType,
    HsReq,
    Packet,
    PacketError,
    RejectReason,
    UserSubtype,
    decode_dropreq,
    decode_loss_list,
    encode_loss_list,
    encode_string,
    parse_packet,
    seq_diff,
)

ACK_INTERVAL = 0.010
MIN_NAK_INTERVAL = 0.020
KEEPALIVE_INTERVAL = 1.0
HANDSHAKE_RESEND_INTERVAL = 0.250
CONNECT_TIMEOUT = 3.0
PEER_IDLE_TIMEOUT = 5.0
# A listener's peer says something (an ACK, a keep-alive each second, data) at
# once after the handshake; one that stays silent this long never meant to.
FIRST_PACKET_TIMEOUT = 3.0
PEER_CLOSED = "peer closed the connection"
MAX_PAYLOAD = 1456
FLOW_WINDOW = 8192
# Packets further ahead than this are not a gap we could ever fill: a hostile
# or confused peer, not loss.
MAX_SEQ_JUMP = 8192 * 4
# The most packets held between delivery and the newest arrival: 2^17 packets
# is over 20 s of a 50 Mbit/s stream, and bounds what a peer with a stalled
# head (a play time far ahead) can make us allocate.
MAX_RECEIVE_SPAN = 1 << 17
# Words of loss list that fit one NAK datagram.
MAX_NAK_WORDS = MAX_PAYLOAD // 4
_ZERO_WORD = bytes(4)
_HEADER = struct.Struct("!IIII")
# Word 1 of a live data packet: PP=11 (a whole message), not in order, clear.
_SOLO_MESSAGE = 3 << 30
_RETRANSMITTED = 0x04  # the R bit, in byte 4


class State(Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Connected:
    pass


@dataclass(frozen=True, slots=True)
class DataReceived:
    payload: bytes


@dataclass(frozen=True, slots=True)
class ConnectionRejected:
    """The listener refused our handshake; `code` is libsrt's reject reason."""

    code: int


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    reason: str


Event = Connected | DataReceived | ConnectionRejected | ConnectionClosed


@dataclass(slots=True)
class Stats:
    packets_received: int = 0
    packets_sent: int = 0
    bytes_received: int = 0
    bytes_sent: int = 0
    packets_retransmitted: int = 0
    packets_retransmit_received: int = 0
    packets_lost: int = 0
    packets_dropped: int = 0
    packets_duplicate: int = 0
    packets_invalid: int = 0
    packets_undecryptable: int = 0
    naks_sent: int = 0


class Connection:
    """One SRT connection, caller or listener side, after `caller` or `accepted`."""

    def __init__(
        self,
        *,
        socket_id: int,
        now: float,
        latency: float,
        passphrase: str = "",
        key_length: int = 16,
    ) -> None:
        self.socket_id = socket_id
        self.peer_socket_id = 0
        self.state = State.CONNECTING
        self.stats = Stats()
        self.recv_latency = latency
        self.send_latency = latency
        self.rtt = 0.100
        self.rtt_var = 0.050
        self._rtt_measured = False
        self._start = now
        self._passphrase = passphrase
        self._key_length = key_length
        self._cipher: StreamCipher | None = None
        self._events: deque[Event] = deque()
        self._outgoing: list[bytes] = []
        self._last_sent = now
        self._last_received = now
        # How long the peer may stay silent: shorter until it has said anything.
        self._idle_timeout = PEER_IDLE_TIMEOUT
        # Sender half (sequence numbers in both halves are extended: see buffers.py).
        self._msgno = 1
        self._snd = SendBuffer(0)
        # Receiver half: `_rcv_max` is the next sequence number expected.
        self._rcv = ReceiveBuffer(0)
        self._rcv_max = 0
        self._loss = LossList()
        self._tsbpd_base = now
        self._ts_ref = 0
        self._ack_number = 0
        self._ack_sent_at: OrderedDict[int, float] = OrderedDict()
        self._ack_pending = False
        self._last_ack_seq = -1
        self._next_ack = now + ACK_INTERVAL
        self._next_nak = now + MIN_NAK_INTERVAL
        self._rate_window_start = now
        self._rate_packets = 0
        self._rate_bytes = 0
        self._packet_rate = 0
        self._byte_rate = 0
        # Caller handshake.
        self._stream_id = ""
        self._handshake: Handshake | None = None
        self._handshake_sent = now
        self._connect_deadline = now + CONNECT_TIMEOUT

    # Construction.

    @classmethod
    def caller(
        cls,
        *,
        now: float,
        stream_id: str = "",
        passphrase: str = "",
        key_length: int = 16,
        latency: float = 0.120,
        socket_id: int | None = None,
        isn: int | None = None,
    ) -> Connection:
        """A connection that starts by sending an induction to a listener."""
        conn = cls(
            socket_id=socket_id if socket_id is not None else _random_socket_id(),
            now=now,
            latency=latency,
            passphrase=passphrase,
            key_length=key_length,
        )
        conn._stream_id = stream_id
        isn = isn if isn is not None else int.from_bytes(os.urandom(4), "big") & SEQ_MASK
        conn._start_sequences(isn)
        conn._handshake = Handshake(
            version=4,
            hs_type=HandshakeType.INDUCTION,
            socket_id=conn.socket_id,
            isn=isn,
            extension_field=UDT_DGRAM,
        )
        conn._send_handshake(now)
        return conn

    @classmethod
    def accepted(
        cls,
        *,
        now: float,
        socket_id: int,
        peer_socket_id: int,
        isn: int,
        peer_timestamp: int,
        peer_timestamp_arrival: float,
        recv_latency: float,
        send_latency: float,
        cipher: StreamCipher | None,
    ) -> Connection:
        """The listener side, created once the caller's conclusion was accepted.

        The conclusion's timestamp and its arrival time anchor the peer's
        clock to ours: the TSBPD time base.
        """
        conn = cls(socket_id=socket_id, now=now, latency=recv_latency)
        conn.peer_socket_id = peer_socket_id
        conn.send_latency = send_latency
        conn._cipher = cipher
        conn._start_sequences(isn)
        conn._anchor_peer_clock(peer_timestamp, peer_timestamp_arrival)
        conn._idle_timeout = FIRST_PACKET_TIMEOUT
        conn.state = State.CONNECTED
        return conn

    def _start_sequences(self, isn: int) -> None:
        self._snd = SendBuffer(isn)
        self._rcv = ReceiveBuffer(isn)
        self._rcv_max = isn

    @property
    def encrypted(self) -> bool:
        return self._cipher is not None

    @property
    def unacknowledged(self) -> int:
        """Packets sent and still held for retransmission."""
        return len(self._snd)

    # Application interface.

    def timestamp(self, now: float) -> int:
        """Microseconds since this connection started, as carried by every packet."""
        return int((now - self._start) * 1_000_000) & TIMESTAMP_MASK

    def send(self, message: bytes | memoryview, now: float) -> None:
        if self.state is not State.CONNECTED:
            raise RuntimeError(f"cannot send on a {self.state.value} connection")
        if len(message) > MAX_PAYLOAD:
            raise ValueError(f"message of {len(message)} bytes exceeds {MAX_PAYLOAD}")
        seq = self._snd.next & SEQ_MASK
        word1 = _SOLO_MESSAGE | self._msgno
        payload = message
        if self._cipher is not None:
            word1 |= KK_EVEN << 27
            payload = self._cipher.encrypt(seq, message, KK_EVEN)
        datagram = _HEADER.pack(seq, word1, self.timestamp(now), self.peer_socket_id) + payload
        self._msgno = (self._msgno % MSGNO_MASK) + 1
        self._snd.append(datagram, now)
        self._outgoing.append(datagram)
        self._last_sent = now
        self.stats.packets_sent += 1
        self.stats.bytes_sent += len(message)

    def close(self, now: float) -> None:
        if self.state is State.CONNECTED:
            self._send_control(ControlType.SHUTDOWN, now, cif=_ZERO_WORD)
        self._finish("closed locally")

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def datagrams_to_send(self) -> list[bytes]:
        out, self._outgoing = self._outgoing, []
        return out

    def get_timer(self) -> float | None:
        if self.state is State.CLOSED:
            return None
        if self.state is State.CONNECTING:
            return min(self._handshake_sent + HANDSHAKE_RESEND_INTERVAL, self._connect_deadline)
        deadlines = [
            self._last_received + self._idle_timeout,
            self._last_sent + KEEPALIVE_INTERVAL,
        ]
        if self._ack_pending:
            deadlines.append(self._next_ack)
        if self._loss:
            deadlines.append(self._next_nak)
        play = self._next_play_time()
        if play is not None:
            deadlines.append(play)
        oldest = self._snd.oldest_sent()
        if oldest is not None:
            deadlines.append(oldest + self._sender_drop_delay())
        return min(deadlines)

    def handle_timer(self, now: float) -> None:
        if self.state is State.CONNECTING:
            if now >= self._connect_deadline:
                self._finish("connection timed out")
            elif now >= self._handshake_sent + HANDSHAKE_RESEND_INTERVAL:
                self._send_handshake(now)
            return
        if self.state is State.CLOSED:
            return
        if now >= self._last_received + self._idle_timeout:
            heard = self._idle_timeout == PEER_IDLE_TIMEOUT
            self._finish(
                "peer idle timeout" if heard else "nothing from the peer after the handshake"
            )
            return
        self._deliver(now)
        if self._ack_pending and now >= self._next_ack:
            self._send_ack(now)
        if self._loss and now >= self._next_nak:
            self._send_nak(self._loss.ranges(), now)
            self._next_nak = now + self._nak_interval()
        self._drop_old_sent(now)
        if now >= self._last_sent + KEEPALIVE_INTERVAL:
            self._send_control(ControlType.KEEPALIVE, now, cif=_ZERO_WORD)

    def receive_datagram(self, datagram: bytes, now: float) -> None:
        """Take one datagram; a malformed one is counted and otherwise ignored.

        Data, nearly every datagram, is read straight from the header words
        without making a packet object.
        """
        if len(datagram) < HEADER_SIZE or datagram[0] & 0x80:
            try:
                packet = parse_packet(datagram)
            except PacketError:
                self.stats.packets_invalid += 1
                return
            self.receive_packet(packet, now)
            return
        if self.state is State.CLOSED:
            return
        seq, word1, timestamp, _ = _HEADER.unpack_from(datagram)
        try:
            self._receive_data(seq, word1, timestamp, datagram[HEADER_SIZE:], now)
        except CryptoError:
            self.stats.packets_invalid += 1

    def receive_packet(self, packet: Packet, now: float) -> None:
        """Take a packet the driver already parsed to route it."""
        if self.state is State.CLOSED:
            return
        try:
            if isinstance(packet, DataPacket):
                flags = (packet.key_flag << 27) | (packet.retransmitted << 26)
                self._receive_data(packet.seq, flags, packet.timestamp, packet.payload, now)
            else:
                self._receive_control(packet, now)
        except (PacketError, CryptoError):
            self.stats.packets_invalid += 1

    # Internals: plumbing.

    def _emit(self, datagram: bytes, now: float) -> None:
        self._outgoing.append(datagram)
        self._last_sent = now

    def _send_control(
        self,
        ctype: int,
        now: float,
        *,
        cif: bytes = b"",
        subtype: int = 0,
        type_info: int = 0,
    ) -> None:
        word0 = 0x80000000 | (ctype << 16) | subtype
        header = _HEADER.pack(word0, type_info, self.timestamp(now), self.peer_socket_id)
        self._emit(header + cif, now)

    def _finish(self, reason: str) -> None:
        if self.state is not State.CLOSED:
            self.state = State.CLOSED
            self._events.append(ConnectionClosed(reason))

    # Caller handshake.

    def _send_handshake(self, now: float) -> None:
        assert self._handshake is not None
        packet = ControlPacket(
            type=ControlType.HANDSHAKE,
            timestamp=self.timestamp(now),
            dst_socket_id=0,
            cif=self._handshake.to_bytes(),
        )
        self._emit(packet.to_bytes(), now)
        self._handshake_sent = now

    def _receive_handshake_response(self, packet: ControlPacket, now: float) -> None:
        hs = Handshake.parse(packet.cif)
        if hs.hs_type > REJECTION_BASE and hs.hs_type < 0xFFFFFFF0:
            self.state = State.CLOSED
            self._events.append(ConnectionRejected(hs.hs_type - REJECTION_BASE))
            return
        assert self._handshake is not None
        if (
            hs.hs_type == HandshakeType.INDUCTION
            and self._handshake.hs_type == HandshakeType.INDUCTION
        ):
            if hs.version < 5 or hs.extension_field != INDUCTION_MAGIC:
                self.state = State.CLOSED
                self._events.append(ConnectionRejected(RejectReason.VERSION))
                return
            self._handshake = self._conclusion(hs, now)
            self._send_handshake(now)
        elif (
            hs.hs_type == HandshakeType.CONCLUSION
            and self._handshake.hs_type == HandshakeType.CONCLUSION
        ):
            self._complete_connection(hs, packet.timestamp, now)

    def _conclusion(self, induction: Handshake, now: float) -> Handshake:
        assert self._handshake is not None
        flags = EXT_FLAG_HSREQ
        latency_ms = round(self.recv_latency * 1000)
        extensions = [
            (
                ExtensionType.HSREQ,
                HsReq(SRT_VERSION, LIVE_FLAGS, latency_ms, latency_ms).to_bytes(),
            )
        ]
        encryption = 0
        if self._passphrase:
            self._cipher = StreamCipher.generate(self._passphrase, self._key_length)
            extensions.append((ExtensionType.KMREQ, self._cipher.key_material().to_bytes()))
            flags |= EXT_FLAG_KMREQ
            encryption = self._key_length // 8
        if self._stream_id:
            extensions.append((ExtensionType.SID, encode_string(self._stream_id)))
            flags |= EXT_FLAG_CONFIG
        return Handshake(
            version=5,
            hs_type=HandshakeType.CONCLUSION,
            socket_id=self.socket_id,
            isn=self._handshake.isn,
            encryption=encryption,
            extension_field=flags,
            cookie=induction.cookie,
            extensions=extensions,
        )

    def _complete_connection(self, hs: Handshake, peer_timestamp: int, now: float) -> None:
        hsrsp_bytes = hs.extension(ExtensionType.HSRSP)
        if hsrsp_bytes is None:
            raise PacketError("conclusion response without HSRSP")
        hsrsp = HsReq.parse(hsrsp_bytes)
        if self._cipher is not None:
            kmrsp = hs.extension(ExtensionType.KMRSP)
            if kmrsp is None or parse_km_state(kmrsp) is not None:
                self.state = State.CLOSED
                self._events.append(ConnectionRejected(RejectReason.BADSECRET))
                return
        self.peer_socket_id = hs.socket_id
        # The listener's SND field is the latency it applies sending to us.
        self.recv_latency = max(self.recv_latency, hsrsp.send_latency / 1000)
        self.send_latency = max(self.send_latency, hsrsp.recv_latency / 1000)
        self._anchor_peer_clock(peer_timestamp, now)
        self._last_received = now
        self.state = State.CONNECTED
        self._events.append(Connected())

    # Control packets.

    def _receive_control(self, packet: ControlPacket, now: float) -> None:
        if self.state is State.CONNECTING:
            if packet.type == ControlType.HANDSHAKE:
                self._receive_handshake_response(packet, now)
            return
        ctype = packet.type
        if ctype == ControlType.HANDSHAKE:
            # A repeated conclusion (the listener answers those) is not the peer using us.
            return
        self._last_received = now
        self._idle_timeout = PEER_IDLE_TIMEOUT
        if ctype == ControlType.ACK:
            self._receive_ack(packet, now)
        elif ctype == ControlType.NAK:
            self._retransmit(decode_loss_list(packet.cif), now)
        elif ctype == ControlType.ACKACK:
            sent = self._ack_sent_at.pop(packet.type_info, None)
            if sent is not None:
                self._update_rtt(now - sent)
        elif ctype == ControlType.SHUTDOWN:
            # What already arrived is the end of the stream: hand it over now
            # rather than waiting for play times that no longer matter.
            self._deliver(float("inf"))
            self._finish(PEER_CLOSED)
        elif ctype == ControlType.DROPREQ:
            self._receive_dropreq(packet, now)
        elif ctype == ControlType.USER and packet.subtype == UserSubtype.KMREQ:
            self._receive_kmreq(packet, now)
        # KEEPALIVE only refreshes _last_received.

    def _receive_ack(self, packet: ControlPacket, now: float) -> None:
        ack = AckInfo.parse(packet.cif)
        self._snd.acknowledge(unwrap(ack.last_ack_seq & SEQ_MASK, self._snd.next))
        if len(packet.cif) > 4:
            self._send_control(ControlType.ACKACK, now, cif=_ZERO_WORD, type_info=packet.type_info)
            if ack.rtt:
                self._rtt_measured = True
                self.rtt = ack.rtt / 1_000_000
                self.rtt_var = ack.rtt_var / 1_000_000

    def _retransmit(self, ranges: list[tuple[int, int]], now: float) -> None:
        snd = self._snd
        gone: list[tuple[int, int]] = []
        # A packet resent less than one smoothed RTT ago may still be on its
        # way: libsrt's rule, less four deviations, so a jittery link (or a
        # busy host) never waits out a periodic NAK it should have answered.
        # The floor, half libsrt's shortest NAK period, bounds what a peer
        # flooding NAKs can make us send.
        min_gap = max(self.rtt - 4 * self.rtt_var, 0.010)
        for wire_first, wire_last in ranges:
            first = unwrap(wire_first, snd.next)
            # Clip to what we ever sent so a hostile range cannot make us loop.
            last = min(first + seq_diff(wire_last, wire_first), snd.next - 1)
            if last < first:
                continue
            if first < snd.base:
                gone.append((first & SEQ_MASK, min(last, snd.base - 1) & SEQ_MASK))
                first = snd.base
            for seq in range(first, last + 1):
                datagram = snd.get(seq)
                if datagram is None:
                    continue
                last_sent = snd.last_sent(seq)
                if last_sent != snd.first_sent(seq) and now - last_sent < min_gap:
                    continue
                snd.mark_resent(seq, now)
                resent = bytearray(datagram)
                resent[4] |= _RETRANSMITTED
                self._emit(bytes(resent), now)
                self.stats.packets_retransmitted += 1
        for first, last in gone:
            self._send_control(
                ControlType.DROPREQ, now, cif=struct.pack("!II", first, last), type_info=0
            )

    def _receive_dropreq(self, packet: ControlPacket, now: float) -> None:
        wire_first, wire_last = decode_dropreq(packet.cif)
        first = unwrap(wire_first, self._rcv_max)
        last = first + seq_diff(wire_last, wire_first)
        if last < first or last - first >= MAX_SEQ_JUMP:
            return
        self._loss.remove_range(first, last)
        # Everything up to `last` is settled: delivery may skip it without waiting.
        rcv = self._rcv
        if rcv.head <= last < self._rcv_max:
            while rcv.head <= last and rcv.head not in rcv:
                rcv.skip_to(rcv.head + 1)
                self.stats.packets_dropped += 1
        self._ack_pending = True

    def _receive_kmreq(self, packet: ControlPacket, now: float) -> None:
        if self._cipher is None:
            return
        try:
            self._cipher.update(KeyMaterial.parse(packet.cif))
        except BadSecret:
            return
        self._send_control(ControlType.USER, now, cif=packet.cif, subtype=UserSubtype.KMRSP)

    def _update_rtt(self, sample: float) -> None:
        if not self._rtt_measured:
            # The first real sample is better than the 100 ms guess.
            self._rtt_measured = True
            self.rtt, self.rtt_var = sample, sample / 2
            return
        self.rtt_var = (3 * self.rtt_var + abs(self.rtt - sample)) / 4
        self.rtt = (7 * self.rtt + sample) / 8

    # Data packets.

    def _receive_data(
        self,
        wire_seq: int,
        word1: int,
        timestamp: int,
        payload: bytes,
        now: float,
    ) -> None:
        """Take a data packet by its header words (word 1: flags and message number)."""
        if self.state is not State.CONNECTED:
            return
        self._last_received = now
        self._idle_timeout = PEER_IDLE_TIMEOUT
        rcv = self._rcv
        seq = unwrap(wire_seq, self._rcv_max)
        ahead = seq - self._rcv_max
        if ahead > MAX_SEQ_JUMP or seq - rcv.head >= MAX_RECEIVE_SPAN:
            self.stats.packets_invalid += 1
            return
        if seq < rcv.head or seq in rcv:
            self.stats.packets_duplicate += 1
            return
        key_flag = (word1 >> 27) & 0x3
        retransmitted = (word1 >> 26) & 1
        if key_flag:
            if self._cipher is None:
                self.stats.packets_undecryptable += 1
                return
            try:
                payload = self._cipher.decrypt(wire_seq, payload, key_flag)
            except CryptoError:
                self.stats.packets_undecryptable += 1
                return
        elif self._cipher is not None:
            self.stats.packets_undecryptable += 1
            return
        self._ts_ref = ts = self._extend_timestamp(timestamp)
        rcv.put(seq, payload, self._tsbpd_base + ts / 1e6 + self.recv_latency)
        stats = self.stats
        stats.packets_received += 1
        stats.packets_retransmit_received += retransmitted
        stats.bytes_received += len(payload)
        self._rate_packets += 1
        self._rate_bytes += len(payload)
        if ahead >= 0:
            if ahead > 0:
                lost_first = self._rcv_max
                stats.packets_lost += ahead
                if not self._loss:
                    self._next_nak = now + self._nak_interval()
                self._loss.append(lost_first, seq - 1)
                self._send_nak([(lost_first, seq - 1)], now)
            self._rcv_max = seq + 1
        elif self._loss:
            self._loss.remove(seq)
        if not self._ack_pending:
            self._ack_pending = True
            self._next_ack = max(self._next_ack, now)
        self._deliver(now)

    def _anchor_peer_clock(self, peer_timestamp: int, arrival: float) -> None:
        self._ts_ref = peer_timestamp
        self._tsbpd_base = arrival - peer_timestamp / 1_000_000

    def _extend_timestamp(self, timestamp: int) -> int:
        """Place a 32-bit timestamp on a 64-bit line near the last one seen (wrap-safe)."""
        delta = ((timestamp - self._ts_ref) + 0x80000000) % 0x100000000 - 0x80000000
        return self._ts_ref + delta

    def _first_buffered(self) -> int | None:
        """The lowest buffered sequence number: the head, or what follows its hole.

        Between the head and `_rcv_max`, what is not buffered is either in the
        loss list (jumped over a range at a time) or was given up by the
        peer's DROPREQ (walked over), so this never walks the buffer.
        """
        rcv = self._rcv
        seq = rcv.head
        while seq < self._rcv_max and rcv.count:
            if seq in rcv:
                return seq
            hole = self._loss.range_at(seq)
            seq = seq + 1 if hole is None else hole[1] + 1
        return None

    def _next_play_time(self) -> float | None:
        first = self._first_buffered()
        return None if first is None else self._rcv.play_time(first)

    def _deliver(self, now: float) -> None:
        rcv = self._rcv
        events = self._events
        while (first := self._first_buffered()) is not None:
            if rcv.play_time(first) > now:
                return
            if first != rcv.head:
                self._loss.remove_below(first)
                self.stats.packets_dropped += first - rcv.head
                rcv.skip_to(first)
            events.append(DataReceived(rcv.pop_head()))

    def _ack_seq(self) -> int:
        first_lost = self._loss.first
        return (self._rcv_max if first_lost is None else first_lost) & SEQ_MASK

    def _send_ack(self, now: float) -> None:
        elapsed = now - self._rate_window_start
        if elapsed >= 1.0:
            self._packet_rate = int(self._rate_packets / elapsed)
            self._byte_rate = int(self._rate_bytes / elapsed)
            self._rate_window_start = now
            self._rate_packets = self._rate_bytes = 0
        self._ack_number = (self._ack_number % 0x7FFFFFFF) + 1
        info = AckInfo(
            last_ack_seq=self._ack_seq(),
            rtt=int(self.rtt * 1_000_000),
            rtt_var=int(self.rtt_var * 1_000_000),
            available_buffer=max(FLOW_WINDOW - self._rcv.count, 2),
            packet_rate=self._packet_rate,
            capacity=max(self._packet_rate * 2, 1000),
            receive_rate=self._byte_rate,
        )
        self._send_control(ControlType.ACK, now, cif=info.to_bytes(), type_info=self._ack_number)
        self._ack_sent_at[self._ack_number] = now
        while len(self._ack_sent_at) > 1024:
            self._ack_sent_at.popitem(last=False)
        self._ack_pending = False
        self._next_ack = now + ACK_INTERVAL

    def _send_nak(self, ranges: Iterable[tuple[int, int]], now: float) -> None:
        words = 0
        fitting = []
        for first, last in ranges:
            words += 1 if first == last else 2
            if words > MAX_NAK_WORDS:
                break
            fitting.append((first & SEQ_MASK, last & SEQ_MASK))
        self._send_control(ControlType.NAK, now, cif=encode_loss_list(fitting))
        self.stats.naks_sent += 1

    def _nak_interval(self) -> float:
        # libsrt's formula, capped so a lost NAK is repeated well within the
        # latency even before the RTT estimate has settled.
        interval = min((self.rtt + 4 * self.rtt_var) / 2, self.recv_latency / 3)
        return max(interval, MIN_NAK_INTERVAL)

    def _sender_drop_delay(self) -> float:
        return max(1.25 * self.send_latency + 0.020, 1.0)

    def _drop_old_sent(self, now: float) -> None:
        self._snd.drop_sent_before(now - self._sender_drop_delay())


def _random_socket_id() -> int:
    return (int.from_bytes(os.urandom(4), "big") & 0x3FFFFFFF) or 1
