"""WebRTC publishing (WHIP): what OBS 30+ or a browser sends becomes an ordinary broker stream.

Each publisher is one aiortc peer connection, run as a Trio task of the
WebRTC output like a viewer's session.  H.264 and Opus are not decoded:
aiortc's receivers reassemble access units and packets from RTP and hand
them over as they are (`internals`), each as soon as its last packet is in.
A publisher that offers no H.264 (Firefox without OpenH264) may send VP8,
re-encoded to H.264 once as it arrives (`media.video_reencode`), so every
output still gets H.264.
They are muxed into MPEG-TS as they arrive (`media.tsmux`) and published
through `Broker.publish(..., "whip")`, so every output (SRT, WHEP, LL-HLS,
forwarding, variants, history) serves a WHIP publish as it serves an SRT one.

The two tracks' RTP clocks are independent; each starts at the time its
first frame arrived, relative to the first frame of the publish, which keeps
them in step within the network's jitter (nothing is buffered here).

Publishers such as browsers send a keyframe only at the start or when
asked; so that a new viewer always finds a recent keyframe in the GOP
cache, the session asks (RTCP PLI) whenever the newest one is older than
`KEYFRAME_INTERVAL`.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio
import trio_asyncio
from aiortc import RTCPeerConnection, RTCRtpTransceiver, RTCSessionDescription
from aiortc.exceptions import OperationError
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from ghostream import monitoring, threads
from ghostream.broker.registry import StreamBusy
from ghostream.broker.stream import Stream, StreamState
from ghostream.media.demux import is_keyframe_unit, nal_type, split_nal_units
from ghostream.media.tsmux import TsMuxer
from ghostream.media.video_reencode import H264Reencoder, vp8_keyframe
from ghostream.webrtc.codecs import offered_h264_profiles, offers_vp8, publish_preferences
from ghostream.webrtc.internals import receive_encoded, request_keyframe
from ghostream.webrtc.peer import offered_kinds
from ghostream.webrtc.refusals import WebRtcError

if TYPE_CHECKING:
    from ghostream.webrtc.sessions import WebRtcOutput

log = logging.getLogger(__name__)

PROTOCOL = "whip"
NEGOTIATION_TIMEOUT = 10.0
# Ask for a keyframe when the newest one is older than this (seconds), at most once per second.
KEYFRAME_INTERVAL = 2.0
PLI_SPACING = 1.0
# A publisher that sends nothing for this long is gone (ICE consent also ends it, later):
# soon enough that OBS, reconnecting after a network drop, is not refused for long (409).
MEDIA_TIMEOUT = 5.0
CLOCK = 90000


@dataclass
class Publish:
    id: str
    stream_id: str
    peer: str
    closed: trio.Event = field(default_factory=trio.Event)
    reason: str = "publisher left"

    def close(self, reason: str) -> None:
        if not self.closed.is_set():
            self.reason = reason
            self.closed.set()


@dataclass
class _Track:
    """One received track: its transceiver and where its timeline starts."""

    kind: str
    transceiver: RTCRtpTransceiver
    clock: int
    offset: int | None = None
    # A VP8 publisher's video: re-encoded to H.264 before it is muxed.
    reencoder: H264Reencoder | None = None


class WhipIngest:
    """The publishes of the WebRTC output, each a task of its nursery."""

    def __init__(self, output: WebRtcOutput) -> None:
        self.output = output
        self.publishes: dict[str, Publish] = {}

    async def answer(self, stream_id: str, offer_sdp: str, peer: str) -> tuple[Publish, str]:
        """Negotiate an authorized publisher's session; the answer SDP, or WebRtcError."""
        stream = self.output.broker.get(stream_id)
        if stream is not None and stream.state is StreamState.LIVE:
            raise WebRtcError(409, f"{stream_id!r} already has a publisher")
        kinds = offered_kinds(offer_sdp)
        publish = Publish(secrets.token_urlsafe(12), stream_id, peer)
        answer = await self.output.start_session(
            PROTOCOL, stream_id, self._run, publish, offer_sdp, kinds
        )
        return publish, answer

    def end(self, publish_id: str) -> bool:
        publish = self.publishes.get(publish_id)
        if publish is None:
            return False
        publish.close("publisher hung up")
        return True

    async def _run(self, publish: Publish, offer_sdp: str, kinds: set[str], *, task_status) -> None:
        pc = self.output.peer_connection(
            f"{publish.peer} publishing {publish.stream_id}", publish.close
        )
        try:
            with trio.fail_after(NEGOTIATION_TIMEOUT):
                tracks, answer = await self._negotiate(publish, pc, offer_sdp, kinds)
            with self.output.broker.publish(publish.stream_id, publish.peer, PROTOCOL) as stream:
                self.publishes[publish.id] = publish
                task_status.started(answer)
                log.info(
                    "%s publishing %s over WHIP (session %s)",
                    publish.peer,
                    publish.stream_id,
                    publish.id,
                )
                try:
                    await self._serve(publish, stream, tracks)
                except Exception:
                    publish.close("internal error")  # the supervisor reports it
                    raise
                finally:
                    self.publishes.pop(publish.id, None)
                    # Serving ends only once closed, unless the server is stopping.
                    publish.close("server stopping")
                    log.info(
                        "%s stopped publishing %s over WHIP: %s",
                        publish.peer,
                        publish.stream_id,
                        publish.reason,
                    )
        except StreamBusy as exc:
            raise WebRtcError(409, f"{publish.stream_id!r} already has a publisher") from exc
        except trio.TooSlowError as exc:
            raise WebRtcError(503, "negotiation took too long") from exc
        finally:
            await self.output.close_peer(pc)

    async def _negotiate(
        self, publish: Publish, pc: RTCPeerConnection, offer_sdp: str, kinds: set[str]
    ) -> tuple[list[_Track], str]:
        if "video" not in kinds:
            raise WebRtcError(406, "a publish needs H.264 video (audio alone is not served)")
        vp8 = not offered_h264_profiles(offer_sdp) and offers_vp8(offer_sdp)
        tracks = []
        for kind in ("video", "audio"):
            if kind in kinds:
                transceiver = pc.addTransceiver(kind, direction="recvonly")
                transceiver.setCodecPreferences(publish_preferences(kind, vp8))
                reencoder = H264Reencoder("vp8") if vp8 and kind == "video" else None
                clock = CLOCK if kind == "video" else 48000
                tracks.append(_Track(kind, transceiver, clock, reencoder=reencoder))
        try:
            offer = RTCSessionDescription(offer_sdp, "offer")
            await trio_asyncio.aio_as_trio(pc.setRemoteDescription)(offer)
        except OperationError as exc:
            raise WebRtcError(
                406, "send H.264 (packetization-mode=1) or VP8 video, Opus audio"
            ) from exc
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise WebRtcError(400, f"malformed SDP offer: {exc}") from exc
        if len(pc.getTransceivers()) != len(tracks):
            raise WebRtcError(400, "send at most one video and one audio track")
        for track in tracks:
            receive_encoded(track.transceiver)
        await self.output.attach_ice(pc)
        answer = await trio_asyncio.aio_as_trio(pc.createAnswer)()
        await trio_asyncio.aio_as_trio(pc.setLocalDescription)(answer)
        if any(t.transceiver.currentDirection != "recvonly" for t in tracks):
            raise WebRtcError(400, "the offer's media must be sent (a=sendonly or a=sendrecv)")
        sdp = pc.localDescription.sdp
        return tracks, sdp

    async def _serve(self, publish: Publish, stream: Stream, tracks: list[_Track]) -> None:
        audio = next((t for t in tracks if t.kind == "audio"), None)
        # Opus is always negotiated as two channels (RFC 7587); a mono publisher decodes as stereo.
        muxer = TsMuxer(channels=2 if audio else 0)
        feed = _Feed(publish, stream, muxer, self.output.offer_published_vp8)
        vp8 = any(t.reencoder is not None for t in tracks)
        if vp8:
            self.output.vp8_published.add(publish.stream_id)
        try:
            await self._run_feed(publish, feed, tracks)
        finally:
            if vp8:
                self.output.vp8_published.discard(publish.stream_id)

    async def _run_feed(self, publish: Publish, feed: _Feed, tracks: list[_Track]) -> None:
        async with trio.open_nursery() as nursery:
            for track in tracks:
                nursery.start_soon(feed.receive, track)
            video = next(t for t in tracks if t.kind == "video")
            nursery.start_soon(feed.ask_for_keyframes, video)
            nursery.start_soon(feed.watch_silence)
            await publish.closed.wait()
            nursery.cancel_scope.cancel()


class _Feed:
    """The received frames of one publish, stamped, muxed and published in arrival order."""

    def __init__(
        self,
        publish: Publish,
        stream: Stream,
        muxer: TsMuxer,
        offer_vp8: Callable[[str, bytes, int, bool], None],
    ) -> None:
        self.publish = publish
        self.offer_vp8 = offer_vp8
        self.stream = stream
        self.muxer = muxer
        self.bytes_in = monitoring.BYTES_IN.labels(publish.stream_id)
        self.start: float | None = None
        self.last_media = trio.current_time()
        self.last_keyframe: float | None = None

    async def receive(self, track: _Track) -> None:
        remote: MediaStreamTrack = track.transceiver.receiver.track
        recv = trio_asyncio.aio_as_trio(remote.recv)
        while True:
            try:
                frame = await recv()
            except MediaStreamError:
                self.publish.close(f"the publisher's {track.kind} ended")
                return
            pts = self._stamp(track, frame)
            if track.kind == "audio":
                self._publish(self.muxer.audio_packet(frame.data, pts))
            elif track.reencoder is None:
                units = [u for u in split_nal_units(frame.data) if u]
                keyframe = any(is_keyframe_unit("h264", nal_type("h264", u)) for u in units)
                self._publish_video(frame.data, pts, keyframe)
            else:
                keyframe = vp8_keyframe(frame.data)
                # VP8 viewers get the publisher's frames as they are; every other output H.264.
                self.offer_vp8(self.publish.stream_id, frame.data, pts, keyframe)
                encode = track.reencoder.encode
                units = await trio.to_thread.run_sync(
                    encode, frame.data, pts, keyframe, limiter=threads.TRANSCODING
                )
                for unit, unit_pts, unit_keyframe in units:
                    self._publish_video(unit, unit_pts, unit_keyframe)

    def _stamp(self, track: _Track, frame: JitterFrame) -> int:
        """The frame's time in the publish's 90 kHz clock, from when its track's first came."""
        now = trio.current_time()
        self.last_media = now
        if self.start is None:
            self.start = now
        media_time = frame.timestamp * CLOCK // track.clock
        if track.offset is None:
            track.offset = round((now - self.start) * CLOCK) - media_time
        return track.offset + media_time

    def _publish_video(self, unit: bytes, pts: int, keyframe: bool) -> None:
        if keyframe:
            self.last_keyframe = trio.current_time()
        self._publish(self.muxer.video_unit(unit, pts, keyframe))

    def _publish(self, chunk: bytes) -> None:
        self.stream.publish(chunk)
        self.bytes_in.inc(len(chunk))

    async def ask_for_keyframes(self, track: _Track) -> None:
        """PLI while the newest keyframe is missing or stale, so the GOP cache stays fresh."""
        receiver = track.transceiver.receiver
        while True:
            await trio.sleep(PLI_SPACING)
            now = trio.current_time()
            if self.last_keyframe is not None and now - self.last_keyframe < KEYFRAME_INTERVAL:
                continue
            for source in receiver.getSynchronizationSources():
                await trio_asyncio.aio_as_trio(request_keyframe)(receiver, source.source)

    async def watch_silence(self) -> None:
        while True:
            await trio.sleep_until(self.last_media + MEDIA_TIMEOUT)
            if trio.current_time() - self.last_media >= MEDIA_TIMEOUT:
                self.publish.close(f"no media for {MEDIA_TIMEOUT:.0f} s")
                return
