"""Every use of aioice and aiortc beyond their public API, in one place.

Ghostream shares ICE sockets between sessions (`icemux`) and packetizes a
stream's media once for all its viewers (`packetize`); neither library is
built for that.  What is relied on, in aioice 0.13 / aiortc 1.16, is pinned
by tests/unit/test_webrtc_icemux.py and tests/unit/test_webrtc_packetize.py:

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
  FU-A / STAP-A payloads of an Annex B access unit;
- aiortc reads the time through `aiortc.clock.current_ntp_time` and
  `current_ms`, looked up at each call.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aioice.candidate import Candidate
from aioice.ice import Connection, StunProtocol, get_host_addresses, server_reflexive_candidate
from aiortc import RTCPeerConnection, RTCRtpSender, clock
from aiortc.codecs.h264 import H264Encoder
from aiortc.rtcicetransport import parse_stun_turn_uri

__all__ = [
    "Connection",
    "StunProtocol",
    "adopt",
    "bundled_connection",
    "h264_payloads",
    "host_addresses",
    "new_protocol",
    "public_address",
    "send_prepacketized",
    "stun_server",
    "use_fast_clock",
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
