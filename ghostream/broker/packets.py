"""Demuxed packets of live streams, shared by every output that needs frames.

`PacketHub` runs one demux task per stream that someone reads as packets
(WebRTC sessions, LL-HLS packagers, forwarders, the transcoder) and stops it
a little after its last reader leaves.  Packets go into a ring that readers
follow with their own cursor under the same rule as TS readers of `Stream`
(`broker.ring`): a new reader starts at the latest video keyframe, and a
reader that lags more than it allows (in seconds of media) skips to the
latest keyframe instead of slowing anyone.  These readers are outputs that
serve many viewers, so they skip but are never dropped.  The demuxer reads
each chunk with the program the stream's inspection found, without parsing
the tables again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from ghostream.broker.feeds import Feeds
from ghostream.broker.registry import Broker, StreamNotFound
from ghostream.broker.ring import Cursor, Ring
from ghostream.broker.stream import StreamEnded
from ghostream.broker.tasks import TaskOwner
from ghostream.history.events import Event, PublishStarted
from ghostream.media.demux import MediaPacket, Track, TsDemuxer
from ghostream.media.errors import UnsupportedStream
from ghostream.media.properties import PropertiesTracker

log = logging.getLogger(__name__)

RING_PACKETS = 4096
IDLE_LINGER = 5.0
# How long a new publish is demuxed without readers, to describe its video.
PROBE_TIMEOUT = 10.0


class PacketRing(Ring[MediaPacket]):
    """Demuxed packets; a reader's lag is measured in seconds of media."""

    def lag(self, index: int) -> float:
        if index >= self.next:
            return 0.0
        newest = next(self.newest())
        return newest.seconds - self[max(index, self.first)].seconds


class PacketReader:
    def __init__(self, demux: StreamDemux, max_lag: float) -> None:
        self.demux = demux
        self.cursor = Cursor(demux.ring, max_lag, droppable=False)

    @property
    def skips(self) -> int:
        return self.cursor.skips

    async def receive(self) -> MediaPacket:
        """The next packet; StreamEnded when the stream is over."""
        index = await self.cursor.readable(lambda: self.demux.ended)
        self.cursor.advance(1)
        return self.demux.ring[index]

    def newest(self, kind: str) -> MediaPacket | None:
        """The newest packet of a kind in the ring: the live edge a late reader catches up to."""
        return next((p for p in self.demux.ring.newest() if p.track.kind == kind), None)

    async def tracks(self) -> list[Track]:
        """Every track of the stream, once each has been seen (for init segments, SDP).

        UnsupportedStream when the program has nothing to make frames of (no
        H.264/HEVC video); a track whose `problem` is set is returned as is.
        """
        while not self.demux.ready:
            if self.demux.ended is not None:
                raise StreamEnded(self.demux.ended)
            unsupported = self.demux.demuxer.unsupported
            if unsupported is not None:
                raise UnsupportedStream(unsupported)
            await self.demux.ring.wait()
        return self.demux.demuxer.tracks


class StreamDemux:
    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.demuxer = TsDemuxer()
        self.properties = PropertiesTracker()
        self.generation = 0
        self.ring = PacketRing(RING_PACKETS)
        self.readers: set[PacketReader] = set()
        self.ended: str | None = None
        self.ready = False
        self._reader_came = trio.Event()

    def add(self, packets: list[MediaPacket]) -> None:
        for packet in packets:
            self.ring.append(packet, start=packet.keyframe and packet.track.kind == "video")
        self.ready = self.demuxer.ready and self.ring.start is not None
        if packets or self.demuxer.unsupported is not None:
            self.ring.wake()

    def follow(self, generation: int) -> None:
        """After a new publisher came, start over: new tracks, timestamps from zero.

        Readers then wait for its first keyframe, never reading the previous
        publisher's packets (or tracks) as if they were the new one's.
        """
        if generation == self.generation:
            return
        self.generation = generation
        self.demuxer = TsDemuxer()
        self.properties = PropertiesTracker()
        self.ring.restart()
        self.ready = False

    def finish(self, reason: str) -> None:
        self.ended = reason
        self.ring.wake()

    def joined(self, reader: PacketReader) -> None:
        self.readers.add(reader)
        self._reader_came.set()

    def left(self, reader: PacketReader) -> None:
        self.readers.discard(reader)

    def _describe(self, broker: Broker, packets: list[MediaPacket]) -> None:
        for packet in packets:
            if packet.track.kind == "video":
                changed = self.properties.observe(packet)
                if changed is not None:
                    broker.describe(self.stream_id, changed)

    async def described(self, generation: int) -> None:
        """Until the video of a publisher (`Stream.generation`) is described, or the stream ends."""
        while not (self.generation == generation and self.properties.settled):
            if self.ended is not None:
                return
            await self.ring.wait()

    async def run(self, broker: Broker) -> None:
        stream = broker.get(self.stream_id)
        if stream is None:
            self.finish("stream ended")
            return
        try:
            with stream.subscribe() as subscription:
                self.generation = stream.generation
                while True:
                    if not self.readers:
                        self._reader_came = trio.Event()
                        with trio.move_on_after(IDLE_LINGER):
                            await self._reader_came.wait()
                        if not self.readers:
                            return
                    with trio.move_on_after(IDLE_LINGER):
                        data = await subscription.receive()
                        self.follow(stream.generation)
                        packets = self.demuxer.feed(data, subscription.program)
                        self.add(packets)
                        self._describe(broker, packets)
        except StreamEnded as ended:
            self.finish(ended.reason)
        finally:
            if self.ended is None:
                self.finish("stream ended")
            if self.demuxer.invalid:
                skipped = self.demuxer.invalid
                log.info("%s: %d malformed TS/PES packets skipped", self.stream_id, skipped)


class PacketHub(TaskOwner):
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._demuxes = Feeds[StreamDemux](
            broker.supervisor,
            "demux",
            lambda demux: demux.run(broker),
            ended=lambda demux: demux.ended is not None,
        )

    def observe(self, event: Event) -> None:
        """A broker listener: each publish is demuxed until its video is described.

        Later changes (new parameter sets, B-frames appearing) are described
        while any output reads the stream's packets.
        """
        if isinstance(event, PublishStarted) and "@" not in event.stream_id and self._nursery:
            self._nursery.start_soon(self._probe, event.stream_id)

    async def _probe(self, stream_id: str) -> None:
        """Read a new publish, without counting as a viewer, until its video is described."""
        stream = self.broker.get(stream_id)
        if stream is None:
            return
        with trio.move_on_after(PROBE_TIMEOUT):
            try:
                async with self.read(stream_id) as reader:
                    await reader.demux.described(stream.generation)
            except StreamNotFound:
                pass

    def reader_count(self, stream_id: str) -> int:
        demux = self._demuxes.get(stream_id)
        return len(demux.readers) if demux is not None else 0

    def watched(self, stream_id: str) -> bool:
        """Whether anyone uses a stream: what decides that on-demand work may stop.

        Counted viewers (SRT, WebRTC, edges pulling it) attend the broker's
        stream; LL-HLS packagers, forwarders and transcoders read packets.
        """
        stream = self.broker.get(stream_id)
        return (stream is not None and stream.viewers > 0) or self.reader_count(stream_id) > 0

    @asynccontextmanager
    async def read(self, stream_id: str, *, max_lag: float = 2.0) -> AsyncIterator[PacketReader]:
        """Read a live stream's packets; StreamNotFound when it is not live."""
        stream = self.broker.get(stream_id)
        if stream is None:
            raise StreamNotFound(stream_id)
        demux = self._demuxes.open(self._nursery, stream_id, lambda: StreamDemux(stream_id))
        demux.follow(stream.generation)
        reader = PacketReader(demux, max_lag)
        demux.joined(reader)
        try:
            yield reader
        finally:
            demux.left(reader)
