"""Forwarding: while a stream is live, remux it to each URL of `forwarding.<id>` (simulcast).

Each target is a Trio task owning a PyAV writer in its own thread, fed
through a bounded queue.  Nothing a target does can touch the stream or the
other targets: a full queue drops video up to the next keyframe, a failure
(refused, dropped, stalled) ends the attempt, and the broker's supervisor
records the fault and restarts the target with backoff while the stream
stays live.  Every attempt ends by telling its writer to stop and joining
it.  PyAV cannot interrupt a write to a peer that stopped reading: a writer
that has not finished after `FINISH_TIMEOUT` has its connection cut
(`forward_socket`), which makes the blocked write fail, and is then joined.
A writer holds a slot of the forwarding thread limiter until it ends, so
the number of writer threads stays bounded whatever targets and publishers
do.  Logs and events name a target with its stream key hidden.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from fractions import Fraction
from functools import partial
from pathlib import Path

import av
import trio

from ghostream import monitoring, threads
from ghostream.broker.audio import AudioFeeds
from ghostream.broker.packets import PacketHub, PacketReader
from ghostream.broker.registry import Broker, StreamNotFound
from ghostream.broker.stream import StreamEnded
from ghostream.broker.supervisor import PeerFailed
from ghostream.config import mask_url
from ghostream.history.events import Event, Forwarding, PublishStarted
from ghostream.media.continuity import Continuity
from ghostream.media.demux import MediaPacket, Track
from ghostream.media.errors import MalformedStream
from ghostream.media.pictures import picture_size
from ghostream.media.reencode import AAC
from ghostream.outputs.forward_socket import Stopped, TargetConnection

log = logging.getLogger(__name__)

COMPONENT = "forward"
QUEUE_PACKETS = 512
STALL_TIMEOUT = 10.0
# How long a stopped writer may take to send what it holds and close the target, before a cut.
FINISH_TIMEOUT = 5.0
JOIN_TIMEOUT = STALL_TIMEOUT
IO_TIMEOUT = 10.0
FORMATS = {"rtmp": "flv", "rtmps": "flv", "srt": "mpegts", "udp": "mpegts", "tcp": "mpegts"}
TIME_BASE = Fraction(1, 90000)
_END = object()


class TargetFailed(Exception):
    pass


class TracksChanged(Exception):
    """The publisher came back with other tracks: the target needs a new connection."""


def expand(url: str, stream_id: str, started: float) -> str:
    """`%name` and strftime fields (the publish's start time), for recording file names."""
    return time.strftime(url.replace("%name", stream_id), time.localtime(started))


def unused_path(path: str) -> str:
    """`path`, or `name-2.ext`, `name-3.ext`… when it exists already."""
    candidate, number = Path(path), 1
    while candidate.exists():
        number += 1
        candidate = Path(path).with_stem(f"{Path(path).stem}-{number}")
    return str(candidate)


def output_format(url: str) -> str | None:
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    return FORMATS.get(scheme)


def needs_aac(url: str, tracks: list[Track]) -> bool:
    """FLV (RTMP, .flv recordings) cannot carry Opus: such a target gets the stream's AAC feed."""
    flv = output_format(url) == "flv" or url.lower().endswith(".flv")
    return flv and any(t.kind == "audio" and t.codec == "opus" for t in tracks)


class Writer:
    """The blocking half: opens the target and muxes packets until told to stop."""

    def __init__(self, url: str, tracks: list[Track], size: tuple[int, int]) -> None:
        self.url = url
        self.tracks = tracks
        self.size = size
        self.queue: queue.Queue = queue.Queue(QUEUE_PACKETS)
        self.bytes = 0
        self.progress = time.monotonic()
        # Why the writer ended early, for its owner to raise (the supervisor judges and logs it).
        self.failure: Exception | None = None
        self.done = trio.Event()
        self.connection = TargetConnection(url)
        self._thread: threading.Thread | None = None

    async def start(self, limiter: trio.CapacityLimiter, name: str) -> None:
        """Run `run` in a thread of its own, holding a slot of `limiter` until it ends.

        `stop` joins it; `done` is set, in Trio, when it has ended.
        """
        await limiter.acquire_on_behalf_of(self)
        token = trio.lowlevel.current_trio_token()

        def ended() -> None:
            limiter.release_on_behalf_of(self)
            self.done.set()

        def main() -> None:
            try:
                self.run()
            except Exception as exc:
                self.failure = exc
            finally:
                self.connection.release()
                try:
                    token.run_sync_soon(ended)
                except trio.RunFinishedError:
                    pass

        # A daemon all the same: a connection `cut` could not find must not keep the server up.
        self._thread = threading.Thread(target=main, name=f"forward {name}", daemon=True)
        self._thread.start()

    async def stop(self, stream_id: str, shown: str) -> None:
        """Tell the writer to close the target and join its thread, cutting a stuck connection."""
        _finish(self)
        with trio.CancelScope(shield=True):
            with trio.move_on_after(FINISH_TIMEOUT):
                await self.done.wait()
            if not self.done.is_set():
                self.connection.cut()
            with trio.move_on_after(JOIN_TIMEOUT):
                await self.done.wait()
        if self._thread is not None and self.done.is_set():
            self._thread.join()  # it has nothing left to do but return
        else:
            # Only a connection that could not be told apart from another writer's.
            log.error(
                "forwarding %s to %s: the writer is still blocked in the target's I/O; "
                "its thread ends when the connection does",
                stream_id, shown,
            )  # fmt: skip

    def run(self) -> None:
        try:
            container = av.open(
                self.url,
                "w",
                format=output_format(self.url),
                timeout=(IO_TIMEOUT, IO_TIMEOUT),
            )
        except (av.error.FFmpegError, OSError) as exc:
            raise TargetFailed(f"cannot open: {exc}") from exc
        try:
            streams = {track.kind: self._add_stream(container, track) for track in self.tracks}
            try:
                with self.connection.connecting():
                    container.start_encoding()
            except Stopped as exc:
                raise TargetFailed(str(exc)) from exc
            self.progress = time.monotonic()
            while True:
                packet = self.queue.get()
                if packet is _END:
                    break
                out = av.Packet(packet.data)
                out.stream = streams[packet.track.kind]
                out.pts, out.dts, out.time_base = packet.pts, packet.dts, TIME_BASE
                out.is_keyframe = packet.keyframe
                container.mux(out)
                self.bytes += len(packet.data)
                self.progress = time.monotonic()
        except (av.error.FFmpegError, OSError) as exc:
            raise TargetFailed(f"write failed: {exc}") from exc
        finally:
            try:
                container.close()
            except (av.error.FFmpegError, OSError):
                pass

    def _add_stream(self, container: av.container.OutputContainer, track: Track):
        if track.kind == "audio":
            stream = container.add_stream(track.codec, rate=track.sample_rate)
            stream.codec_context.extradata = track.extradata
            return stream
        stream = container.add_stream(track.codec)
        stream.codec_context.width, stream.codec_context.height = self.size
        stream.codec_context.extradata = track.extradata
        stream.time_base = TIME_BASE
        return stream


def _finish(writer: Writer) -> None:
    """Tell the writer to close the target cleanly, making room if its queue is full."""
    while True:
        try:
            writer.queue.put_nowait(_END)
            return
        except queue.Full:
            writer.queue.get_nowait()


class Forwarder:
    def __init__(self, forwarding: dict[str, list[str]], broker: Broker, hub: PacketHub) -> None:
        self.forwarding = forwarding
        self.broker = broker
        self.hub = hub
        self._started, self._receive = trio.open_memory_channel[PublishStarted](64)
        self._running: set[tuple[str, str]] = set()
        self._aac = AudioFeeds(hub, AAC, max_lag=5.0, component="forward audio")
        self._nursery: trio.Nursery | None = None

    def observe(self, event: Event) -> None:
        """A broker listener: a publish of a forwarded stream wakes its targets."""
        if isinstance(event, PublishStarted) and event.stream_id in self.forwarding:
            try:
                self._started.send_nowait(event)
            except trio.WouldBlock:
                log.warning("forwarding of %s is lagging behind publishes", event.stream_id)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            async for event in self._receive:
                for url in self.forwarding[event.stream_id]:
                    key = (event.stream_id, url)
                    if key not in self._running:
                        self._running.add(key)
                        nursery.start_soon(self._target, event.stream_id, url, event.at)

    async def _target(self, stream_id: str, url: str, started: float) -> None:
        """One target for as long as the stream lives, restarted by the supervisor with backoff.

        A failure of the target's is retried while the stream is live; a
        stream it cannot carry stops it until the next publish.
        """
        carried = [True]
        try:
            await self.broker.supervisor.run(
                stream_id,
                COMPONENT,
                partial(self._connect, stream_id, url, started, carried),
                again=lambda: carried[0] and self.broker.get(stream_id) is not None,
            )
        finally:
            self._running.discard((stream_id, url))

    async def _connect(self, stream_id: str, url: str, started: float, carried: list[bool]) -> None:
        """Forward until the stream ends; PeerFailed when the target fails."""
        while True:
            resolved = expand(url, stream_id, started)
            if "://" in resolved:
                shown = mask_url(resolved)
            else:
                # A recording never overwrites an earlier one of the same publish.
                resolved = shown = unused_path(resolved)
            monitoring.FORWARD_ATTEMPTS.labels(stream_id).inc()
            try:
                sent = await self._attempt(stream_id, resolved, shown)
            except TracksChanged as exc:
                # Not the target's fault: connect again at once with the new tracks.
                log.info("forwarding %s to %s starts over: %s", stream_id, shown, exc)
                self._emit(stream_id, shown, "stopped", str(exc))
                continue
            except Exception as failure:
                self._emit(stream_id, shown, "failed", str(failure))
                if isinstance(failure, MalformedStream):
                    carried[0] = False  # nothing to retry until a publisher sends something else
                    raise
                monitoring.FORWARD_FAILURES.labels(stream_id).inc()
                if isinstance(failure, TargetFailed):
                    raise PeerFailed(f"{shown} failed: {failure}") from None
                raise
            self._emit(stream_id, shown, "stopped", "stream ended", sent)
            log.info("forwarding %s to %s stopped: stream ended", stream_id, shown)
            return

    async def _attempt(self, stream_id: str, url: str, shown: str) -> int:
        """Forward until the stream ends (bytes sent) or the target fails (TargetFailed)."""
        try:
            async with self.hub.read(stream_id, max_lag=5.0) as reader:
                tracks = await reader.tracks()
                problem = next((t.problem for t in tracks if t.problem), None)
                if problem is not None:
                    raise MalformedStream(problem)
                first = await reader.receive()
                size = await trio.to_thread.run_sync(
                    picture_size, first, limiter=threads.FORWARDING
                )
                aac = needs_aac(url, tracks)
                written = [AAC.track if aac and t.kind == "audio" else t for t in tracks]
                writer = Writer(url, written, size)
                writer.queue.put_nowait(first)
                await writer.start(threads.FORWARDING, shown)
                log.info("forwarding %s to %s", stream_id, shown)
                self._emit(stream_id, shown, "started")
                failure: list[Exception] = []
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._watch, writer, failure, nursery.cancel_scope)
                        aac_feed = (
                            self._aac.subscribe(self._nursery, stream_id, writer.queue)
                            if aac
                            else None
                        )
                        try:
                            await self._feed(reader, writer, tracks, skip_audio=aac)
                        except TracksChanged as exc:
                            failure.append(exc)
                        finally:
                            if aac_feed is not None:
                                aac_feed.subscribers.discard(writer.queue)
                        nursery.cancel_scope.cancel()
                finally:
                    await writer.stop(stream_id, shown)
                if writer.failure is not None:
                    raise writer.failure
                if failure:
                    raise failure[0]
                return writer.bytes
        except (StreamNotFound, StreamEnded):
            return 0

    async def _watch(
        self, writer: Writer, failure: list[Exception], scope: trio.CancelScope
    ) -> None:
        """End the attempt when the writer ends, or when it makes no progress (a stalled target)."""
        while not writer.done.is_set():
            with trio.move_on_after(1.0):
                await writer.done.wait()
            if not writer.queue.empty() and time.monotonic() - writer.progress > STALL_TIMEOUT:
                failure.append(TargetFailed(f"stalled for {STALL_TIMEOUT:.0f} s"))
                break
        scope.cancel()

    async def _feed(
        self, reader: PacketReader, writer: Writer, tracks: list[Track], *, skip_audio: bool
    ) -> None:
        """Queue packets for the writer until the stream ends; TracksChanged to start over.

        A publisher that comes back with the same tracks keeps the target's
        connection: its timestamps, which start afresh, are shifted to go on
        from where the previous publisher stopped.  With `skip_audio`, the
        audio comes from the stream's AAC feed instead.
        """
        skipping = False
        clock = Continuity()
        current = {track.kind: track for track in tracks}
        last_dts: dict[str, int] = {}
        while True:
            try:
                packet = await reader.receive()
            except StreamEnded:
                return
            kind = packet.track.kind
            if skip_audio and kind == "audio":
                continue
            if packet.track is not current.get(kind):
                if packet.track != current.get(kind):
                    raise TracksChanged("the stream's tracks changed (new publisher or settings)")
                current[kind] = packet.track
                clock.restart()
            dts = clock(packet.dts)
            if dts <= last_dts.get(kind, -1):
                continue  # from before the change: the muxer needs each track's DTS to grow
            if skipping and not (packet.keyframe and kind == "video"):
                continue
            retimed = MediaPacket(
                packet.track, packet.data, packet.pts + clock.offset, dts, packet.keyframe
            )
            try:
                writer.queue.put_nowait(retimed)
                last_dts[kind] = dts
                skipping = False
            except queue.Full:
                skipping = True
                monitoring.FORWARD_DROPPED.labels(reader.demux.stream_id).inc()

    def _emit(self, stream_id: str, shown: str, kind: str, reason: str = "", sent: int = 0) -> None:
        self.broker.emit(Forwarding(stream_id, shown, time.time(), kind, reason, sent))
