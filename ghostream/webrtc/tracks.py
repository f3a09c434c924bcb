"""aiortc tracks fed with RTP payloads made once per stream, so nothing is redone per viewer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiortc import MediaStreamTrack

from ghostream.media.continuity import CLOCK, Continuity
from ghostream.media.demux import MediaPacket
from ghostream.media.reencode import OPUS, RATE

# Frames waiting for aiortc to send them; more means the viewer's loop is stuck.
TRACK_QUEUE = 256


@dataclass(frozen=True, slots=True)
class RtpFrame:
    """An access unit or audio packet as RTP payloads, at a time in the RTP clock (90 kHz, 48 kHz).

    The payloads are shared by every viewer of the stream; the timestamp is a
    viewer's own (it may be squeezed while the viewer catches up).
    """

    payloads: list[bytes]
    timestamp: int
    size: int


class PacketTrack(MediaStreamTrack):
    """A track of RTP payloads: its sender (`internals.send_prepacketized`) only adds headers."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.sent = 0
        self._queue: asyncio.Queue[RtpFrame] = asyncio.Queue(TRACK_QUEUE)
        self._need_keyframe = kind == "video"

    def offer(self, frame: RtpFrame, keyframe: bool) -> None:
        """Queue a frame; when the queue is full, drop and restart at a keyframe."""
        if self._queue.full():
            while not self._queue.empty():
                self._queue.get_nowait()
            self._need_keyframe = self.kind == "video"
        if self._need_keyframe and not keyframe:
            return
        self._need_keyframe = False
        self._queue.put_nowait(frame)
        self.sent += frame.size

    @property
    def wants_keyframe(self) -> bool:
        """Whether frames are dropped until a keyframe comes (new, or fell behind)."""
        return self._need_keyframe

    async def recv(self) -> RtpFrame:  # type: ignore[override]
        return await self._queue.get()


class OpusSink:
    """A viewer's audio track, subscribed to the stream's shared Opus feed.

    Packets keep their payload; their 90 kHz time becomes the 48 kHz RTP
    clock, through a `Continuity` so that a new publisher's clock, which
    starts anywhere, goes on where the previous one stopped.
    """

    def __init__(self, track: PacketTrack) -> None:
        self.track = track
        self._clock = Continuity(step=OPUS.frame_samples * CLOCK // RATE)

    def put_nowait(self, packet: MediaPacket) -> None:
        timestamp = self._clock(packet.pts) * RATE // CLOCK
        self.track.offer(RtpFrame([packet.data], timestamp, len(packet.data)), True)
