"""An aiortc track fed with already-encoded packets, so that nothing is re-encoded per viewer."""

from __future__ import annotations

import asyncio
from fractions import Fraction

import av
from aiortc import MediaStreamTrack

# Packets waiting for aiortc to send them; more means the viewer's loop is stuck.
TRACK_QUEUE = 256


class PacketTrack(MediaStreamTrack):
    """A track of already-encoded packets; aiortc packetizes them without re-encoding."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.sent = 0
        self._queue: asyncio.Queue[av.Packet] = asyncio.Queue(TRACK_QUEUE)
        self._need_keyframe = kind == "video"

    def offer(self, data: bytes, pts: int, time_base: Fraction, keyframe: bool) -> None:
        """Queue a packet; when the queue is full, drop and restart at a keyframe."""
        if self._queue.full():
            while not self._queue.empty():
                self._queue.get_nowait()
            self._need_keyframe = self.kind == "video"
        if self._need_keyframe and not keyframe:
            return
        self._need_keyframe = False
        packet = av.Packet(data)
        packet.pts = pts
        packet.dts = pts
        packet.time_base = time_base
        self._queue.put_nowait(packet)
        self.sent += len(data)

    async def recv(self) -> av.Packet:
        return await self._queue.get()
