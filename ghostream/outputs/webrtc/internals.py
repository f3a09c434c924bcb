"""Every use of aiortc beyond its public API, in one place.

A WHIP publisher's media is received by aiortc but never decoded: the
server passes it on as it came.  What is relied on, in aiortc 1.16, is
pinned by tests/unit/test_webrtc_receiving.py:

- an `RTCRtpReceiver`'s decoder thread looks its decoder up with
  `aiortc.rtcrtpreceiver.get_decoder(codec)` for each new codec, calls its
  `decode(JitterFrame)` and hands each result to the receiver's track;
- the receiver reassembles frames with the `add(packet)` of its
  `_RTCRtpReceiver__jitter_buffer`, which returns (ask for a keyframe, frame);
  depayloaded bytes are in `packet._data`;
- `RTCRtpReceiver._send_rtcp_pli(ssrc)` sends a picture loss indication.
"""

from __future__ import annotations

from aiortc import RTCRtpReceiver
from aiortc import rtcrtpreceiver as aiortc_receiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket
from aiortc.utils import uint16_add

VIDEO_BUFFER = 512


class _PassThrough:
    """A stand-in for aiortc's decoders: the reassembled encoded frame, unchanged."""

    def decode(self, frame: JitterFrame) -> list[JitterFrame]:
        return [frame]


def pass_encoded_frames() -> None:
    """Make every receiver of the process hand over encoded frames instead of decoding them.

    Only WHIP publishers are received from (WHEP sessions only send), so no
    receiver of the server ever needs a decoder.
    """
    aiortc_receiver.get_decoder = lambda codec: _PassThrough()


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


def hand_over_frames_at_once(receiver: RTCRtpReceiver, kind: str) -> None:
    """Give a receiver the frame assembly above instead of aiortc's buffering one."""
    buffer = VideoFrames() if kind == "video" else AudioFrames()
    receiver._RTCRtpReceiver__jitter_buffer = buffer  # type: ignore[attr-defined]


async def request_keyframe(receiver: RTCRtpReceiver, ssrc: int) -> None:
    await receiver._send_rtcp_pli(ssrc)
