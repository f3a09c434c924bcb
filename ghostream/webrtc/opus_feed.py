"""A stream's audio as Opus for every WebRTC viewer: AAC encoded once per stream, Opus as it is."""

from __future__ import annotations

import logging
from fractions import Fraction

import av
import trio

from ghostream import threads
from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import StreamNotFound
from ghostream.broker.stream import StreamEnded
from ghostream.media.demux import MediaPacket, Track
from ghostream.webrtc.tracks import PacketTrack, RtpFrame

log = logging.getLogger(__name__)

OPUS_RATE = 48000
OPUS_FRAME = 960
# How far (seconds of media) the feed may lag before it jumps ahead.
MAX_AUDIO_LAG = 1.0


class OpusFeed:
    """A stream's audio as Opus, transcoded once and shared by all its WebRTC viewers."""

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.tracks: set[PacketTrack] = set()
        self._track: Track | None = None
        self._decoder: av.AudioCodecContext | None = None
        self._resampler: av.AudioResampler | None = None
        self._encoder: av.AudioCodecContext | None = None
        self._fifo: av.AudioFifo | None = None
        self._next_pts = 0

    async def run(self, hub: PacketHub) -> None:
        """Until the last viewer leaves or the stream ends."""
        self._track = None  # after a failure, the next run starts with a fresh decoder
        try:
            async with hub.read(self.stream_id, max_lag=MAX_AUDIO_LAG) as reader:
                while self.tracks:
                    packet = await reader.receive()
                    if packet.track.kind != "audio":
                        continue
                    if packet.track.codec == "opus":
                        # A WebRTC publisher's own Opus: passed through, 90 kHz to 48 kHz.
                        encoded = [(packet.data, packet.pts * OPUS_RATE // 90000)]
                    elif packet.track.codec == "aac":
                        encoded = await trio.to_thread.run_sync(
                            self._transcode, packet, limiter=threads.AUDIO
                        )
                    else:
                        continue
                    for data, pts in encoded:
                        frame = RtpFrame([data], pts, len(data))
                        for track in self.tracks:
                            track.offer(frame, True)
        except (StreamEnded, StreamNotFound):
            pass

    def _transcode(self, packet: MediaPacket) -> list[tuple[bytes, int]]:
        if packet.track is not self._track:
            self._start(packet)
        assert self._decoder and self._resampler and self._encoder and self._fifo
        out = []
        try:
            frames = self._decoder.decode(av.Packet(packet.data))
        except av.error.FFmpegError as exc:
            log.debug("%s: undecodable AAC frame skipped: %s", self.stream_id, exc)
            return out
        for frame in frames:
            frame.pts = None
            for resampled in self._resampler.resample(frame):
                self._fifo.write(resampled)
        while self._fifo.samples >= OPUS_FRAME:
            frame = self._fifo.read(OPUS_FRAME)
            frame.pts = self._next_pts
            frame.time_base = Fraction(1, OPUS_RATE)
            self._next_pts += OPUS_FRAME
            out += [(bytes(p), frame.pts) for p in self._encoder.encode(frame)]
        return out

    def _start(self, packet: MediaPacket) -> None:
        """A new (or first) audio track: fresh decoder and encoder; the Opus clock goes on."""
        self._track = packet.track
        self._decoder = av.CodecContext.create("aac", "r")
        self._decoder.extradata = packet.track.extradata
        self._resampler = av.AudioResampler(format="s16", layout="stereo", rate=OPUS_RATE)
        encoder = av.CodecContext.create("libopus", "w")
        encoder.sample_rate = OPUS_RATE
        encoder.layout = "stereo"
        encoder.format = "s16"
        encoder.bit_rate = 96000
        encoder.time_base = Fraction(1, OPUS_RATE)
        encoder.options = {"application": "lowdelay", "frame_duration": "20"}
        self._encoder = encoder
        if self._fifo is None:
            self._next_pts = packet.pts * OPUS_RATE // 90000
        self._fifo = av.AudioFifo()
