"""A stream's video as VP8 for the WebRTC viewers whose browser offers no H.264.

Firefox without OpenH264 (Debian's, many Linux installs) offers only VP8,
VP9 and AV1.  For those viewers the stream's video is decoded and encoded
to VP8 (libvpx, realtime) once per stream, cut into RTP payloads (RFC 7741)
once, and every such viewer's track is offered the same frames, as Opus
audio is shared (`broker.audio.AudioFeed`).  The feed starts with its
first viewer, begins at the live edge (the cached GOP is decoded, not
sent), and stops once nobody has watched it for `IDLE_STOP`, so a reload
does not restart the encoder.  A viewer who joins gets a keyframe at once.

When the publisher itself sends VP8 (a WHIP publish from such a browser),
nothing is encoded: its frames are offered as they came (`offer_published`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from fractions import Fraction

import av
import trio

from ghostream import threads
from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import StreamNotFound
from ghostream.broker.stream import StreamEnded
from ghostream.media.continuity import Continuity
from ghostream.media.demux import MediaPacket, Track
from ghostream.webrtc import internals
from ghostream.webrtc.tracks import PacketTrack, RtpFrame

log = logging.getLogger(__name__)

# How far (seconds of media) the feed may lag before it jumps to the latest keyframe.
MAX_VIDEO_LAG = 1.0
# Viewers reconnect at once on a reload: the encoder waits this long for them (seconds).
IDLE_STOP = 4.0
TIME_BASE = Fraction(1, 90000)
# Bits per pixel per frame, and the most: VP8 needs a little more than baseline H.264.
BITS_PER_PIXEL = 0.12
MAX_KBPS = 8000
DEFAULT_RATE = 25
# Most speed libvpx's realtime mode gives (-16..16; higher is faster, softer).
CPU_USED = "12"
# A keyframe at least this often (frames), so a viewer that lost one recovers.
KEYFRAME_INTERVAL = 300


class Vp8Encoder:
    """Decodes a stream's video and encodes it as VP8 RTP payloads; used from one thread."""

    def __init__(self) -> None:
        self._track: Track | None = None
        self._decoder: av.CodecContext | None = None
        self._encoder: av.VideoCodecContext | None = None
        self._picture_id = 0

    def encode(
        self, packet: MediaPacket, keyframe: bool, send: bool, rate: float
    ) -> list[tuple[list[bytes], int, bool]]:
        """Each frame `packet` decodes into, when `send`: payloads, pts and whether a keyframe."""
        if packet.track is not self._track:
            self._track = packet.track
            self._decoder = av.CodecContext.create(packet.track.codec, "r")
            self._decoder.extradata = packet.track.extradata
        assert self._decoder is not None
        source = av.Packet(packet.data)
        source.pts, source.dts, source.time_base = packet.pts, packet.dts, TIME_BASE
        try:
            frames = self._decoder.decode(source)
        except av.error.FFmpegError as exc:
            log.debug("undecodable video frame skipped: %s", exc)
            return []
        out = []
        for frame in frames if send else ():
            pts = frame.pts if frame.pts is not None else packet.pts
            encoder = self._encoder_for(frame, rate)
            frame = frame.reformat(width=encoder.width, height=encoder.height, format="yuv420p")
            frame.pts, frame.time_base = pts, TIME_BASE
            frame.pict_type = av.video.frame.PictureType.I if keyframe else 0
            keyframe = False
            for encoded in encoder.encode(frame):
                payloads = internals.vp8_payloads(bytes(encoded), self._picture_id)
                self._picture_id = (self._picture_id + 1) % (1 << 15)
                out.append((payloads, pts, encoded.is_keyframe))
        return out

    def _encoder_for(self, frame: av.VideoFrame, rate: float) -> av.VideoCodecContext:
        """The encoder, made anew when the picture size changes (a new publisher)."""
        width, height = frame.width // 2 * 2, frame.height // 2 * 2
        encoder = self._encoder
        if encoder is not None and (encoder.width, encoder.height) == (width, height):
            return encoder
        kbps = min(MAX_KBPS, round(width * height * rate * BITS_PER_PIXEL / 1000))
        encoder = av.CodecContext.create("libvpx", "w")
        encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
        encoder.time_base = TIME_BASE
        encoder.framerate = Fraction(rate).limit_denominator(1001)
        encoder.bit_rate = kbps * 1000
        encoder.gop_size = KEYFRAME_INTERVAL
        encoder.qmin, encoder.qmax = 4, 56
        # libvpx's threads spin while they wait: on a busy machine two cost several times one.
        encoder.thread_count = 1
        encoder.options = {
            "deadline": "realtime",
            "cpu-used": CPU_USED,
            "lag-in-frames": "0",
            "error-resilient": "1",
            "static-thresh": "1",
            "undershoot-pct": "95",
            "bufsize": str(kbps * 1000),
            "maxrate": str(kbps * 1000),
        }
        self._encoder = encoder
        return encoder


class Vp8Feed:
    """A stream's video as VP8, encoded once and shared by its viewers without H.264."""

    def __init__(self, stream_id: str, published: Callable[[], bool] = lambda: False) -> None:
        self.stream_id = stream_id
        # Whether the publisher sends VP8 now: its frames are passed on, not encoded.
        self.published = published
        self.tracks: set[PacketTrack] = set()
        self.frames = 0
        self._last_watched = trio.current_time()
        self._clock = Continuity()
        self._picture_id = 0

    def idle(self) -> bool:
        if self.tracks:
            self._last_watched = trio.current_time()
        return trio.current_time() - self._last_watched > IDLE_STOP

    def offer_published(self, frame: bytes, pts: int, keyframe: bool) -> None:
        """A VP8 publisher's frame, for every viewer as it is."""
        payloads = internals.vp8_payloads(frame, self._picture_id)
        self._picture_id = (self._picture_id + 1) % (1 << 15)
        self._offer(payloads, pts, keyframe)

    def _offer(self, payloads: list[bytes], pts: int, keyframe: bool) -> None:
        self.frames += 1
        frame = RtpFrame(payloads, self._clock(pts), sum(map(len, payloads)))
        for track in self.tracks:
            track.offer(frame, keyframe)

    async def run(self, hub: PacketHub) -> None:
        """Until nobody watched for `IDLE_STOP` or the stream ends."""
        encoder = Vp8Encoder()
        source = None
        log.info("%s: VP8 for WebRTC started", self.stream_id)
        try:
            async with hub.read(self.stream_id, max_lag=MAX_VIDEO_LAG) as reader:
                stream = hub.broker.get(self.stream_id)
                rate = (stream.video.frame_rate if stream and stream.video else 0) or DEFAULT_RATE
                newest = reader.newest("video")
                edge = newest.pts if newest is not None else None
                while not self.idle():
                    packet = await reader.receive()
                    if packet.track.kind != "video" or self.published():
                        continue
                    if packet.track is not source:
                        if source is not None:
                            self._clock.restart()
                        source = packet.track
                    # The cached GOP is decoded to reach the live edge, and not sent.
                    send = edge is None or packet.pts >= edge
                    # A new viewer (or one that fell behind) waits for a keyframe: make one.
                    keyframe = send and any(t.wants_keyframe for t in self.tracks)
                    encoded = await trio.to_thread.run_sync(
                        encoder.encode, packet, keyframe, send, rate,
                        limiter=threads.TRANSCODING,
                    )  # fmt: skip
                    for payloads, pts, is_keyframe in encoded:
                        self._offer(payloads, pts, is_keyframe)
        except (StreamEnded, StreamNotFound):
            pass
        finally:
            log.info("%s: VP8 for WebRTC stopped", self.stream_id)
