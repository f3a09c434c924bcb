"""Quality variants: `ID@480p` and friends, published back into the broker as ordinary streams.

Per source stream one task reads its packets, and a worker thread decodes
them once and encodes every active profile (libx264 with low-latency
settings, AAC).  Each variant is muxed to MPEG-TS and published with
`broker.publish`, so SRT, WebRTC and LL-HLS serve it with no special case.
A variant's keyframes fall on the source's, so players can switch between
them.  On demand (the default) a variant starts when someone asks for it
(`broker.provide`) and stops when nobody has watched it for `IDLE_STOP`.
A source the encoder cannot keep up with is skipped ahead by its packet
reader (a log line and a metric say so); the source stream never waits.

One variant is internal: `ID@webrtc`, the copy WebRTC viewers get of a
stream browsers cannot decode as it is (B-frames, HEVC, 10-bit, 4:2:2).
It keeps the source's size and frame rate, is H.264 constrained baseline
(no B-frames) without audio (those viewers get the source's as Opus), and is
published as an internal stream: no events, not listed as a live stream.
"""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from fractions import Fraction

import av
import trio

from ghostream import monitoring, threads
from ghostream.broker.feeds import Feeds
from ghostream.broker.packets import PacketHub, PacketReader
from ghostream.broker.registry import Broker, StreamNotFound
from ghostream.broker.stream import Stream, StreamEnded
from ghostream.config import Profile, TranscodingSettings
from ghostream.history.events import Event, PublishStarted
from ghostream.media.continuity import Continuity
from ghostream.media.demux import MediaPacket, Track
from ghostream.media.pictures import picture_size

log = logging.getLogger(__name__)

PROTOCOL = "transcode"
IDLE_STOP = 10.0
# The WebRTC copy costs the most and its viewers reconnect at once (a reload), so it goes sooner.
COPY_IDLE_STOP = 4.0
START_TIMEOUT = 2.5
MAX_LAG = 1.5
PACKET_SIZE = 188
MESSAGE = 7 * PACKET_SIZE
TIME_BASE = Fraction(1, 90000)
DEFAULT_RATE = 25
# The WebRTC copy: height 0 is the source's, 0 kbit/s is sized from the picture, no audio.
WEBRTC_PROFILE = Profile("webrtc", 0, 0, 0)
# Bits per pixel of the WebRTC copy's bit rate: sharp at baseline for live content.
COPY_BITS_PER_PIXEL = 0.1
COPY_MAX_KBPS = 8000


class TsSink:
    """Collects what the MPEG-TS muxer writes, for publishing in SRT-sized chunks."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def write(self, data: bytes) -> int:
        self.buffer += data
        return len(data)

    def take(self) -> list[bytes]:
        """Every whole TS packet written so far, in chunks of at most one SRT message."""
        size = len(self.buffer) - len(self.buffer) % PACKET_SIZE
        chunks = [bytes(self.buffer[i : i + MESSAGE]) for i in range(0, size, MESSAGE)]
        del self.buffer[:size]
        return chunks


class VariantEncoder:
    """One profile's encoders and muxer; used only from the source's worker thread."""

    def __init__(
        self, profile: Profile, source_width: int, source_height: int, rate: float = DEFAULT_RATE
    ) -> None:
        self.profile = profile
        copy = profile == WEBRTC_PROFILE
        # 4:2:0 needs even sizes; a source cropped to an odd one loses a column or a row.
        self.height = source_height // 2 * 2 if copy else profile.height
        self.width = (
            source_width // 2 * 2
            if copy
            else max(2, round(source_width * self.height / source_height / 2) * 2)
        )
        kbps = profile.video_kbps or min(
            COPY_MAX_KBPS, round(self.width * self.height * rate * COPY_BITS_PER_PIXEL / 1000)
        )
        self.sink = TsSink()
        # Each frame is written out as soon as it is muxed, not when a buffer fills, with its
        # PES length so that a demuxer knows it complete without waiting for the next one.
        self.container = av.open(
            self.sink,
            "w",
            format="mpegts",
            options={"flush_packets": "1", "omit_video_pes_length": "0"},
        )
        video = self.container.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
        video.width, video.height, video.pix_fmt = self.width, self.height, "yuv420p"
        video.bit_rate = kbps * 1000
        video.time_base = TIME_BASE
        video.codec_context.time_base = TIME_BASE
        params = "keyint=600:scenecut=0"
        if copy:
            params += f":vbv-maxrate={kbps}:vbv-bufsize={kbps}"
        video.options = {
            "preset": "veryfast",
            "tune": "zerolatency",
            "forced-idr": "1",
            "x264-params": params,
        } | ({"profile": "baseline"} if copy else {})
        self.video = video
        self.audio = None

    def add_audio(self, rate: int) -> None:
        audio = self.container.add_stream("aac", rate=rate)
        audio.bit_rate = self.profile.audio_kbps * 1000
        audio.layout = "stereo"
        self.audio = audio
        self.resampler = av.AudioResampler(format="fltp", layout="stereo", rate=rate)

    def encode_video(self, frame: av.VideoFrame, keyframe: bool) -> None:
        scaled = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        scaled.pts, scaled.time_base = frame.pts, TIME_BASE
        scaled.pict_type = av.video.frame.PictureType.I if keyframe else 0
        for packet in self.video.encode(scaled):
            self.container.mux(packet)

    def encode_audio(self, frame: av.AudioFrame) -> None:
        if self.audio is None:
            return
        for resampled in self.resampler.resample(frame):
            for packet in self.audio.encode(resampled):
                self.container.mux(packet)

    def close(self) -> None:
        try:
            self.container.close()
        except av.error.FFmpegError:
            pass


@dataclass
class Variant:
    """A running variant: its encoder and the broker stream it publishes, held open."""

    encoder: VariantEncoder
    stream: Stream
    publication: ExitStack

    def stop(self) -> None:
        self.encoder.close()
        self.publication.close()


class SourceTranscoder:
    """Decodes a source once and feeds every active variant of it."""

    def __init__(self, stream_id: str, broker: Broker, hub: PacketHub, always: bool) -> None:
        self.stream_id = stream_id
        self.broker = broker
        self.hub = hub
        self.always = always
        self.profiles: dict[str, Profile] = {}
        self.wanted: set[str] = set()
        self.variants: dict[str, Variant] = {}
        self.source_size: tuple[int, int] | None = None
        self.tracks: list[Track] = []
        self._decoders: dict[str, tuple[Track, av.CodecContext]] = {}
        self._clock = Continuity()
        self._last_watched: dict[str, float] = {}

    def want(self, profile: Profile) -> None:
        self.profiles[profile.name] = profile
        self.wanted.add(profile.name)
        self._last_watched[profile.name] = trio.current_time()

    async def run(self) -> None:
        """Until no variant is wanted or the source ends; a failure ends only these variants."""
        try:
            async with self.hub.read(self.stream_id, max_lag=MAX_LAG) as reader:
                self.tracks = await reader.tracks()
                try:
                    await self._loop(reader)
                finally:
                    for variant in self.variants.values():
                        variant.stop()
                    self.variants.clear()
        except (StreamEnded, StreamNotFound):
            pass

    async def _loop(self, reader: PacketReader) -> None:
        skips = 0
        while self.wanted:
            packet = await reader.receive()
            if reader.skips != skips:
                skips = reader.skips
                monitoring.TRANSCODE_BEHIND.labels(self.stream_id).inc()
                log.warning(
                    "%s: variants cannot keep up in real time; skipped to the latest keyframe",
                    self.stream_id,
                )
            self._expire_idle()
            for name in self.wanted - set(self.variants):
                if packet.track.kind == "video" and packet.keyframe:
                    await self._start_variant(name, packet)
            if not self.variants:
                continue
            variants = list(self.variants.values())
            chunks = await trio.to_thread.run_sync(
                self._transcode, packet, variants, limiter=threads.TRANSCODING
            )
            for variant, parts in zip(variants, chunks, strict=True):
                for chunk in parts:
                    variant.stream.publish(chunk)

    async def _start_variant(self, name: str, keyframe: MediaPacket) -> None:
        if self.source_size is None:
            self.source_size = await trio.to_thread.run_sync(
                picture_size, keyframe, limiter=threads.TRANSCODING
            )
        width, height = self.source_size
        profile = self.profiles[name]
        if not height or (profile != WEBRTC_PROFILE and profile.height >= height):
            log.info("%s: no %s variant, the source is only %dp", self.stream_id, name, height)
            self.wanted.discard(name)
            return
        source = self.broker.get(self.stream_id)
        rate = source.video.frame_rate if source and source.video else None
        encoder = VariantEncoder(profile, width, height, rate or DEFAULT_RATE)
        audio = next((t for t in self.tracks if t.kind == "audio"), None)
        if audio is not None and profile.audio_kbps:
            encoder.add_audio(audio.sample_rate)
        publication = ExitStack()
        internal = profile == WEBRTC_PROFILE
        stream = publication.enter_context(
            self.broker.publish(
                f"{self.stream_id}@{name}", "transcoder", PROTOCOL, internal=internal
            )
        )
        self.variants[name] = Variant(encoder, stream, publication)
        log.info(
            "%s: %s variant started (%dx%d)", self.stream_id, name, encoder.width, encoder.height
        )

    def _expire_idle(self) -> None:
        now = trio.current_time()
        for name in list(self.wanted):
            # With onDemand false variants last as long as the source; the WebRTC copy never does.
            if self.always and name != WEBRTC_PROFILE.name:
                continue
            variant = self.variants.get(name)
            if variant is not None and self.hub.watched(f"{self.stream_id}@{name}"):
                self._last_watched[name] = now
            elif now - self._last_watched.get(name, now) > (
                COPY_IDLE_STOP if name == WEBRTC_PROFILE.name else IDLE_STOP
            ):
                self.wanted.discard(name)
                if variant is not None:
                    self.variants.pop(name).stop()
                log.info("%s: %s variant stopped: nobody watched it", self.stream_id, name)

    def _transcode(self, packet: MediaPacket, variants: list[Variant]) -> list[list[bytes]]:
        """Decode once, encode for every variant; each variant's TS chunks, in order."""
        track, decoder = self._decoders.get(packet.track.kind, (None, None))
        if track is not packet.track or decoder is None:
            if track is not None:
                self._clock.restart()  # a new publisher: the variants' clock goes on
            decoder = av.CodecContext.create(packet.track.codec, "r")
            decoder.extradata = packet.track.extradata
            self._decoders[packet.track.kind] = (packet.track, decoder)
        source = av.Packet(packet.data)
        source.pts, source.dts, source.time_base = packet.pts, packet.dts, TIME_BASE
        try:
            frames = decoder.decode(source)
        except av.error.FFmpegError:
            return [[] for _ in variants]
        for frame in frames:
            frame.pts = self._clock(frame.pts if frame.pts is not None else packet.pts)
            frame.time_base = TIME_BASE
            for variant in variants:
                if packet.track.kind == "video":
                    # The frame's own flag: with B-frames a packet decodes into an earlier frame.
                    variant.encoder.encode_video(frame, frame.key_frame)
                else:
                    variant.encoder.encode_audio(frame)
        return [variant.encoder.sink.take() for variant in variants]


class Transcoder:
    """The service: starts a source's transcoder on demand (or at publish) and owns its task."""

    def __init__(self, settings: TranscodingSettings, broker: Broker, hub: PacketHub) -> None:
        self.settings = settings
        self.broker = broker
        self.hub = hub
        # Configured variants; the service also runs without them, for the WebRTC copy.
        self.profiles = {p.name: p for p in settings.parsed_profiles} if settings.enabled else {}
        self.sources = Feeds[SourceTranscoder](broker.supervisor, "transcode", SourceTranscoder.run)
        self._nursery: trio.Nursery | None = None
        self._published, self._receive = trio.open_memory_channel[str](64)
        broker.providers.append(self.provide)

    def observe(self, event: Event) -> None:
        """A broker listener: with onDemand false, every publish starts its variants."""
        if isinstance(event, PublishStarted) and "@" not in event.stream_id:
            try:
                self._published.send_nowait(event.stream_id)
            except trio.WouldBlock:
                log.warning("transcoding of %s is lagging behind publishes", event.stream_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            async for stream_id in self._receive:
                if not self.settings.on_demand:
                    for profile in self.profiles.values():
                        self._want(stream_id, profile)

    async def webrtc_copy(self, source_id: str) -> str | None:
        """Start (or join) a source's copy for browsers; its stream id, None if it did not start."""
        if not await self.ensure(source_id, WEBRTC_PROFILE):
            return None
        return f"{source_id}@{WEBRTC_PROFILE.name}"

    async def provide(self, stream_id: str) -> bool:
        """Start `SOURCE@PROFILE` if its source is live; wait briefly for its first keyframe."""
        source_id, _, name = stream_id.partition("@")
        profile = self.profiles.get(name)
        if profile is None or "@" in name:
            return False
        return await self.ensure(source_id, profile)

    async def ensure(self, source_id: str, profile: Profile) -> bool:
        """Make `SOURCE@PROFILE` (configured, or the WebRTC copy) while it is read."""
        name = profile.name
        stream_id = f"{source_id}@{name}"
        if self.broker.get(source_id) is None:
            return False
        self._want(source_id, profile)
        with trio.move_on_after(START_TIMEOUT):
            while True:
                stream = self.broker.get(stream_id)
                if stream is not None and stream.gop_start is not None:
                    return True
                source = self.sources.get(source_id)
                if source is None or name not in source.wanted:
                    return False
                await trio.sleep(0.05)
        return self.broker.get(stream_id) is not None

    def _want(self, source_id: str, profile: Profile) -> None:
        if self._nursery is None:
            return
        always = not self.settings.on_demand
        source = self.sources.open(
            self._nursery,
            source_id,
            lambda: SourceTranscoder(source_id, self.broker, self.hub, always),
        )
        source.want(profile)
