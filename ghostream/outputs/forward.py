"""Forwarding: while a stream is live, remux it to each URL of `forwarding.<id>` (simulcast).

Each target is a Trio task owning a PyAV writer in a worker thread, fed
through a bounded queue.  Nothing a target does can touch the stream or the
other targets: a full queue drops video up to the next keyframe, a failure
(refused, dropped, stalled) ends the attempt and the task retries with
exponential backoff while the stream stays live, and a writer stuck in a
blocking call is abandoned after `STALL_TIMEOUT` (its thread ends when
PyAV's own I/O timeout fires).  Logs and events name a target with its
stream key hidden.
"""

from __future__ import annotations

import logging
import queue
import time
from fractions import Fraction
from pathlib import Path

import av
import trio

from ghostream import monitoring
from ghostream.broker.events import Event, Forwarding, PublishStarted
from ghostream.broker.packets import PacketHub, PacketReader
from ghostream.broker.registry import Broker, StreamNotFound
from ghostream.broker.stream import StreamEnded
from ghostream.config import mask_url
from ghostream.media.demux import Track
from ghostream.media.pictures import picture_size
from ghostream.outputs.forward_audio import AAC_TRACK, AacFeed
from ghostream.tasks import start_registered

log = logging.getLogger(__name__)

QUEUE_PACKETS = 512
FIRST_RETRY = 1.0
MAX_RETRY = 60.0
# An attempt that lasted this long was a success: the next failure retries quickly again.
HEALTHY_AFTER = 30.0
STALL_TIMEOUT = 10.0
IO_TIMEOUT = 10.0
FORMATS = {"rtmp": "flv", "rtmps": "flv", "srt": "mpegts", "udp": "mpegts", "tcp": "mpegts"}
TIME_BASE = Fraction(1, 90000)
_END = object()


class TargetFailed(Exception):
    pass


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
            streams = {id(track): self._add_stream(container, track) for track in self.tracks}
            self.progress = time.monotonic()
            while True:
                packet = self.queue.get()
                if packet is _END:
                    break
                out = av.Packet(packet.data)
                out.stream = streams[id(packet.track)]
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
        self._aac: dict[str, AacFeed] = {}
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
        """One target for as long as the stream lives, retrying with backoff."""
        delay = FIRST_RETRY
        try:
            while self.broker.get(stream_id) is not None:
                resolved = expand(url, stream_id, started)
                if "://" in resolved:
                    shown = mask_url(resolved)
                else:
                    # A recording never overwrites an earlier one of the same publish.
                    resolved = shown = unused_path(resolved)
                monitoring.FORWARD_ATTEMPTS.labels(stream_id).inc()
                began = trio.current_time()
                try:
                    sent = await self._attempt(stream_id, resolved, shown)
                except Exception as failure:
                    if not isinstance(failure, TargetFailed):
                        log.exception("forwarding %s to %s: unexpected error", stream_id, shown)
                    monitoring.FORWARD_FAILURES.labels(stream_id).inc()
                    self._emit(stream_id, shown, "failed", str(failure))
                    if trio.current_time() - began > HEALTHY_AFTER:
                        delay = FIRST_RETRY
                    log.warning(
                        "forwarding %s to %s failed: %s; retrying in %.0f s",
                        stream_id, shown, failure, delay,
                    )  # fmt: skip
                    await self._sleep_while_live(stream_id, delay)
                    delay = min(delay * 2, MAX_RETRY)
                    continue
                self._emit(stream_id, shown, "stopped", "stream ended", sent)
                log.info("forwarding %s to %s stopped: stream ended", stream_id, shown)
                return
        finally:
            self._running.discard((stream_id, url))

    async def _sleep_while_live(self, stream_id: str, delay: float) -> None:
        deadline = trio.current_time() + delay
        while trio.current_time() < deadline and self.broker.get(stream_id) is not None:
            await trio.sleep(min(1.0, deadline - trio.current_time()))

    async def _attempt(self, stream_id: str, url: str, shown: str) -> int:
        """Forward until the stream ends (bytes sent) or the target fails (TargetFailed)."""
        try:
            async with self.hub.read(stream_id, max_lag=5.0) as reader:
                tracks = await reader.tracks()
                first = await reader.receive()
                size = await trio.to_thread.run_sync(picture_size, first)
                aac = needs_aac(url, tracks)
                written = [AAC_TRACK if aac and t.kind == "audio" else t for t in tracks]
                writer = Writer(url, written, size)
                writer.queue.put_nowait(first)
                log.info("forwarding %s to %s", stream_id, shown)
                self._emit(stream_id, shown, "started")
                failure: list[str] = []
                done = trio.Event()
                async with trio.open_nursery() as nursery:

                    async def write() -> None:
                        try:
                            await trio.to_thread.run_sync(writer.run, abandon_on_cancel=True)
                        except TargetFailed as exc:
                            failure.append(str(exc))
                        finally:
                            done.set()
                            nursery.cancel_scope.cancel()

                    nursery.start_soon(write)
                    nursery.start_soon(self._watch_stall, writer, done, failure, nursery)
                    if aac:
                        self._subscribe_aac(stream_id, writer)
                    try:
                        outcome = await self._feed(reader, writer, tracks, skip_audio=aac)
                    finally:
                        if aac:
                            self._aac[stream_id].subscribers.discard(writer.queue)
                    if outcome is None:
                        _finish(writer)
                        with trio.move_on_after(STALL_TIMEOUT):
                            await done.wait()
                    else:
                        failure.append(outcome)
                    nursery.cancel_scope.cancel()
                if failure:
                    raise TargetFailed(failure[0])
                return writer.bytes
        except (StreamNotFound, StreamEnded):
            return 0

    async def _watch_stall(
        self, writer: Writer, done: trio.Event, failure: list[str], nursery: trio.Nursery
    ) -> None:
        while not done.is_set():
            await trio.sleep(1.0)
            if not writer.queue.empty() and time.monotonic() - writer.progress > STALL_TIMEOUT:
                failure.append(f"stalled for {STALL_TIMEOUT:.0f} s, abandoned")
                nursery.cancel_scope.cancel()
                return

    def _subscribe_aac(self, stream_id: str, writer: Writer) -> None:
        feed = self._aac.get(stream_id)
        if feed is None:
            feed = AacFeed(stream_id)
            assert self._nursery is not None
            start_registered(self._nursery, self._aac, stream_id, feed, lambda: feed.run(self.hub))
        feed.subscribers.add(writer.queue)

    async def _feed(
        self, reader: PacketReader, writer: Writer, tracks: list[Track], *, skip_audio: bool
    ) -> str | None:
        """Queue packets for the writer; None when the stream ended, else why to start over.

        With `skip_audio`, the audio comes from the stream's AAC feed instead.
        """
        skipping = False
        while True:
            try:
                packet = await reader.receive()
            except StreamEnded:
                return None
            if packet.track not in tracks:
                return "the stream's tracks changed (new publisher or new settings)"
            if skip_audio and packet.track.kind == "audio":
                continue
            if skipping and not (packet.keyframe and packet.track.kind == "video"):
                continue
            try:
                writer.queue.put_nowait(packet)
                skipping = False
            except queue.Full:
                skipping = True
                monitoring.FORWARD_DROPPED.labels(reader.demux.stream_id).inc()

    def _emit(self, stream_id: str, shown: str, kind: str, reason: str = "", sent: int = 0) -> None:
        self.broker.emit(Forwarding(stream_id, shown, time.time(), kind, reason, sent))
