"""The registry of live streams: who publishes what, who watches, and for how long.

A stream exists from its first publish until its publisher has been gone for
the grace period, so that viewers of a publisher whose connection drops for
a moment keep their place and resume when it returns.  Lifecycle events go
to every `on_event` listener (event log, metrics) synchronously: listeners
must not block.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import trio

from ghostream.broker.stream import (
    DEFAULT_MAX_LAG_BYTES,
    Stream,
    StreamEnded,
    StreamState,
    Subscription,
)
from ghostream.broker.supervisor import Supervisor
from ghostream.history.events import (
    BytesCheckpoint,
    Event,
    PublishStarted,
    PublishStopped,
    Rejected,
    StreamClosed,
    ViewerJoined,
    ViewerLeft,
    ViewerSkipped,
)
from ghostream.media.properties import VideoProperties

log = logging.getLogger(__name__)


class StreamBusy(Exception):
    """The stream already has a live publisher (no takeover)."""


class StreamNotFound(Exception):
    """No such stream is live."""


_viewer_ids = itertools.count(1)
# How often open sessions' byte counts go to the history.
CHECKPOINT_INTERVAL = 60.0


@dataclass(slots=True)
class Viewer:
    id: int
    stream_id: str
    protocol: str
    bytes_sent: int = 0
    left_because: str | None = None
    # Bytes sent so far while the session runs, when the output counts them live.
    counter: Callable[[], int] | None = None

    def sent(self) -> int:
        return self.counter() if self.counter is not None else self.bytes_sent


@dataclass(frozen=True, slots=True)
class StreamSummary:
    id: str
    state: str
    viewers: int
    bytes_in: int
    video_codec: str | None
    audio_codecs: tuple[str, ...]
    video: VideoProperties | None = None


class Broker:
    def __init__(
        self,
        *,
        reconnect_grace: float = 10.0,
        ring_bytes: int | None = None,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
    ) -> None:
        self.reconnect_grace = reconnect_grace
        self.ring_bytes = ring_bytes
        self.checkpoint_interval = checkpoint_interval
        self.on_event: list[Callable[[Event], None]] = []
        # Every per-stream task runs under it: a failure stops that task, not the server.
        self.supervisor = Supervisor(self.emit)
        # Asked for a stream that is not live; one may start it (a quality variant).
        self.providers: list[Callable[[str], Awaitable[bool]]] = []
        # With several workers: holds a stream's publisher slot among them (StreamBusy if taken).
        self.claim: Callable[[str], AbstractContextManager[None]] = lambda _: nullcontext()
        # Told a stream's video properties when a publish's video is described or changes.
        self.on_described: list[Callable[[str, VideoProperties], None]] = []
        self._streams: dict[str, Stream] = {}
        self._deadlines: dict[str, float] = {}
        self._changed = trio.Event()
        # Open sessions, for byte checkpoints and the dashboard's live counts.
        self._publishers: dict[str, tuple[Stream, int]] = {}
        self._viewers: dict[int, tuple[Viewer, Stream]] = {}

    def emit(self, event: Event) -> None:
        for listener in self.on_event:
            try:
                listener(event)
            except Exception:
                log.exception("event listener failed on %s", type(event).__name__)

    def reject(self, stream_id: str, peer: str, protocol: str, reason: str, **detail) -> None:
        self.emit(Rejected(stream_id, peer, protocol, time.time(), reason, detail))

    # Publishing.

    @contextmanager
    def publish(
        self, stream_id: str, peer: str, protocol: str, *, internal: bool = False
    ) -> Iterator[Stream]:
        """Hold the publisher slot of a stream for the duration of the block.

        An internal stream (the server's own copy of another, such as the one
        WebRTC viewers get) is served like any other but emits no events and
        is not listed: it is not a stream anyone published.
        """
        stream = self._streams.get(stream_id)
        if stream is not None and stream.state is StreamState.LIVE:
            raise StreamBusy(stream_id)
        with nullcontext() if internal else self.claim(stream_id):
            with self._published(stream, stream_id, peer, protocol, internal) as stream:
                yield stream

    @contextmanager
    def _published(
        self, stream: Stream | None, stream_id: str, peer: str, protocol: str, internal: bool
    ) -> Iterator[Stream]:
        if stream is None:
            options = {"ring_bytes": self.ring_bytes} if self.ring_bytes else {}
            stream = Stream(stream_id, **options)
            stream.internal = internal
            stream.on_skip.append(self._note_skip)
            self._streams[stream_id] = stream
        else:
            stream.publisher_returned()
            self._deadlines.pop(stream_id, None)
        started = time.time()
        bytes_before = stream.bytes_in
        if not internal:
            self._publishers[stream_id] = (stream, bytes_before)
            self.emit(PublishStarted(stream_id, peer, protocol, started))
        reason = "publisher disconnected"
        try:
            yield stream
        except BaseException as exc:
            reason = f"error: {exc}" if isinstance(exc, Exception) else "server stopping"
            raise
        finally:
            self._publishers.pop(stream_id, None)
            stream.publisher_left()
            self._deadlines[stream_id] = trio.current_time() + self.reconnect_grace
            self._changed.set()
            if not internal:
                self.emit(
                    PublishStopped(
                        stream_id,
                        peer,
                        protocol,
                        time.time(),
                        stream.bytes_in - bytes_before,
                        reason,
                    )
                )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """End streams whose publisher did not return within the grace period; checkpoint bytes."""
        task_status.started()
        checkpoint = trio.current_time() + self.checkpoint_interval
        try:
            while True:
                self._changed = trio.Event()
                deadline = min(self._deadlines.values(), default=checkpoint)
                with trio.move_on_at(min(deadline, checkpoint)):
                    await self._changed.wait()
                now = trio.current_time()
                for stream_id, when in list(self._deadlines.items()):
                    if when <= now:
                        self._end(stream_id)
                if now >= checkpoint:
                    self.checkpoint()
                    checkpoint = now + self.checkpoint_interval
        finally:
            for stream_id in list(self._streams):
                self._end(stream_id)

    def checkpoint(self) -> None:
        """Emit the bytes every open session has moved so far."""
        now = time.time()
        for stream_id, (stream, bytes_before) in self._publishers.items():
            self.emit(BytesCheckpoint(stream_id, None, now, stream.bytes_in - bytes_before))
        for viewer, _ in self._viewers.values():
            self.emit(BytesCheckpoint(viewer.stream_id, viewer.id, now, viewer.sent()))

    def end(self, stream_id: str) -> None:
        """End a stream that has no publisher now, without waiting out the grace.

        For a source that knows no publisher is coming back (an edge's pull
        that let go of an unwatched stream); a stream with a live publisher
        is left alone.
        """
        stream = self._streams.get(stream_id)
        if stream is not None and stream.state is not StreamState.LIVE:
            self._end(stream_id)

    def _end(self, stream_id: str) -> None:
        self._deadlines.pop(stream_id, None)
        stream = self._streams.pop(stream_id, None)
        if stream is not None:
            stream.end()
            if not stream.internal:
                self.emit(StreamClosed(stream_id, time.time()))

    def describe(self, stream_id: str, video: VideoProperties) -> None:
        """A live stream's video was described (from its packets) or changed."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.video = video
        log.info("%s: video %s", stream_id, video.describe())
        for listener in self.on_described:
            try:
                listener(stream_id, video)
            except Exception:
                log.exception("video description listener failed for %s", stream_id)

    # Watching.

    def get(self, stream_id: str) -> Stream | None:
        return self._streams.get(stream_id)

    async def provide(self, stream_id: str) -> bool:
        """Whether the stream is live, after asking providers to start it if it was not."""
        if stream_id in self._streams:
            return True
        for provider in self.providers:
            if await provider(stream_id):
                return True
        return False

    def default_stream(self, configured: str = "") -> str | None:
        """The configured default, else the only stream there is."""
        if configured:
            return configured
        live = [s for s in self._streams if "@" not in s]
        return live[0] if len(live) == 1 else None

    @contextmanager
    def attend(self, stream_id: str, peer: str, protocol: str) -> Iterator[Viewer]:
        """Count a viewer of a live stream (events, statistics) for the duration of the block.

        Outputs that read frames rather than TS bytes (WebRTC) attend directly;
        `watch` attends and also hands out a TS cursor.
        """
        viewer = self.join(stream_id, peer, protocol)
        reason = "viewer left"
        try:
            yield viewer
        except StreamEnded as ended:
            reason = ended.reason
            raise
        except BaseException as exc:
            reason = f"error: {exc}" if isinstance(exc, Exception) else "server stopping"
            raise
        finally:
            self.leave(viewer, peer, viewer.left_because or reason)

    def join(self, stream_id: str, peer: str, protocol: str) -> Viewer:
        """Count a viewer of a live stream until `leave`: for outputs without a task per viewer."""
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamNotFound(stream_id)
        viewer = Viewer(next(_viewer_ids), stream_id, protocol)
        stream.viewers += 1
        self._viewers[viewer.id] = (viewer, stream)
        self.emit(ViewerJoined(stream_id, viewer.id, peer, protocol, time.time()))
        return viewer

    def leave(self, viewer: Viewer, peer: str, reason: str) -> None:
        entry = self._viewers.pop(viewer.id, None)
        if entry is None:
            return
        entry[1].viewers -= 1
        self.emit(
            ViewerLeft(
                viewer.stream_id,
                viewer.id,
                peer,
                viewer.protocol,
                time.time(),
                viewer.sent(),
                reason,
            )
        )

    def audience(self) -> dict[str, dict[str, int]]:
        """Live viewers per stream id (variants apart) and protocol."""
        counts: dict[str, dict[str, int]] = {}
        for viewer, _ in self._viewers.values():
            by_protocol = counts.setdefault(viewer.stream_id, {})
            by_protocol[viewer.protocol] = by_protocol.get(viewer.protocol, 0) + 1
        return counts

    @contextmanager
    def watch(
        self,
        stream_id: str,
        peer: str,
        protocol: str,
        *,
        max_lag_bytes: int = DEFAULT_MAX_LAG_BYTES,
    ) -> Iterator[Subscription]:
        with self.attend(stream_id, peer, protocol) as viewer:
            stream = self._streams[stream_id]
            subscription = stream.subscribe(max_lag_bytes=max_lag_bytes)
            subscription.id = viewer.id
            subscription.protocol = protocol
            viewer.counter = lambda: subscription.bytes_sent
            try:
                yield subscription
            finally:
                subscription.close()
                viewer.left_because = subscription.dropped

    def summaries(self) -> list[StreamSummary]:
        return [
            StreamSummary(
                id=stream.id,
                state=stream.state.value,
                viewers=stream.viewers,
                bytes_in=stream.bytes_in,
                video_codec=stream.program.video_codec or stream.program.other_video,
                audio_codecs=stream.program.audio_codecs,
                video=stream.video,
            )
            for stream in self._streams.values()
            if not stream.internal
        ]

    def _note_skip(self, stream: Stream, subscription: Subscription, *, dropped: bool) -> None:
        action = "dropped" if dropped else "moved ahead to the latest keyframe"
        log.info("viewer %d of %s is too slow: %s", subscription.id, stream.id, action)
        self.emit(
            ViewerSkipped(stream.id, subscription.id, subscription.protocol, time.time(), dropped)
        )
