"""A stream's audio in the codec an output needs, re-encoded once per stream for all its readers.

Forwarding to FLV needs AAC, WebRTC needs Opus; a WHIP publish has Opus and
an SRT one most often AAC.  Each reader that needs the other codec
subscribes a sink to the stream's `AudioFeed`: one decoder and one encoder
per stream and codec, in a worker thread, whatever the number of readers.
Audio already in the wanted codec is passed on as it is.
"""

from __future__ import annotations

import logging
import queue
from typing import Protocol

import trio

from ghostream import threads
from ghostream.broker.feeds import Feeds
from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import StreamNotFound
from ghostream.broker.stream import StreamEnded
from ghostream.media.demux import MediaPacket
from ghostream.media.reencode import AudioCodec, AudioReencoder, UndecodableAudio

log = logging.getLogger(__name__)


class PacketSink(Protocol):
    def put_nowait(self, item: MediaPacket) -> None: ...


class AudioFeed:
    """Runs while it has subscribers; a subscriber whose queue is full misses packets."""

    def __init__(self, stream_id: str, codec: AudioCodec, max_lag: float) -> None:
        self.stream_id = stream_id
        self.codec = codec
        self.max_lag = max_lag
        self.subscribers: set[PacketSink] = set()

    async def run(self, hub: PacketHub) -> None:
        """Until the last subscriber leaves or the stream ends; each run starts a fresh encoder."""
        reencoder = AudioReencoder(self.codec)
        try:
            async with hub.read(self.stream_id, max_lag=self.max_lag) as reader:
                while self.subscribers:
                    packet = await reader.receive()
                    if packet.track.kind != "audio":
                        continue
                    if packet.track.codec == self.codec.track.codec:
                        made = [packet]
                    else:
                        made = await trio.to_thread.run_sync(
                            self._reencode, reencoder, packet, limiter=threads.AUDIO
                        )
                    for encoded in made:
                        for subscriber in list(self.subscribers):
                            try:
                                subscriber.put_nowait(encoded)
                            except queue.Full:
                                pass
        except (StreamEnded, StreamNotFound):
            pass

    def _reencode(self, reencoder: AudioReencoder, packet: MediaPacket) -> list[MediaPacket]:
        try:
            return reencoder.reencode(packet)
        except UndecodableAudio as exc:
            log.debug("%s: %s skipped", self.stream_id, exc)
            return []


class AudioFeeds:
    """The running `AudioFeed` of each stream, in one codec; restarted while subscribed and live."""

    def __init__(
        self, hub: PacketHub, codec: AudioCodec, *, max_lag: float, component: str
    ) -> None:
        self.codec = codec
        self.max_lag = max_lag
        broker = hub.broker
        self._feeds = Feeds[AudioFeed](
            broker.supervisor,
            component,
            lambda feed: feed.run(hub),
            again=lambda feed: bool(feed.subscribers) and broker.get(feed.stream_id) is not None,
        )

    def subscribe(
        self, nursery: trio.Nursery | None, stream_id: str, sink: PacketSink
    ) -> AudioFeed:
        """The stream's feed, started if needed, with `sink` subscribed (discard it when done)."""
        feed = self._feeds.open(
            nursery, stream_id, lambda: AudioFeed(stream_id, self.codec, self.max_lag)
        )
        feed.subscribers.add(sink)
        return feed
