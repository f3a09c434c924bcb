"""One live stream: a ring of MPEG-TS chunks that every viewer reads with its own cursor.

Nothing is copied per viewer and nothing waits for a viewer: `publish` only
appends to the ring and wakes readers.  Readers follow the ring's one rule
(`broker.ring`): a new reader, or one that fell behind, starts at the latest
GOP (the GOP cache) with the program tables first, so its decoder starts at
once; one that keeps falling behind is dropped.  Each chunk is inspected once,
here: its keyframe flag places the GOP start, and the program it belongs to
travels with it, so the demuxer reads the tables from it instead of again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from ghostream.broker.ring import Cursor, Ring, StreamEnded
from ghostream.media.properties import VideoProperties
from ghostream.media.ts import ChunkInfo, Program, TsInspector

__all__ = ["Stream", "StreamEnded", "StreamState", "Subscription"]

DEFAULT_RING_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_LAG_BYTES = 8 * 1024 * 1024
RECEIVE_LIMIT = 64 * 1024


class StreamState(Enum):
    LIVE = "live"
    WAITING = "waiting for publisher"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class Chunk:
    """Published TS bytes, and the program they belong to as the inspection found it."""

    data: bytes
    program: Program


class Subscription:
    """A reader's cursor into a stream."""

    def __init__(self, stream: Stream, max_lag_bytes: int) -> None:
        self.stream = stream
        self.id = 0
        self.protocol = ""
        self.bytes_sent = 0
        # The program of the bytes last received (for the demuxer).
        self.program = Program()
        self.cursor = Cursor(
            stream.ring,
            max_lag_bytes,
            on_skip=lambda dropped: stream.note_skip(self, dropped=dropped),
        )

    @property
    def generation(self) -> int:
        """The publisher generation the cursor reads (-1 before the first bytes)."""
        return self.cursor.generation

    @property
    def dropped(self) -> str | None:
        return self.cursor.dropped

    async def receive(self) -> bytes:
        """The next bytes of the stream, waiting for them; StreamEnded when over."""
        stream = self.stream
        index = await self.cursor.readable(stream.ended_reason)
        prefix = stream.tables if self.cursor.fresh else b""
        chunks = []
        size = 0
        for chunk in stream.ring.since(index):
            if chunks and size + len(chunk.data) > RECEIVE_LIMIT:
                break
            chunks.append(chunk)
            size += len(chunk.data)
        self.cursor.advance(len(chunks))
        self.program = chunks[-1].program
        data = prefix + b"".join(chunk.data for chunk in chunks)
        self.bytes_sent += len(data)
        return data

    def close(self) -> None:
        self.stream.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Stream:
    def __init__(self, stream_id: str, *, ring_bytes: int = DEFAULT_RING_BYTES) -> None:
        self.id = stream_id
        self.state = StreamState.LIVE
        self.ring = Ring[Chunk](ring_bytes, lambda chunk: len(chunk.data))
        self.bytes_in = 0
        self.subscribers: set[Subscription] = set()
        self.viewers = 0
        self.inspector = TsInspector()
        # The current publisher's video, once its packets have described it.
        self.video: VideoProperties | None = None
        # The server's own copy of another stream: served, but not listed (see Broker.publish).
        self.internal = False
        self.on_skip: list = []
        # Outputs that refused this publish's data: their component name, and their own record
        # of why (an LL-HLS packager that failed); cleared when a new publisher comes.
        self.unplayable: dict[str, object] = {}

    # Publisher side.

    def publish(self, chunk: bytes) -> ChunkInfo:
        info = self.inspector.inspect(chunk)
        self.ring.append(Chunk(chunk, self.inspector.program), start=info.keyframe)
        self.bytes_in += len(chunk)
        self.ring.wake()
        return info

    def publisher_left(self) -> None:
        self.state = StreamState.WAITING
        self.ring.wake()

    def publisher_returned(self) -> None:
        """A new publisher: its PIDs and timestamps start afresh, so readers resync."""
        self.state = StreamState.LIVE
        self.ring.restart()
        self.inspector = TsInspector()
        self.unplayable.clear()
        self.video = None

    def end(self) -> None:
        self.state = StreamState.ENDED
        self.ring.wake()

    # Reader side.

    def ended_reason(self) -> str | None:
        return "stream ended" if self.state is StreamState.ENDED else None

    @property
    def generation(self) -> int:
        """Counts publishers: a new one's PIDs and timestamps start afresh."""
        return self.ring.generation

    @property
    def gop_start(self) -> int | None:
        """Where a new reader starts (None until a keyframe came)."""
        return self.ring.start

    @property
    def program(self) -> Program:
        return self.inspector.program

    @property
    def tables(self) -> bytes:
        return self.inspector.tables

    def subscribe(self, *, max_lag_bytes: int = DEFAULT_MAX_LAG_BYTES) -> Subscription:
        subscription = Subscription(self, max_lag_bytes)
        self.subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)

    def note_skip(self, subscription: Subscription, *, dropped: bool) -> None:
        for callback in self.on_skip:
            callback(self, subscription, dropped=dropped)
