"""A stream's Opus as AAC, encoded once per stream for every forwarding target that needs it.

RTMP (FLV) carries AAC, not Opus; a stream published over WHIP has Opus.
Each target that writes FLV subscribes its writer here instead of reading
the stream's audio: one decoder and one encoder per stream, in a worker
thread, whatever the number of targets.
"""

from __future__ import annotations

import logging
import queue
from fractions import Fraction
from typing import Protocol

import av
import trio

from ghostream import threads
from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import StreamNotFound
from ghostream.broker.stream import StreamEnded
from ghostream.media.bitstream import AAC_SAMPLE_RATES
from ghostream.media.demux import MediaPacket, Track

log = logging.getLogger(__name__)

RATE = 48000
CHANNELS = 2
BIT_RATE = 128000
AAC_FRAME = 1024
# A jump in the Opus timestamps larger than this (samples) restarts the AAC timeline.
MAX_GAP = 2 * 960
# AAC-LC, 48 kHz, stereo: the AudioSpecificConfig of what the encoder makes.
AAC_TRACK = Track(
    "audio",
    "aac",
    ((2 << 11) | (AAC_SAMPLE_RATES.index(RATE) << 7) | (CHANNELS << 3)).to_bytes(2, "big"),
    sample_rate=RATE,
    channels=CHANNELS,
)


class PacketQueue(Protocol):
    def put_nowait(self, item: MediaPacket) -> None: ...


class AacFeed:
    """Runs while it has subscribers; a subscriber whose queue is full misses packets."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.subscribers: set[PacketQueue] = set()
        self._track: Track | None = None
        self._decoder: av.AudioCodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        self._encoder: av.AudioCodecContext | None = None
        self._fifo = av.AudioFifo()
        self._next_pts: int | None = None

    async def run(self, hub: PacketHub) -> None:
        try:
            async with hub.read(self.stream_id, max_lag=5.0) as reader:
                while self.subscribers:
                    packet = await reader.receive()
                    if packet.track.kind != "audio" or packet.track.codec != "opus":
                        continue
                    made = await trio.to_thread.run_sync(
                        self._transcode, packet, limiter=threads.AUDIO
                    )
                    for encoded in made:
                        for subscriber in list(self.subscribers):
                            try:
                                subscriber.put_nowait(encoded)
                            except queue.Full:
                                pass
        except (StreamEnded, StreamNotFound):
            pass

    def _transcode(self, packet: MediaPacket) -> list[MediaPacket]:
        if packet.track is not self._track:
            self._start(packet.track)
        assert self._decoder and self._resampler and self._encoder
        at = packet.pts * RATE // 90000
        if self._next_pts is None or abs(at - self._next_pts - self._fifo.samples) > MAX_GAP:
            # The first packet, or packets were lost: the AAC timeline follows the stream's.
            self._fifo = av.AudioFifo()
            self._next_pts = at
        try:
            frames = self._decoder.decode(av.Packet(packet.data))
        except av.error.FFmpegError as exc:
            log.debug("%s: undecodable Opus packet skipped: %s", self.stream_id, exc)
            return []
        for frame in frames:
            frame.pts = None
            for resampled in self._resampler.resample(frame):
                self._fifo.write(resampled)
        out = []
        while self._fifo.samples >= AAC_FRAME:
            frame = self._fifo.read(AAC_FRAME)
            frame.pts, frame.time_base = self._next_pts, Fraction(1, RATE)
            self._next_pts += AAC_FRAME
            for encoded in self._encoder.encode(frame):
                pts = int(encoded.pts) * 90000 // RATE
                out.append(MediaPacket(AAC_TRACK, bytes(encoded), pts, pts, True))
        return out

    def _start(self, track: Track) -> None:
        self._track = track
        self._next_pts = None
        decoder = av.CodecContext.create("libopus", "r")
        decoder.extradata = track.extradata
        self._decoder = decoder
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=RATE)
        encoder = av.CodecContext.create("aac", "w")
        encoder.sample_rate = RATE
        encoder.layout = "stereo"
        encoder.format = "fltp"
        encoder.bit_rate = BIT_RATE
        encoder.time_base = Fraction(1, RATE)
        self._encoder = encoder
