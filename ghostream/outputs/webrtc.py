"""WebRTC playback: one aiortc peer connection per browser viewer, fed from the broker.

This module is the one place where asyncio code runs.  `WebRtcOutput.run`
opens a trio-asyncio loop; every session is a Trio task in the output's
nursery that talks to aiortc through `aio_as_trio`, so a session's life
(negotiation, feeding, ICE failure, DELETE, shutdown) is structured like any
other connection of the server.

Video is passed through: each viewer reads the stream's demuxed H.264 access
units with its own cursor (`PacketHub`), so a viewer that falls behind skips
to the next keyframe without touching anyone else.  Audio must become Opus,
and that is done once per stream by `OpusFeed`, whose packets every viewer
of the stream shares.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from functools import partial

import av
import trio
import trio_asyncio
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpCodecParameters,
    RTCSessionDescription,
)
from aiortc import codecs as aiortc_codecs
from aiortc import sdp as aiortc_sdp
from aiortc.rtcrtpsender import RTCRtpSender

from ghostream import monitoring
from ghostream.broker.demux import MediaPacket, Track
from ghostream.broker.packets import PacketHub, PacketReader
from ghostream.broker.registry import Broker, StreamNotFound
from ghostream.broker.stream import StreamEnded
from ghostream.config import WebrtcSettings
from ghostream.tasks import start_registered

log = logging.getLogger(__name__)

PROTOCOL = "webrtc"
VIDEO_TIME_BASE = Fraction(1, 90000)
OPUS_RATE = 48000
OPUS_FRAME = 960
# How far (seconds of media) a viewer may lag before it jumps to the latest keyframe.
MAX_VIDEO_LAG = 1.0
# Packets waiting for aiortc to send them; more means the viewer's loop is stuck.
TRACK_QUEUE = 256
NEGOTIATION_TIMEOUT = 10.0
# The cached GOP a viewer starts with is played this many times faster than real time.
CATCH_UP_SPEED = 25
# H.264 profiles (profile_idc + constraint byte) a browser may offer, most capable first.
H264_PROFILES = ("64001f", "4d001f", "f4001f", "42e01f", "42001f")


class WebRtcError(Exception):
    """A request that cannot be served; `status` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _offer_h264_profiles() -> None:
    """Let aiortc answer every H.264 profile a browser offers, not only baseline.

    The video is passed through, so the answer must name the profile the
    stream really has; aiortc's own table only lists constrained baseline.
    """
    table = aiortc_codecs.CODECS["video"]
    known = {c.parameters.get("profile-level-id") for c in table if c.mimeType == "video/H264"}
    next_type = max(c.payloadType for c in table) + 1
    for profile in H264_PROFILES:
        if profile in known:
            continue
        parameters = {
            "level-asymmetry-allowed": "1",
            "packetization-mode": "1",
            "profile-level-id": profile,
        }
        for mime, payload_type, params in (
            ("video/H264", next_type, parameters),
            ("video/rtx", next_type + 1, {"apt": next_type}),
        ):
            table.append(
                RTCRtpCodecParameters(
                    mimeType=mime, clockRate=90000, payloadType=payload_type, parameters=params
                )
            )
        next_type += 2


_offer_h264_profiles()


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
        try:
            async with hub.read(self.stream_id, max_lag=MAX_VIDEO_LAG) as reader:
                while self.tracks:
                    packet = await reader.receive()
                    if packet.track.kind != "audio" or packet.track.codec != "aac":
                        continue
                    encoded = await trio.to_thread.run_sync(self._transcode, packet)
                    for data, pts in encoded:
                        for track in self.tracks:
                            track.offer(data, pts, Fraction(1, OPUS_RATE), True)
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
        """A new (or first) audio track: fresh decoder and encoder, timeline from its pts."""
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
        self._fifo = av.AudioFifo()
        self._next_pts = packet.pts * OPUS_RATE // 90000


class PortRange:
    """Binds aiortc's ICE sockets to the configured UDP range instead of any port.

    aioice binds host candidates to port 0; the loop's datagram endpoint
    factory is wrapped so that those binds take the next free port of the
    range, and fail (leaving the session without candidates) when none is.
    """

    def __init__(self, low: int, high: int) -> None:
        self.ports = list(range(low, high + 1))
        self._next = 0

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        create = loop.create_datagram_endpoint

        async def create_in_range(factory: Callable, local_addr=None, **kwargs):
            if local_addr is None or local_addr[1] != 0 or "sock" in kwargs:
                return await create(factory, local_addr=local_addr, **kwargs)
            return await create(factory, sock=self.bind(local_addr[0]), **kwargs)

        loop.create_datagram_endpoint = create_in_range  # type: ignore[method-assign]

    def bind(self, host: str) -> socket.socket:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        for _ in range(len(self.ports)):
            port = self.ports[self._next]
            self._next = (self._next + 1) % len(self.ports)
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((host, port))
            except OSError:
                sock.close()
                continue
            sock.setblocking(False)
            return sock
        raise OSError(errno.EADDRINUSE, "every port of webrtc.minPortUDP..maxPortUDP is in use")


@dataclass
class Session:
    id: str
    stream_id: str
    peer: str
    # The player page's counter id, so that the page and its session count once.
    page_uid: str = ""
    closed: trio.Event = field(default_factory=trio.Event)
    reason: str = "viewer left"

    def close(self, reason: str) -> None:
        if not self.closed.is_set():
            self.reason = reason
            self.closed.set()


class WebRtcOutput:
    def __init__(self, settings: WebrtcSettings, broker: Broker, hub: PacketHub) -> None:
        self.settings = settings
        self.broker = broker
        self.hub = hub
        self.sessions: dict[str, Session] = {}
        self._ports = PortRange(settings.min_port_udp, settings.max_port_udp)
        self._opus: dict[str, OpusFeed] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nursery: trio.Nursery | None = None

    @property
    def ice_servers(self) -> list[str]:
        return list(self.settings.stun_servers)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio_asyncio.open_loop() as loop:
            self._ports.install(loop)
            self._loop = loop
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()

    def page_uids(self) -> set[str]:
        return {s.page_uid for s in self.sessions.values() if s.page_uid}

    async def answer(
        self, stream_id: str, offer_sdp: str, peer: str, page_uid: str = ""
    ) -> tuple[Session, str]:
        """Negotiate a viewer's session; the answer SDP, or WebRtcError with its status."""
        if self._nursery is None:
            raise WebRtcError(503, "WebRTC is not running")
        if not await self.broker.provide(stream_id):
            raise WebRtcError(404, f"no live stream {stream_id!r}")
        kinds = _offered_kinds(offer_sdp)
        session = Session(secrets.token_urlsafe(12), stream_id, peer, page_uid[:64])
        return session, await self._nursery.start(self._session, session, offer_sdp, kinds)

    def end(self, session_id: str) -> bool:
        session = self.sessions.get(session_id)
        if session is None:
            return False
        session.close("viewer hung up")
        return True

    async def _session(
        self,
        session: Session,
        offer_sdp: str,
        kinds: set[str],
        *,
        task_status: trio.TaskStatus[str],
    ) -> None:
        trio_asyncio.current_loop.set(self._loop)
        served = False
        try:
            with self.broker.attend(session.stream_id, session.peer, PROTOCOL) as viewer:
                async with self.hub.read(session.stream_id, max_lag=MAX_VIDEO_LAG) as reader:
                    with trio.fail_after(NEGOTIATION_TIMEOUT):
                        tracks = await reader.tracks()
                    pc, video, audio, answer = await self._negotiate(
                        session, offer_sdp, kinds, tracks
                    )
                    try:
                        self.sessions[session.id] = session
                        served = True
                        task_status.started(answer)
                        log.info(
                            "%s watching %s over WebRTC (session %s)",
                            session.peer,
                            session.stream_id,
                            session.id,
                        )
                        try:
                            await self._serve(session, pc, reader, video, audio)
                        except Exception:
                            # A bug in one session must not stop the others or the server.
                            log.exception("WebRTC session %s failed", session.id)
                            session.reason = "internal error"
                    finally:
                        self.sessions.pop(session.id, None)
                        viewer.bytes_sent = (video.sent if video else 0) + (
                            audio.sent if audio else 0
                        )
                        viewer.left_because = session.reason
                        await _close(pc)
        except StreamNotFound as exc:
            raise WebRtcError(404, f"no live stream {session.stream_id!r}") from exc
        except StreamEnded as ended:
            session.reason = ended.reason
        except trio.TooSlowError as exc:
            raise WebRtcError(503, "the stream has not sent decodable video yet") from exc
        finally:
            if served:
                log.info(
                    "%s stopped watching %s over WebRTC: %s",
                    session.peer,
                    session.stream_id,
                    session.reason,
                )

    async def _negotiate(
        self, session: Session, offer_sdp: str, kinds: set[str], tracks: list[Track]
    ) -> tuple[RTCPeerConnection, PacketTrack | None, PacketTrack | None, str]:
        servers = [RTCIceServer(urls=url) for url in self.settings.stun_servers]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        try:
            return await self._set_up(session, pc, offer_sdp, kinds, tracks)
        except BaseException:
            await _close(pc)
            raise

    async def _set_up(
        self,
        session: Session,
        pc: RTCPeerConnection,
        offer_sdp: str,
        kinds: set[str],
        tracks: list[Track],
    ) -> tuple[RTCPeerConnection, PacketTrack | None, PacketTrack | None, str]:
        @pc.on("connectionstatechange")
        def state_changed() -> None:
            if pc.connectionState in ("failed", "closed"):
                session.close(f"connection {pc.connectionState}")

        video = audio = None
        video_track = next((t for t in tracks if t.kind == "video"), None)
        if video_track is not None and "video" in kinds:
            if video_track.codec != "h264":
                raise WebRtcError(
                    415, f"the stream's video is {video_track.codec}; browsers need H.264"
                )
            video = PacketTrack("video")
            transceiver = pc.addTransceiver(video, direction="sendonly")
            transceiver.setCodecPreferences(h264_preferences(video_track, offer_sdp))
        if any(t.kind == "audio" for t in tracks) and "audio" in kinds:
            audio = PacketTrack("audio")
            pc.addTransceiver(audio, direction="sendonly")
        if video is None and audio is None:
            raise WebRtcError(400, "the offer asks for no media this stream has")
        try:
            offer = RTCSessionDescription(offer_sdp, "offer")
            await trio_asyncio.aio_as_trio(pc.setRemoteDescription)(offer)
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise WebRtcError(400, f"malformed SDP offer: {exc}") from exc
        try:
            answer = await trio_asyncio.aio_as_trio(pc.createAnswer)()
        except (ValueError, RuntimeError) as exc:
            raise WebRtcError(406, f"no common codec with the offer: {exc}") from exc
        await trio_asyncio.aio_as_trio(pc.setLocalDescription)(answer)
        sdp = pc.localDescription.sdp
        if "a=candidate" not in sdp:
            log.warning(
                "WebRTC viewer of %s from %s refused: no free UDP port in %d-%d "
                "(raise webrtc.maxPortUDP to serve more viewers)",
                session.stream_id,
                session.peer,
                self.settings.min_port_udp,
                self.settings.max_port_udp,
            )
            raise WebRtcError(503, "no free WebRTC port; try again later")
        return pc, video, audio, sdp

    async def _serve(
        self,
        session: Session,
        pc: RTCPeerConnection,
        reader: PacketReader,
        video: PacketTrack | None,
        audio: PacketTrack | None,
    ) -> None:
        gauge = monitoring.WEBRTC_SESSIONS
        gauge.inc()
        try:
            async with trio.open_nursery() as nursery:
                if audio is not None:
                    nursery.start_soon(self._share_audio, session.stream_id, audio)
                if video is not None:
                    nursery.start_soon(_feed_video, reader, video, session)
                await session.closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            gauge.dec()

    async def _share_audio(self, stream_id: str, track: PacketTrack) -> None:
        feed = self._opus.get(stream_id)
        if feed is None:
            feed = OpusFeed(stream_id)
            assert self._nursery is not None
            start_registered(
                self._nursery, self._opus, stream_id, feed, partial(feed.run, self.hub)
            )
        feed.tracks.add(track)
        try:
            await trio.sleep_forever()
        finally:
            feed.tracks.discard(track)


def _offered_kinds(offer_sdp: str) -> set[str]:
    """The media kinds an offer asks for; WebRtcError 400 when it is not usable SDP."""
    try:
        parsed = aiortc_sdp.SessionDescription.parse(offer_sdp)
    except Exception as exc:  # aiortc's parser also asserts on malformed input
        raise WebRtcError(400, f"malformed SDP offer: {exc or type(exc).__name__}") from exc
    if not parsed.media or any(not media.rtp.codecs for media in parsed.media):
        raise WebRtcError(400, "malformed SDP offer: a media section lists no codec")
    return {media.kind for media in parsed.media}


async def _close(pc: RTCPeerConnection) -> None:
    """Close a peer connection even while the session is being cancelled, but never hang."""
    with trio.CancelScope(shield=True), trio.move_on_after(2):
        await trio_asyncio.aio_as_trio(pc.close)()


async def _feed_video(reader: PacketReader, track: PacketTrack, session: Session) -> None:
    """Send the video, the cached GOP first, squeezed in time so the browser catches up.

    A browser plays frames at the pace their timestamps say; the GOP a viewer
    starts on may be a second old and would keep it a second behind for
    good.  Its frames keep their order but their timestamps are compressed
    toward the live edge, so they are decoded at once and shown briefly.
    """
    newest = reader.newest("video")
    edge = newest.pts if newest is not None else None
    try:
        while True:
            packet = await reader.receive()
            if packet.track.kind != "video":
                continue
            pts = packet.pts
            if edge is not None and pts < edge:
                pts = edge - (edge - pts) // CATCH_UP_SPEED
            track.offer(packet.data, pts, VIDEO_TIME_BASE, packet.keyframe)
    except StreamEnded as ended:
        session.close(ended.reason)


def h264_profile(profile_level_id: str) -> str:
    """The profile a profile-level-id names (RFC 6184), ignoring its level."""
    idc, flags = int(profile_level_id[:2], 16), int(profile_level_id[2:4], 16)
    if idc == 66:
        return "constrained-baseline" if flags & 0x40 else "baseline"
    if idc == 77:
        return "constrained-baseline" if flags & 0x80 and flags & 0x40 else "main"
    return {100: "high", 244: "high-444"}.get(idc, f"idc-{idc}")


# For a stream of a profile, the profiles whose decoders also decode it, best first.
DECODABLE_AS = {
    "constrained-baseline": ("constrained-baseline", "baseline", "main", "high", "high-444"),
    "baseline": ("baseline", "constrained-baseline", "main", "high", "high-444"),
    "main": ("main", "high", "high-444"),
    "high": ("high", "high-444", "main"),
}


def h264_preferences(track: Track, offer_sdp: str) -> list:
    """One H.264 codec to answer with: the stream's own profile if offered, else the closest.

    Only one codec is answered, and only one whose payload type the offer
    gives in the dynamic range aiortc keeps, so no two codecs share a type.
    """
    offered: dict[str, str] = {}
    for payload_type, line in re.findall(r"a=fmtp:(\d+) (.*)", offer_sdp):
        found = re.search(r"profile-level-id=([0-9a-fA-F]{6})", line)
        if found and 96 <= int(payload_type) <= 127 and "packetization-mode=1" in line:
            offered.setdefault(h264_profile(found.group(1)), found.group(1))
    actual = h264_profile(track.h264_profile_level_id or "42e01f")
    # Main is what most decoders of anything richer will take, so it is the last resort.
    chosen = next((p for p in (*DECODABLE_AS.get(actual, ()), "main") if p in offered), None)
    if chosen is None:
        raise WebRtcError(406, f"the offer has no H.264 profile that can carry {actual} video")
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    h264 = next(
        c
        for c in capabilities
        if c.mimeType == "video/H264" and h264_profile(c.parameters["profile-level-id"]) == chosen
    )
    return [h264, *(c for c in capabilities if c.mimeType == "video/rtx")]
