"""Every use of aioice and aiortc beyond their public API, in one place.

Ghostream shares ICE sockets between sessions (`icemux`), packetizes a
stream's media once for all its viewers (`packetize`) and passes a WHIP
publisher's media on without decoding it (`ingest`); neither library is
built for that.  What is relied on, in aioice 0.13 / aiortc 1.16, is pinned
by tests/unit/test_webrtc_icemux.py, tests/unit/test_webrtc_packetize.py,
tests/interop/test_gstreamer_whep.py (the DTLS roles and suites) and
tests/unit/test_webrtc_receiving.py:

- an `RTCIceGatherer` keeps its aioice `Connection` in `_connection`, and
  `Connection.gather_candidates` does nothing once `_local_candidates_start`
  is set, so candidates put in `_local_candidates` are the ones answered;
- a `Connection` checks and sends through the `StunProtocol`s in
  `_protocols`: each has a `local_candidate`, sends with its transport's
  `sendto`, takes datagrams in `datagram_received`, and closes by closing
  its transport and waiting for `connection_lost`;
- a check from an address no candidate announced becomes a peer-reflexive
  candidate paired with the protocol it came in on, so a browser's ICE-TCP
  connection needs no signalling;
- an `RTCRtpSender` makes its encoder (`_RTCRtpSender__encoder`) only when it
  has none, and sends whatever that encoder's `pack` returns for what its
  track gives, when that is not an `av.Frame`;
- `H264Encoder._packetize(H264Encoder._split_bitstream(data))` makes the
  FU-A / STAP-A payloads of an Annex B access unit, and
  `Vp8Encoder._packetize(data, picture_id)` the payloads (RFC 7741) of a
  VP8 frame;
- aiortc reads the time through `aiortc.clock.current_ntp_time` and
  `current_ms`, looked up at each call;
- an `RTCRtpReceiver`'s decoder thread looks its decoder up with
  `aiortc.rtcrtpreceiver.get_decoder(codec)` for each new codec (the very
  objects of its transceiver's `_codecs`), calls its `decode(JitterFrame)`
  and hands each result to the receiver's track;
- the receiver reassembles frames with the `add(packet)` of its
  `_RTCRtpReceiver__jitter_buffer`, which returns (ask for a keyframe, frame);
  depayloaded bytes are in `packet._data`;
- `RTCRtpReceiver._send_rtcp_pli(ssrc)` sends a picture loss indication;
- a DTLS transport's role is `_role` ("auto" until an offer or answer sets
  it), set with `_set_role`; `createAnswer` answers `a=setup:passive` for
  "server", and an offer's `a=setup:actpass` leaves it "auto";
- `RTCCertificate._create_ssl_context` makes every DTLS connection's
  pyOpenSSL context, and `RTCDtlsTransport._do_handshake` calls its
  connection's (`_ssl`) `do_handshake` until done, swallowing the error.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aioice.candidate import Candidate
from aioice.ice import Connection, StunProtocol, get_host_addresses, server_reflexive_candidate
from aiortc import (
    RTCCertificate,
    RTCDtlsTransport,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCRtpReceiver,
    RTCRtpSender,
    RTCRtpTransceiver,
    clock,
)
from aiortc import rtcrtpreceiver as aiortc_receiver
from aiortc import sdp as aiortc_sdp
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtcicetransport import parse_stun_turn_uri
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add
from OpenSSL import SSL

__all__ = [
    "AudioFrames",
    "Connection",
    "StunProtocol",
    "VideoFrames",
    "adopt",
    "answer_dtls_passive",
    "bundled_connection",
    "connection_failure",
    "h264_payloads",
    "host_addresses",
    "new_protocol",
    "public_address",
    "receive_encoded",
    "request_keyframe",
    "send_prepacketized",
    "stun_server",
    "use_fast_clock",
    "use_rsa_peers",
    "vp8_payloads",
]

# Seconds from the NTP epoch (1900) to the Unix epoch (1970).
NTP_TO_UNIX = 2_208_988_800


def bundled_connection(pc: RTCPeerConnection) -> Connection:
    """The aioice connection of a peer connection whose media is bundled on one transport.

    ValueError when the offer left several (no BUNDLE): aiortc gives them one ufrag.
    """
    transports = (t.receiver.transport.transport for t in pc.getTransceivers())
    gatherers = {id(ice.iceGatherer): ice.iceGatherer for ice in transports}
    if len(gatherers) != 1:
        raise ValueError("the offer must bundle its media on one transport (a=group:BUNDLE)")
    (gatherer,) = gatherers.values()
    return gatherer._connection


def new_protocol(
    connection: Connection | None, transport: asyncio.DatagramTransport, candidate: Candidate
) -> StunProtocol:
    """An aioice endpoint of `connection` sending through `transport`, announced as `candidate`."""
    protocol = StunProtocol(connection)
    protocol.connection_made(transport)
    protocol.local_candidate = candidate
    return protocol


def adopt(
    connection: Connection, protocols: list[StunProtocol], candidates: list[Candidate]
) -> None:
    """Make these the connection's endpoints and candidates; it gathers nothing of its own."""
    connection._protocols += protocols
    connection._local_candidates += candidates
    connection._local_candidates_start = True
    connection._local_candidates_end = True


def host_addresses(ipv6: bool = True) -> list[str]:
    """The host's own addresses, as aioice would announce them (no loopback, no link-local)."""
    return get_host_addresses(use_ipv4=True, use_ipv6=ipv6)


def stun_server(url: str) -> tuple[str, int]:
    """Host and port of a `stun:` URL; ValueError when it is not one."""
    parsed = parse_stun_turn_uri(url)
    if parsed["scheme"] != "stun":
        raise ValueError("not a stun: URL")
    return parsed["host"], parsed["port"]


async def public_address(protocol: StunProtocol, server: tuple[str, int]) -> tuple[str, int]:
    """The address a STUN server sees `protocol`'s datagrams come from."""
    candidate, _ = await server_reflexive_candidate(protocol, server)
    return candidate.host, candidate.port


class _Prepacketized:
    """An encoder for a sender whose track gives RTP payloads already made."""

    def pack(self, frame: Any) -> tuple[list[bytes], int]:
        return frame.payloads, frame.timestamp


def send_prepacketized(sender: RTCRtpSender) -> None:
    """Let a sender send its track's `payloads` at `timestamp` as they are."""
    sender._RTCRtpSender__encoder = _Prepacketized()  # type: ignore[attr-defined]


def h264_payloads(access_unit: bytes) -> list[bytes]:
    """The RTP payloads (FU-A, STAP-A, single NAL units) of an Annex B access unit."""
    return H264Encoder._packetize(H264Encoder._split_bitstream(access_unit))


def vp8_payloads(frame: bytes, picture_id: int) -> list[bytes]:
    """The RTP payloads of a VP8 frame, each with its payload descriptor (RFC 7741)."""
    return Vp8Encoder._packetize(frame, picture_id)


def _ntp_now() -> int:
    """aiortc's NTP time (32.32 fixed point), from `time.time()` rather than through datetime."""
    now = time.time() + NTP_TO_UNIX
    seconds = int(now)
    return seconds << 32 | int((now - seconds) * (1 << 32))


def _ms_now() -> int:
    return int((time.time() + NTP_TO_UNIX) * 1000)


def use_fast_clock() -> None:
    """Give aiortc the same clock, cheaper: a sender reads it twice per RTP packet, and
    through datetime that is a large part of what sending costs per viewer."""
    clock.current_ntp_time = _ntp_now
    clock.current_ms = _ms_now


VIDEO_BUFFER = 512


class _PassThrough:
    """A stand-in for aiortc's decoders: the reassembled encoded frame, unchanged."""

    def decode(self, frame: JitterFrame) -> list[JitterFrame]:
        return [frame]


_aiortc_get_decoder = aiortc_receiver.get_decoder
_PASS_THROUGH = "_ghostream_pass_through"


def _get_decoder(codec: RTCRtpCodecParameters) -> Any:
    if getattr(codec, _PASS_THROUGH, False):
        return _PassThrough()
    return _aiortc_get_decoder(codec)


def receive_encoded(transceiver: RTCRtpTransceiver) -> None:
    """Make a transceiver's receiver hand over encoded frames, undecoded, as soon as complete.

    Call it once the remote description has chosen the codecs, before the
    local one starts the receiver: the codecs it was given are marked so
    that its decoder thread gets a `_PassThrough`, and the receiver gets a
    frame assembly that does not wait (`VideoFrames`, `AudioFrames`).
    """
    aiortc_receiver.get_decoder = _get_decoder
    for codec in transceiver._codecs:
        setattr(codec, _PASS_THROUGH, True)
    buffer = VideoFrames() if transceiver.kind == "video" else AudioFrames()
    transceiver.receiver._RTCRtpReceiver__jitter_buffer = buffer  # type: ignore[attr-defined]


class VideoFrames(JitterBuffer):
    """aiortc's jitter buffer, but a frame is handed over when its last packet (RTP marker) comes.

    aiortc's own waits for the first packet of the next frame, which adds a
    frame interval (or more, when the encoder skips frames) to the latency.
    """

    def __init__(self) -> None:
        super().__init__(capacity=VIDEO_BUFFER, is_video=True)

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        pli, frame = super().add(packet)
        return pli, frame if frame is not None else self._complete()

    def _complete(self) -> JitterFrame | None:
        """The buffer's first frame, if all its packets up to the marked last one are here."""
        if self._origin is None:
            return None
        parts = []
        timestamp = None
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None or timestamp not in (None, packet.timestamp):
                return None
            timestamp = packet.timestamp
            parts.append(packet._data)  # type: ignore[attr-defined]
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(data=b"".join(parts), timestamp=timestamp)
        return None


class AudioFrames:
    """Each audio packet is a whole frame: handed over at once; a late one is dropped."""

    def __init__(self) -> None:
        self._next: int | None = None

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        sequence = packet.sequence_number
        if self._next is not None and uint16_add(sequence, -self._next) >= 0x8000:
            return False, None
        self._next = uint16_add(sequence, 1)
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)  # type: ignore[attr-defined]


async def request_keyframe(receiver: RTCRtpReceiver, ssrc: int) -> None:
    await receiver._send_rtcp_pli(ssrc)


# aiortc's certificate is ECDSA, so as a DTLS server it needs only ECDSA suites; as a client it
# must also offer the suites of a server whose certificate is RSA (GStreamer's, for one).
DTLS_CIPHERS = (
    b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305:"
    b"ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:"
    b"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305:"
    b"ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA"
)
_aiortc_ssl_context = RTCCertificate._create_ssl_context
_aiortc_do_handshake = RTCDtlsTransport._do_handshake
_FAILURE = "_ghostream_failure"


# TLS alert descriptions (RFC 8446 §6) a failed WebRTC handshake may carry.
ALERTS = {
    40: "handshake failure (no cipher suite or curve in common)",
    42: "bad certificate",
    43: "unsupported certificate",
    46: "certificate unknown",
    47: "illegal parameter",
    48: "unknown CA",
    51: "decrypt error",
    70: "protocol version",
    71: "insufficient security",
    80: "internal error",
    110: "unsupported extension",
}


def _note_alert(connection: SSL.Connection, where: int, value: int) -> None:
    """OpenSSL's info callback: remember the last fatal alert sent or received, and by whom."""
    if where & SSL.SSL_CB_ALERT and value >> 8 == 2:
        side = "the peer sent" if where & SSL.SSL_CB_READ else "this server sent"
        description = ALERTS.get(value & 0xFF, f"alert {value & 0xFF}")
        setattr(connection, _FAILURE, f"{side} the alert {description}")


def _ssl_context(self: RTCCertificate, srtp_profiles: list) -> SSL.Context:
    context = _aiortc_ssl_context(self, srtp_profiles)
    context.set_cipher_list(DTLS_CIPHERS)
    context.set_info_callback(_note_alert)
    return context


async def _do_handshake(self: RTCDtlsTransport) -> None:
    """aiortc's handshake, keeping what OpenSSL said when it failed (aiortc only logs it)."""
    connection = self._ssl
    handshake = connection.do_handshake

    def recording() -> None:
        try:
            handshake()
        except SSL.WantReadError:
            raise
        except SSL.Error as exc:
            reasons = [str(part[-1]) for part in exc.args[0] if part] if exc.args else []
            alert = getattr(connection, _FAILURE, None)
            setattr(self, _FAILURE, "; ".join([*reasons, *([alert] if alert else [])]) or "")
            raise

    connection.do_handshake = recording
    await _aiortc_do_handshake(self)


def use_rsa_peers() -> None:
    """Let DTLS handshakes with peers whose certificate is RSA succeed, and say why one failed."""
    RTCCertificate._create_ssl_context = _ssl_context
    RTCDtlsTransport._do_handshake = _do_handshake


def answer_dtls_passive(pc: RTCPeerConnection) -> None:
    """Take the DTLS server role when the offer leaves it to us (`a=setup:actpass`), as
    browsers do: the server picks the suite for its own certificate, whatever the peer's."""
    offer = aiortc_sdp.SessionDescription.parse(pc.remoteDescription.sdp)
    if any(media.dtls is not None and media.dtls.role == "auto" for media in offer.media):
        for transceiver in pc.getTransceivers():
            transceiver.receiver.transport._set_role("server")


def connection_failure(pc: RTCPeerConnection) -> str:
    """Why a peer connection failed: ICE found no path, or the DTLS handshake failed (and why)."""
    for transceiver in pc.getTransceivers():
        dtls = transceiver.receiver.transport
        if dtls.transport.state == "failed":
            return "ICE failed: no candidate pair answered, or the peer stopped answering"
        if dtls.state == "failed":
            reason = getattr(dtls, _FAILURE, None)
            if reason is not None:
                return f"DTLS handshake failed: {reason or 'OpenSSL gave no reason'}"
            if dtls.encrypted:
                return "DTLS failed: the certificate does not match the offer's fingerprint"
            return "DTLS handshake failed: the connection broke"
    return "connection failed"
