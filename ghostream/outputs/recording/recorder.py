"""The recording service: every show of the configured streams written to disk as it plays.

A publish of a recorded stream starts one recording, which follows the stream
through its publisher's reconnects (a discontinuity each) until the show
ends.  It reads the demuxed packets like the LL-HLS packager and cuts them
with the same timeline into fMP4 segments, so nothing is re-encoded: a
recording costs disk writes, not CPU.  A write error (a full disk, a
read-only directory) stops that recording with one log line, a metric and a
history event; the live stream and its viewers never notice.  Retention by
age and by size runs at start, after each show, and hourly.
"""

from __future__ import annotations

import errno
import logging
import time
from functools import partial
from pathlib import Path

import trio

from ghostream import monitoring, threads
from ghostream.broker.feeds import Feeds
from ghostream.broker.packets import PacketHub, PacketReader
from ghostream.broker.registry import Broker, StreamNotFound
from ghostream.broker.stream import StreamEnded
from ghostream.broker.tasks import TaskOwner
from ghostream.config import RecordingSettings
from ghostream.history.events import Event, PublishStarted, RecordingStopped
from ghostream.media.errors import MalformedStream
from ghostream.media.pictures import keyframe_jpeg
from ghostream.outputs.llhls.timeline import Segment, Timeline
from ghostream.outputs.recording.files import THUMBNAIL, RecordingFiles, write_atomically
from ghostream.outputs.recording.library import apply_retention, close_interrupted

log = logging.getLogger(__name__)

COMPONENT = "recording"
SEGMENT_SECONDS = 4.0
# A recording may fall this far behind the live stream before it skips (never, on a sane disk).
MAX_LAG = 30.0
RETENTION_INTERVAL = 3600.0
THUMBNAIL_WIDTH = 640


class Show:
    """A recording in progress, registered by stream while it runs (retention spares it)."""

    def __init__(self, stream_id: str, started: float) -> None:
        self.stream_id = stream_id
        self.started = started

    files: RecordingFiles | None = None
    # The newest segment on disk (segments are numbered from 0).
    written: int = -1


class Recorder(TaskOwner):
    def __init__(
        self, settings: RecordingSettings, directory: Path, packets: PacketHub, broker: Broker
    ) -> None:
        self.settings = settings
        self.directory = directory
        self.packets = packets
        self.broker = broker
        self._shows: Feeds[Show] = Feeds(broker.supervisor, COMPONENT, self._record)
        # Directories being written, which retention spares.
        self._writing: set[Path] = set()
        self._retention = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await trio.to_thread.run_sync(self._prepare, limiter=threads.RECORDING)
        except OSError as exc:
            # Recording fails show by show, loudly; the server itself keeps serving.
            log.error("recording: cannot use %s: %s", self.directory, exc.strerror or exc)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._keep_within_limits)
            await nursery.start(super().run)
            task_status.started()

    def _prepare(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        close_interrupted(self.directory)

    def observe(self, event: Event) -> None:
        """A broker listener: a publish of a recorded stream starts its show's recording."""
        if not isinstance(event, PublishStarted) or "@" in event.stream_id:
            return
        stream_id = event.stream_id
        if not self.settings.records(stream_id) or stream_id in self._shows:
            return
        if self._nursery is None:
            return
        self._shows.open(self._nursery, stream_id, lambda: Show(stream_id, event.at))

    async def _record(self, show: Show) -> None:
        stream_id, started = show.stream_id, show.started
        timeline = Timeline(part_target=SEGMENT_SECONDS, segment_target=SEGMENT_SECONDS, window=2)
        try:
            show.files = await _in_thread(RecordingFiles, self.directory, stream_id, started)
            self._writing.add(show.files.directory)
            log.info("%s: recording to %s", stream_id, show.files.directory)
            async with self.packets.read(stream_id, max_lag=MAX_LAG) as reader:
                timeline.begin(await reader.tracks())
                await self._follow(show, stream_id, reader, timeline)
        except (StreamEnded, StreamNotFound):
            if show.files is not None and timeline.flush():
                await self._write_new(show, stream_id, timeline)
            await self._close(stream_id, show.files, "")
        except OSError as exc:
            reason = _explain(exc)
            log.error("%s: recording stopped: %s; the live stream goes on", stream_id, reason)
            monitoring.RECORDING_FAILURES.labels(stream_id).inc()
            await self._close(stream_id, show.files, reason)

    async def _follow(
        self, show: Show, stream_id: str, reader: PacketReader, timeline: Timeline
    ) -> None:
        assert show.files is not None
        thumbnail = False
        while True:
            packet = await reader.receive()
            if not thumbnail and packet.keyframe and packet.track.kind == "video":
                thumbnail = await self._thumbnail(show.files, packet)
            if timeline.add(packet, time.time()):
                await self._write_new(show, stream_id, timeline)

    async def _write_new(self, show: Show, stream_id: str, timeline: Timeline) -> None:
        """Write the segments completed since the last call, in order, each once."""
        assert show.files is not None
        for segment in list(timeline.segments):
            if segment.complete and segment.msn > show.written:
                size = await _in_thread(_write_segment, show.files, segment)
                monitoring.RECORDED_BYTES.labels(stream_id).inc(size)
                show.written = segment.msn

    async def _thumbnail(self, files: RecordingFiles, keyframe) -> bool:
        try:
            jpeg = await _in_thread(keyframe_jpeg, keyframe, THUMBNAIL_WIDTH)
        except MalformedStream:
            return False
        await _in_thread(write_atomically, files.directory / THUMBNAIL, jpeg)
        return True

    async def _close(self, stream_id: str, files: RecordingFiles | None, error: str) -> None:
        if files is None:
            self.broker.emit(RecordingStopped(stream_id, time.time(), 0.0, 0, error))
            return
        self._writing.discard(files.directory)
        try:
            await _in_thread(files.close, error=error)
        except OSError as exc:
            log.error("%s: recording not closed: %s", stream_id, _explain(exc))
        facts = files.facts
        log.info(
            "%s: recording ended: %.0f s, %.1f MB%s",
            stream_id,
            facts.duration,
            facts.bytes / 1e6,
            f" ({error})" if error else "",
        )
        self.broker.emit(
            RecordingStopped(stream_id, time.time(), facts.duration, facts.bytes, error)
        )
        self._retention.set()

    async def _keep_within_limits(self) -> None:
        while True:
            writing = set(self._writing)
            try:
                await trio.to_thread.run_sync(
                    partial(
                        apply_retention,
                        self.directory,
                        max_age_days=self.settings.max_age,
                        max_bytes=self.settings.max_size * 1_000_000,
                        writing=writing,
                        now=time.time(),
                    ),
                    limiter=threads.RECORDING,
                )
            except OSError as exc:
                log.error("recording: retention could not run: %s", _explain(exc))
            with trio.move_on_after(RETENTION_INTERVAL):
                await self._retention.wait()
            self._retention = trio.Event()


def _write_segment(files: RecordingFiles, segment: Segment) -> int:
    init = segment.init
    return files.add(
        segment.msn, init.number, init.data, segment.data, segment.duration, segment.discontinuity
    )


async def _in_thread(function, *args, **kwargs):
    return await trio.to_thread.run_sync(
        partial(function, *args, **kwargs), limiter=threads.RECORDING
    )


def _explain(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "the disk is full"
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"
