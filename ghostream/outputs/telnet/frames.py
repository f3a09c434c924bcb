"""Text-art pictures of live streams: decoded and scaled once per stream, for every telnet viewer.

`TextArt` runs one `TextStream` per stream that telnet viewers watch, like a
variant `ID@text` made on demand: it reads the stream's packets from the
`PacketHub`, and a worker thread owned by the stream's task decodes the
video with PyAV and scales it to `transcoder.text.width` × `height` pixels
(the source's shape kept) at most `framerate` times a second, and to the
smaller size of each terminal that asked for one (NAWS).  Viewers follow
the latest frame only: a slow terminal skips frames instead of queueing
them.  What a frame looks like in ANSI is drawn once per (size, frame the
terminal shows) and shared, so viewers in step cost one drawing.  The
stream's task ends `IDLE_STOP` seconds after its last viewer left.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from fractions import Fraction

import av
import trio

from ghostream import monitoring, threads
from ghostream.broker.feeds import Feeds
from ghostream.broker.packets import PacketHub, PacketReader
from ghostream.broker.registry import StreamNotFound
from ghostream.broker.stream import StreamEnded
from ghostream.broker.tasks import TaskOwner
from ghostream.config import TextTranscoderSettings
from ghostream.media.demux import MediaPacket, Track
from ghostream.media.textart import Picture, draw, fit, terminal_fit

log = logging.getLogger(__name__)

IDLE_STOP = 5.0
MAX_LAG = 1.0
TIME_BASE = Fraction(1, 90000)
# A terminal that sends no window size is the classic one.
DEFAULT_TERMINAL = (80, 24)


class TextFrame:
    """One moment of a stream at every picture size its viewers' terminals need."""

    def __init__(self, number: int, base: Picture, pictures: dict[tuple[int, int], Picture]):
        self.number = number
        self.base = base
        self.pictures = pictures
        self._drawings: dict[tuple[tuple[int, int], int | None], bytes] = {}

    def size_for(self, columns: int, rows: int) -> tuple[int, int]:
        return terminal_fit(self.base.width, self.base.height, columns, rows)

    def drawing(self, size: tuple[int, int], shown: TextFrame | None, top: int = 1) -> bytes:
        """ANSI bytes from `shown` (the frame the terminal shows, None: anything) to this one."""
        before = shown.pictures.get(size) if shown is not None else None
        key = (size, shown.number if before is not None else None)
        drawing = self._drawings.get(key)
        if drawing is None:
            drawing = self._drawings[key] = draw(before, self.pictures[size], top=top)
        return drawing


def packed_rgb(frame: av.VideoFrame) -> bytes:
    """An rgb24 frame's pixels without the padding at the end of each line."""
    plane = frame.planes[0]
    line = frame.width * 3
    data = bytes(plane)
    if plane.line_size == line:
        return data
    return b"".join(
        data[row : row + line] for row in range(0, plane.line_size * frame.height, plane.line_size)
    )


class TextStream:
    """A stream's text-art frames, made while someone watches."""

    def __init__(self, stream_id: str, settings: TextTranscoderSettings, hub: PacketHub) -> None:
        self.stream_id = stream_id
        self.settings = settings
        self.hub = hub
        self.frame: TextFrame | None = None
        self.ended: str | None = None
        self.viewers = 0
        self.terminals: Counter[tuple[int, int]] = Counter()
        self._changed = trio.lowlevel.ParkingLot()
        self._viewer_came = trio.Event()
        self._decoder: tuple[Track, av.CodecContext] | None = None
        self._due: int | None = None
        self._step = round(90000 / max(1, settings.framerate))

    def joined(self, terminal: tuple[int, int]) -> None:
        self.viewers += 1
        self.terminals[terminal] += 1
        self._viewer_came.set()

    def left(self, terminal: tuple[int, int]) -> None:
        self.viewers -= 1
        self.resized(terminal, None)

    def resized(self, old: tuple[int, int], new: tuple[int, int] | None) -> None:
        self.terminals[old] -= 1
        if self.terminals[old] <= 0:
            del self.terminals[old]
        if new is not None:
            self.terminals[new] += 1

    async def next_frame(self, after: TextFrame | None) -> TextFrame:
        """The newest frame after `after`: frames in between are skipped, never queued."""
        while True:
            frame = self.frame
            if frame is not None and (after is None or frame.number > after.number):
                return frame
            if self.ended is not None:
                raise StreamEnded(self.ended)
            await self._changed.park()

    async def run(self) -> None:
        """Until nobody watches or the stream ends; a failure ends only this stream's text art."""
        reason = "server stopping"
        try:
            async with self.hub.read(self.stream_id, max_lag=MAX_LAG) as reader:
                monitoring.TEXT_CONVERSIONS.inc()
                log.info("%s: text art started", self.stream_id)
                try:
                    reason = await self._loop(reader)
                except StreamEnded as ended:
                    reason = ended.reason
                finally:
                    monitoring.TEXT_CONVERSIONS.dec()
                    log.info("%s: text art stopped: %s", self.stream_id, reason)
        except StreamNotFound:
            reason = "stream ended"
        except Exception:
            # The supervisor logs it and keeps it from the server and other streams.
            reason = "text art failed"
            raise
        finally:
            self.ended = reason
            self._changed.unpark_all()

    async def _loop(self, reader: PacketReader) -> str:
        while True:
            if not self.viewers:
                self._viewer_came = trio.Event()
                with trio.move_on_after(IDLE_STOP):
                    await self._viewer_came.wait()
                if not self.viewers:
                    return "nobody watches"
            packet = None
            with trio.move_on_after(IDLE_STOP):
                packet = await reader.receive()
            if packet is None or packet.track.kind != "video":
                continue
            terminals = list(self.terminals)
            frames = await trio.to_thread.run_sync(
                self._convert, packet, terminals, limiter=threads.TEXT_ART
            )
            for base, pictures in frames:
                self.add(base, pictures)

    def add(self, base: Picture, pictures: dict[tuple[int, int], Picture]) -> None:
        """The newest frame replaces the last: viewers that did not take it will not see it."""
        number = self.frame.number + 1 if self.frame is not None else 0
        self.frame = TextFrame(number, base, pictures)
        self._changed.unpark_all()

    def _convert(
        self, packet: MediaPacket, terminals: list[tuple[int, int]]
    ) -> list[tuple[Picture, dict[tuple[int, int], Picture]]]:
        """Decode a packet: frames due at the frame rate, at the base size and each terminal's."""
        if self._decoder is None or self._decoder[0] is not packet.track:
            decoder = av.CodecContext.create(packet.track.codec, "r")
            decoder.extradata = packet.track.extradata
            self._decoder = (packet.track, decoder)
        source = av.Packet(packet.data)
        source.pts, source.dts, source.time_base = packet.pts, packet.dts, TIME_BASE
        try:
            decoded = self._decoder[1].decode(source)
        except av.error.FFmpegError:
            return []
        out = []
        for frame in decoded:
            pts = frame.pts if frame.pts is not None else packet.pts
            if not self._is_due(pts):
                continue
            width, height = fit(
                frame.width, frame.height, self.settings.width, self.settings.height
            )
            scaled = frame.reformat(
                width=width, height=height, format="rgb24", interpolation="AREA"
            )
            base = Picture(width, height, packed_rgb(scaled))
            pictures = {(width, height): base}
            for columns, rows in terminals:
                size = terminal_fit(width, height, columns, rows)
                if size not in pictures:
                    smaller = scaled.reformat(width=size[0], height=size[1], interpolation="AREA")
                    pictures[size] = Picture(size[0], size[1], packed_rgb(smaller))
            out.append((base, pictures))
        return out

    def _is_due(self, pts: int) -> bool:
        """At most `framerate` frames a second; a jump in time (new publisher) starts over."""
        due = self._due
        if due is not None and 0 < due - pts < 10 * 90000:
            return False
        if due is None or abs(pts - due) >= self._step:
            self._due = pts + self._step
        else:
            self._due = due + self._step
        return True


class TextViewer:
    """One terminal watching a `TextStream`; its window size picks the picture it gets."""

    def __init__(self, stream: TextStream, terminal: tuple[int, int]) -> None:
        self.stream = stream
        self.terminal = terminal

    def resize(self, columns: int, rows: int) -> None:
        terminal = (max(1, columns), max(2, rows))
        self.stream.resized(self.terminal, terminal)
        self.terminal = terminal

    async def next_frame(self, after: TextFrame | None) -> tuple[TextFrame, tuple[int, int]]:
        """The newest frame after `after` with a picture for this terminal, and its size.

        Right after a resize, frames made for the old size are passed over.
        """
        while True:
            frame = await self.stream.next_frame(after)
            size = frame.size_for(*self.terminal)
            if size in frame.pictures:
                return frame, size
            after = frame


class TextArt(TaskOwner):
    """The service: one `TextStream` per watched stream, owned by its nursery."""

    def __init__(self, settings: TextTranscoderSettings, hub: PacketHub) -> None:
        self.settings = settings
        self.hub = hub
        self.streams = Feeds[TextStream](
            hub.broker.supervisor,
            "telnet",
            TextStream.run,
            ended=lambda stream: stream.ended is not None,
        )

    @asynccontextmanager
    async def watch(
        self, stream_id: str, terminal: tuple[int, int] = DEFAULT_TERMINAL
    ) -> AsyncIterator[TextViewer]:
        stream = self.streams.open(
            self._nursery, stream_id, lambda: TextStream(stream_id, self.settings, self.hub)
        )
        viewer = TextViewer(stream, terminal)
        stream.joined(terminal)
        try:
            yield viewer
        finally:
            stream.left(viewer.terminal)
