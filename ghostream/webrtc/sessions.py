"""WebRTC playback: one aiortc peer connection per browser viewer, fed from the broker.

This module is the one place where asyncio code runs.  `WebRtcOutput.run`
opens a trio-asyncio loop; every session (a viewer here, a WHIP publisher in
`ingest`) is a Trio task in the output's nursery that talks to aiortc
through `aio_as_trio`, so a session's life (negotiation, feeding, ICE
failure, DELETE, shutdown) is structured like any other connection of the
server.

Video is passed through: each viewer reads the stream's demuxed H.264 access
units with its own cursor (`PacketHub`), so a viewer that falls behind skips
to the next keyframe without touching anyone else; each access unit is cut
into RTP payloads once (`SharedPayloads`) for all of them.  Audio must become
Opus (unless it is already: a WHIP publish), and that is done once per
stream by an `AudioFeed`, whose packets every viewer of the stream shares.
Per viewer only RTP headers and SRTP remain.

Video browsers cannot decode as it is (see `codecs.passthrough_obstacle`)
is re-encoded once per stream into an internal stream (`ID@webrtc`, made by
the transcoder: the wiring hands the output a `StartCopy`), started by its
first such viewer and stopped once none reads it; its viewers still count
as viewers of `ID`.  A browser that offers no H.264 at all (Firefox without
OpenH264) gets the stream as VP8, encoded once per stream by `Vp8Feed` for
all such viewers (or as it came, from a VP8 WHIP publisher).  An offer that
can take neither is refused (406) before any copy starts.  With `webrtc.transcode:
never` such a stream is refused with 415 and the reason, and players fall
back to LL-HLS.

A session is a viewer (counted, in the history as a view) only once its
peer connection is connected: an answered offer whose client never
completes ICE and DTLS ends after `webrtc.connectTimeout` with a refusal
event saying so, and a refused offer is a refusal event, never a view.
One host holds at most `webrtc.maxSessionsPerHost` sessions, and its
refusals are logged and recorded once a minute.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
import trio_asyncio
from aiortc import RTCPeerConnection, RTCSessionDescription

from ghostream import monitoring
from ghostream.broker.audio import AudioFeeds
from ghostream.broker.feeds import Feeds
from ghostream.broker.packets import PacketHub, PacketReader
from ghostream.broker.registry import Broker, StreamNotFound
from ghostream.broker.stream import StreamEnded
from ghostream.config import WebrtcSettings
from ghostream.media.continuity import Continuity
from ghostream.media.demux import Track
from ghostream.media.errors import UnplayableStream
from ghostream.media.properties import VideoProperties
from ghostream.media.reencode import OPUS
from ghostream.peers import source_host
from ghostream.per_host import HostSlots, OncePerHost, unsaid
from ghostream.webrtc import internals
from ghostream.webrtc.codecs import (
    h264_preferences,
    h264_profile,
    offer_carries,
    offered_h264_profiles,
    offers_vp8,
    passthrough_obstacle,
    vp8_preferences,
)
from ghostream.webrtc.icemux import IceMux
from ghostream.webrtc.packetize import SharedPayloads
from ghostream.webrtc.peer import offered_kinds
from ghostream.webrtc.publishing import WhipIngest
from ghostream.webrtc.refusals import WebRtcError
from ghostream.webrtc.tracks import OpusSink, PacketTrack, RtpFrame
from ghostream.webrtc.vp8_feed import Vp8Feed

log = logging.getLogger(__name__)

PROTOCOL = "webrtc"
# How far (seconds of media) a viewer may lag before it jumps to the latest keyframe.
MAX_VIDEO_LAG = 1.0
# How far (seconds of media) the shared audio may lag before it jumps ahead.
MAX_AUDIO_LAG = 1.0
NEGOTIATION_TIMEOUT = 10.0
# The cached GOP a viewer starts with is played this many times faster than real time.
CATCH_UP_SPEED = 25
# How long a viewer of a new publish waits for its video to be described (B-frames or not).
DESCRIBE_TIMEOUT = 3.0
# The codecs of the re-encoded copies.
H264 = "H.264"
VP8 = "VP8"


@dataclass(frozen=True, slots=True)
class Copy:
    """The re-encoded copy a viewer gets, and why it cannot take the video as it is."""

    codec: str
    reason: str


# Starts (or joins) a stream's re-encoded copy for browsers: its stream id, None if it failed.
StartCopy = Callable[[str], Awaitable[str | None]]


class _Answer:
    """A session's task status that remembers whether the session answered."""

    def __init__(self, status: trio.TaskStatus) -> None:
        self.status = status
        self.given = False

    def started(self, value: Any = None) -> None:
        self.given = True
        self.status.started(value)


@dataclass
class Session:
    id: str
    stream_id: str
    peer: str
    # The player page's counter id, so that the page and its session count once.
    page_uid: str = ""
    closed: trio.Event = field(default_factory=trio.Event)
    connected: trio.Event = field(default_factory=trio.Event)
    reason: str = "viewer left"
    answered: bool = False

    def close(self, reason: str) -> None:
        if not self.closed.is_set():
            self.reason = reason
            self.closed.set()


class WebRtcOutput:
    def __init__(
        self,
        settings: WebrtcSettings,
        broker: Broker,
        hub: PacketHub,
        start_copy: StartCopy | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.hub = hub
        self.start_copy = start_copy if settings.transcode != "never" else None
        broker.on_described.append(self._tell_streamer)
        self.sessions: dict[str, Session] = {}
        self._hosts = HostSlots(settings.max_sessions_per_host)
        self._refusal_reports = OncePerHost()
        tcp = settings.tcp_listen_address
        self._ice = IceMux(
            range(settings.min_port_udp, settings.max_port_udp + 1),
            (tcp.host, tcp.port) if tcp.port else None,
            settings.public_ips,
            lambda reason: monitoring.WEBRTC_DROPPED.labels(reason).inc(),
        )
        self._opus = AudioFeeds(hub, OPUS, max_lag=MAX_AUDIO_LAG, component="opus")
        self._vp8 = Feeds[Vp8Feed](
            broker.supervisor,
            "vp8",
            lambda feed: feed.run(hub),
            again=lambda feed: bool(feed.tracks) and broker.get(feed.stream_id) is not None,
        )
        # Streams whose WHIP publisher sends VP8: their VP8 viewers get it as it came.
        self.vp8_published: set[str] = set()
        # Each H.264 copy started for a stream: its stream id and why, for the stream's API.
        self._copies: dict[str, tuple[str, str]] = {}
        self._payloads = SharedPayloads()
        internals.use_fast_clock()
        internals.use_rsa_peers()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nursery: trio.Nursery | None = None
        self.ingest = WhipIngest(self)

    @property
    def ice_servers(self) -> list[str]:
        return list(self.settings.stun_servers)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio_asyncio.open_loop() as loop:
            self._loop = loop
            await trio_asyncio.aio_as_trio(self._ice.start)()
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    stun = [url for url in self.settings.stun_servers if url.startswith("stun:")]
                    if stun:
                        nursery.start_soon(trio_asyncio.aio_as_trio(self._ice.discover), stun[0])
                    task_status.started()
                    await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    await trio_asyncio.aio_as_trio(self._ice.stop)()

    def delivery(self, stream_id: str, codec: str | None, video: VideoProperties | None) -> dict:
        """How WebRTC viewers get a stream's video, for its API: the streamer can act on it.

        `copies` are the re-encoded copies running now, each with why it was
        needed and how many viewers it has.
        """
        copies = self._running_copies(stream_id)
        if codec is None:
            return {"mode": None, "reason": None, "fix": None, "copies": copies}
        if self.settings.transcode == "always":
            reason = "webrtc.transcode is always"
            return {"mode": "re-encoded", "reason": reason, "fix": None, "copies": copies}
        obstacle = passthrough_obstacle(codec, video)
        if obstacle is None:
            return {"mode": "passthrough", "reason": None, "fix": None, "copies": copies}
        mode = "refused" if self.start_copy is None else "re-encoded"
        return {"mode": mode, "reason": obstacle.reason, "fix": obstacle.fix, "copies": copies}

    def _running_copies(self, stream_id: str) -> list[dict]:
        copies = []
        # The H.264 copy runs while the transcoder publishes it (`ID@webrtc`) in the broker.
        copy_id, reason = self._copies.get(stream_id, (None, None))
        if copy_id is not None and self.broker.get(copy_id) is not None:
            viewers = self.hub.reader_count(copy_id)
            copies.append({"codec": H264, "reason": reason, "viewers": viewers})
        else:
            self._copies.pop(stream_id, None)
        feed = self._vp8.get(stream_id)
        if feed is not None:
            reason = "viewers whose browser offers no H.264 (Firefox without OpenH264)"
            if feed.published():
                reason += "; the publisher's own VP8, not re-encoded"
            copies.append({"codec": VP8, "reason": reason, "viewers": len(feed.tracks)})
        return copies

    def _tell_streamer(self, stream_id: str, video: VideoProperties) -> None:
        """A broker listener: warn when a publish cannot be passed through to browsers."""
        obstacle = passthrough_obstacle(video.codec, video)
        if "@" in stream_id or obstacle is None or self.settings.transcode == "always":
            return
        if self.start_copy is None:
            log.warning(
                "%s: %s: browsers cannot play it over WebRTC (webrtc.transcode is never) and "
                "use LL-HLS; %s, for WebRTC",
                stream_id,
                obstacle.reason,
                obstacle.fix,
            )
        else:
            log.warning(
                "%s: %s: WebRTC viewers get a re-encoded copy; %s, for passthrough",
                stream_id,
                obstacle.reason,
                obstacle.fix,
            )

    def peer_connection(
        self,
        who: str,
        close: Callable[[str], None],
        on_connected: Callable[[], None] | None = None,
    ) -> RTCPeerConnection:
        """A peer connection for a session, which `close` ends when the connection does.

        `attach_ice` gives it the shared ICE sockets; `on_connected` is called
        once ICE and DTLS are through.  A connection that fails before it
        ever connected is a peer that cannot talk to this server: a warning
        with the reason (ICE or DTLS, and what OpenSSL said).
        """
        pc = RTCPeerConnection()
        connected = False

        @pc.on("connectionstatechange")
        def state_changed() -> None:
            nonlocal connected
            if pc.connectionState == "connected":
                connected = True
                if on_connected is not None:
                    on_connected()
            elif pc.connectionState == "closed":
                close("connection closed")
            elif pc.connectionState == "failed" and connected:
                close("connection lost: the peer stopped answering")
            elif pc.connectionState == "failed":
                reason = internals.connection_failure(pc)
                log.warning("%s: WebRTC connection failed: %s", who, reason)
                close(reason)

        return pc

    async def attach_ice(self, pc: RTCPeerConnection) -> None:
        """Put a peer connection (its remote description set) on the shared ICE sockets,
        and take the DTLS server role if the offer leaves it open."""
        internals.answer_dtls_passive(pc)
        try:
            await trio_asyncio.aio_as_trio(self._ice.attach)(pc)
        except ValueError as exc:
            raise WebRtcError(400, f"unsupported offer: {exc}") from exc

    async def start_session(
        self, component: str, stream_id: str, run: Callable[..., Awaitable[None]], *args: Any
    ) -> Any:
        """Start a session (viewer or publisher) in the output's nursery and asyncio loop.

        What the session passes to `task_status.started` is returned; what it
        raises before that (WebRtcError) is raised here.  Any other failure is
        the session's `component` fault on the stream: the supervisor reports
        it and only that session ends (a 500 if it had not answered yet).
        """
        if self._nursery is None or not self._ice.ready:
            raise WebRtcError(503, "WebRTC is not running")
        return await self._nursery.start(self._in_loop, component, stream_id, run, *args)

    async def _in_loop(
        self,
        component: str,
        stream_id: str,
        run: Callable[..., Awaitable[None]],
        *args: Any,
        task_status: trio.TaskStatus,
    ) -> None:
        trio_asyncio.current_loop.set(self._loop)
        answer = _Answer(task_status)
        session = partial(run, *args, task_status=answer)
        await self.broker.supervisor.run(stream_id, component, session, passes=(WebRtcError,))
        if not answer.given:
            raise WebRtcError(500, "the session ended before it could be answered")

    def page_uids(self) -> set[str]:
        """Player pages whose session is a counted viewer (connected)."""
        return {s.page_uid for s in self.sessions.values() if s.page_uid and s.connected.is_set()}

    async def answer(
        self, stream_id: str, offer_sdp: str, peer: str, page_uid: str = ""
    ) -> tuple[Session, str]:
        """Negotiate a viewer's session; the answer SDP, or WebRtcError with its status."""
        try:
            if not await self.broker.provide(stream_id):
                raise WebRtcError(404, f"no live stream {stream_id!r}")
            kinds = offered_kinds(offer_sdp)
            session = Session(secrets.token_urlsafe(12), stream_id, peer, page_uid[:64])
            answer = await self.start_session(
                PROTOCOL, stream_id, self._session, session, offer_sdp, kinds
            )
            return session, answer
        except WebRtcError as refusal:
            self._refused(stream_id, peer, refusal)
            raise

    def _refused(self, stream_id: str, peer: str, refusal: WebRtcError) -> None:
        """A refusal event (never a view) and a log line, once a minute per host."""
        unreported = self._refusal_reports.due(source_host(peer))
        if unreported is None:
            return
        # The parser's message may quote the offer: the client hears it, the log does not.
        reason = "malformed or unusable offer" if refusal.status == 400 else str(refusal)
        log.warning(
            "WHEP offer for %s from %s refused: %s%s", stream_id, peer, reason, unsaid(unreported)
        )
        self.broker.reject(stream_id, peer, PROTOCOL, reason, code=refusal.status)

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
        host = source_host(session.peer)
        if self._hosts.full(host):
            limit = self._hosts.limit
            raise WebRtcError(
                429, f"webrtc.maxSessionsPerHost ({limit}) sessions from this address already"
            )
        try:
            with self._hosts.held(host):
                async with self.hub.read(session.stream_id, max_lag=MAX_VIDEO_LAG) as reader:
                    with trio.fail_after(NEGOTIATION_TIMEOUT):
                        tracks = await reader.tracks()
                        problem = next((t.problem for t in tracks if t.problem), None)
                        if problem is not None:
                            raise UnplayableStream(problem)
                        copy = await self._copy_for(session, reader, tracks, offer_sdp, kinds)
                    if copy is None or copy.codec == VP8:
                        await self._watch(
                            session, offer_sdp, kinds, reader, tracks, task_status, copy
                        )
                        return
                copy_id = await self._start_copy(session, copy)
                async with self.hub.read(copy_id, max_lag=MAX_VIDEO_LAG) as copied:
                    with trio.fail_after(NEGOTIATION_TIMEOUT):
                        copied_tracks = await copied.tracks()
                    # The copy has no audio: its viewers share the source's, as Opus.
                    tracks = [t for t in copied_tracks if t.kind == "video"] + [
                        t for t in tracks if t.kind == "audio"
                    ]
                    await self._watch(session, offer_sdp, kinds, copied, tracks, task_status, copy)
        except StreamNotFound as exc:
            raise WebRtcError(404, f"no live stream {session.stream_id!r}") from exc
        except StreamEnded as ended:
            session.reason = ended.reason
        except trio.TooSlowError as exc:
            raise WebRtcError(503, "the stream has not sent decodable video yet") from exc
        except UnplayableStream as exc:
            raise WebRtcError(415, f"this stream cannot be played in the browser: {exc}") from exc
        finally:
            if session.answered:
                log.info(
                    "%s stopped watching %s over WebRTC: %s",
                    session.peer,
                    session.stream_id,
                    session.reason,
                )

    async def _copy_for(
        self,
        session: Session,
        reader: PacketReader,
        tracks: list[Track],
        offer_sdp: str,
        kinds: set[str],
    ) -> Copy | None:
        """Which re-encoded copy this viewer needs, and why (None: the video as it is will do).

        Decided before anything is started: WebRtcError 406 when the offer can
        take neither the video nor a copy, 415 when it needs a copy and
        `webrtc.transcode` is never.  A browser that offers H.264 gets the
        H.264 copy, one that offers only VP8 (Firefox without OpenH264) the VP8 one.
        """
        track = next((t for t in tracks if t.kind == "video"), None)
        if track is None or "video" not in kinds:
            return None
        h264 = bool(offered_h264_profiles(offer_sdp))
        if not h264 and not offers_vp8(offer_sdp):
            raise WebRtcError(
                406, "the offer has no video codec this server sends: H.264 (packetization-mode "
                "1) or VP8; offer one, or leave video out",
            )  # fmt: skip
        if self.settings.transcode == "always":
            reason: str | None = "webrtc.transcode is always"
        else:
            stream = self.broker.get(session.stream_id)
            if stream is not None:
                with trio.move_on_after(DESCRIBE_TIMEOUT):
                    await reader.demux.described(stream.generation)
            obstacle = passthrough_obstacle(track.codec, reader.demux.properties.current)
            reason = obstacle.reason if obstacle is not None else None
            if reason is None and not h264:
                reason = "H.264, which the browser does not offer"
            elif reason is None and not offer_carries(track, offer_sdp):
                profile = h264_profile(track.h264_profile_level_id or "42e01f")
                reason = f"H.264 {profile}, a profile the browser did not offer"
        if reason is None:
            return None
        if self.start_copy is None:
            raise WebRtcError(
                415,
                f"{session.stream_id} has {reason}, which this browser cannot decode over "
                "WebRTC, and this server does not re-encode (webrtc.transcode is never); "
                "use LL-HLS",
            )
        return Copy(H264 if h264 else VP8, reason)

    async def _start_copy(self, session: Session, copy: Copy) -> str:
        """Start (or join) the stream's re-encoded H.264 copy for browsers; its stream id."""
        assert self.start_copy is not None
        copy_id = await self.start_copy(session.stream_id)
        if copy_id is None:
            raise WebRtcError(503, "the stream's copy for browsers could not start")
        self._copies[session.stream_id] = (copy_id, copy.reason)
        log.info(
            "%s gets %s re-encoded for WebRTC: %s", session.peer, session.stream_id, copy.reason
        )
        return copy_id

    async def _watch(
        self,
        session: Session,
        offer_sdp: str,
        kinds: set[str],
        reader: PacketReader,
        tracks: list[Track],
        task_status: trio.TaskStatus[str],
        copy: Copy | None,
    ) -> None:
        """Negotiate, answer, and serve until the session ends."""
        vp8 = copy is not None and copy.codec == VP8
        pc, video, audio, answer = await self._negotiate(session, offer_sdp, kinds, tracks, vp8)
        try:
            self.sessions[session.id] = session
            session.answered = True
            task_status.started(answer)
            log.info(
                "%s watching %s over WebRTC (session %s)",
                session.peer,
                session.stream_id,
                session.id,
            )
            if vp8:
                log.info(
                    "%s gets %s as VP8 for WebRTC%s: %s",
                    session.peer,
                    session.stream_id,
                    " as published" if session.stream_id in self.vp8_published else "",
                    copy.reason,
                )
            try:
                await self._serve(session, pc, reader, video, audio, vp8)
            except Exception:
                session.close("internal error")  # the supervisor reports it
                raise
        finally:
            self.sessions.pop(session.id, None)
            await self.close_peer(pc)

    async def _negotiate(
        self, session: Session, offer_sdp: str, kinds: set[str], tracks: list[Track], vp8: bool
    ) -> tuple[RTCPeerConnection, PacketTrack | None, PacketTrack | None, str]:
        pc = self.peer_connection(
            f"{session.peer} watching {session.stream_id}", session.close, session.connected.set
        )
        try:
            return await self._set_up(session, pc, offer_sdp, kinds, tracks, vp8)
        except BaseException:
            await self.close_peer(pc)
            raise

    async def _set_up(
        self,
        session: Session,
        pc: RTCPeerConnection,
        offer_sdp: str,
        kinds: set[str],
        tracks: list[Track],
        vp8: bool,
    ) -> tuple[RTCPeerConnection, PacketTrack | None, PacketTrack | None, str]:
        video = audio = None
        video_track = next((t for t in tracks if t.kind == "video"), None)
        if video_track is not None and "video" in kinds:
            # H.264 as it is or its copy (`_copy_for` sent other codecs there), or the VP8 copy.
            video = PacketTrack("video")
            transceiver = pc.addTransceiver(video, direction="sendonly")
            transceiver.setCodecPreferences(
                vp8_preferences() if vp8 else h264_preferences(video_track, offer_sdp)
            )
            internals.send_prepacketized(transceiver.sender)
        if any(t.kind == "audio" for t in tracks) and "audio" in kinds:
            audio = PacketTrack("audio")
            internals.send_prepacketized(pc.addTransceiver(audio, direction="sendonly").sender)
        if video is None and audio is None:
            raise WebRtcError(400, "the offer asks for no media this stream has")
        try:
            offer = RTCSessionDescription(offer_sdp, "offer")
            await trio_asyncio.aio_as_trio(pc.setRemoteDescription)(offer)
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise WebRtcError(400, f"malformed SDP offer: {exc}") from exc
        await self.attach_ice(pc)
        try:
            answer = await trio_asyncio.aio_as_trio(pc.createAnswer)()
        except (ValueError, RuntimeError) as exc:
            raise WebRtcError(406, f"no common codec with the offer: {exc}") from exc
        await trio_asyncio.aio_as_trio(pc.setLocalDescription)(answer)
        return pc, video, audio, pc.localDescription.sdp

    async def _serve(
        self,
        session: Session,
        pc: RTCPeerConnection,
        reader: PacketReader,
        video: PacketTrack | None,
        audio: PacketTrack | None,
        vp8: bool,
    ) -> None:
        async with trio.open_nursery() as nursery:
            if audio is not None:
                nursery.start_soon(self._share_audio, session.stream_id, audio)
            if video is not None and vp8:
                nursery.start_soon(self._share_vp8, session.stream_id, video)
            if video is not None and not vp8:
                nursery.start_soon(_feed_video, reader, video, session, self._payloads)
            else:
                nursery.start_soon(_follow_end, reader, session)
            if await self._until_connected(session):
                try:
                    with self.broker.attend(session.stream_id, session.peer, PROTOCOL) as viewer:
                        viewer.counter = lambda: sum(t.sent for t in (video, audio) if t)
                        with monitoring.WEBRTC_SESSIONS.track_inprogress():
                            await session.closed.wait()
                        viewer.left_because = session.reason
                except StreamNotFound:
                    session.reason = "the stream ended"
            nursery.cancel_scope.cancel()

    async def _until_connected(self, session: Session) -> bool:
        """Whether the session connects (ICE and DTLS) before it ends or runs out of time.

        One that does not is no view: it ends with a refusal event that says why.
        """
        limit = self.settings.connect_timeout
        with trio.move_on_after(limit):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_set_when, session.closed, nursery.cancel_scope)
                await session.connected.wait()
                nursery.cancel_scope.cancel()
        if session.connected.is_set():
            return True
        session.close(f"did not connect (ICE and DTLS) within {limit} s")
        reason = f"never connected: {session.reason}"
        self.broker.reject(session.stream_id, session.peer, PROTOCOL, reason)
        return False

    async def close_peer(self, pc: RTCPeerConnection) -> None:
        """Close a peer connection even while the session is being cancelled, but never hang."""
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await trio_asyncio.aio_as_trio(pc.close)()
        self._ice.release(pc)

    def _vp8_feed(self, stream_id: str) -> Vp8Feed:
        return Vp8Feed(stream_id, lambda: stream_id in self.vp8_published)

    def offer_published_vp8(self, stream_id: str, frame: bytes, pts: int, keyframe: bool) -> None:
        """A VP8 WHIP publisher's frame, for the stream's VP8 viewers, if any."""
        feed = self._vp8.get(stream_id)
        if feed is not None:
            feed.offer_published(frame, pts, keyframe)

    async def _share_vp8(self, stream_id: str, track: PacketTrack) -> None:
        """Offer a viewer's track the frames of the stream's VP8 feed, started if need be."""
        feed = self._vp8.open(self._nursery, stream_id, partial(self._vp8_feed, stream_id))
        feed.tracks.add(track)
        try:
            await trio.sleep_forever()
        finally:
            feed.tracks.discard(track)

    async def _share_audio(self, stream_id: str, track: PacketTrack) -> None:
        sink = OpusSink(track)
        feed = self._opus.subscribe(self._nursery, stream_id, sink)
        try:
            await trio.sleep_forever()
        finally:
            feed.subscribers.discard(sink)


async def _set_when(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


async def _follow_end(reader: PacketReader, session: Session) -> None:
    """Close a session without video when its stream ends, as the video feed would."""
    try:
        while True:
            await reader.receive()
    except StreamEnded as ended:
        session.close(ended.reason)


async def _feed_video(
    reader: PacketReader, track: PacketTrack, session: Session, payloads: SharedPayloads
) -> None:
    """Send the video, the cached GOP first, squeezed in time so the browser catches up.

    A browser plays frames at the pace their timestamps say; the GOP a viewer
    starts on may be a second old and would keep it a second behind for
    good.  Its frames keep their order but their timestamps are compressed
    toward the live edge, so they are decoded at once and shown briefly.
    """
    newest = reader.newest("video")
    edge = newest.pts if newest is not None else None
    # A new publisher's clock starts anywhere: the browser must see time go on, not jump.
    clock = Continuity()
    source = None
    try:
        while True:
            packet = await reader.receive()
            if packet.track.kind != "video":
                continue
            if packet.track is not source:
                if source is not None:
                    clock.restart()
                    edge = None  # the catch-up was for the previous publisher's clock
                source = packet.track
            pts = packet.pts
            if edge is not None and pts < edge:
                pts = edge - (edge - pts) // CATCH_UP_SPEED
            # MPEG-TS timestamps tick at 90 kHz, the H.264 RTP clock.
            frame = RtpFrame(payloads.of(packet), clock(pts), len(packet.data))
            track.offer(frame, packet.keyframe)
    except StreamEnded as ended:
        session.close(ended.reason)
