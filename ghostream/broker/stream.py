"""One live stream: a ring of MPEG-TS chunks that every viewer reads with its own cursor.

Nothing is copied per viewer and nothing waits for a viewer: `publish` only
appends to the ring and wakes readers.  A reader whose cursor falls off the
ring, or lags too far behind, jumps to the start of the latest GOP (with the
program tables first) so its decoder resumes at once; one that keeps falling
behind is dropped.  New readers start at that same GOP start (the GOP cache).
"""

from __future__ import annotations

from collections import deque
from enum import Enum

import trio

from ghostream.media.properties import VideoProperties
from ghostream.media.ts import ChunkInfo, TsInspector

DEFAULT_RING_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_LAG_BYTES = 8 * 1024 * 1024
# A reader that needs this many jumps within the window is too slow to serve.
MAX_SKIPS = 3
SKIP_WINDOW = 30.0
RECEIVE_LIMIT = 64 * 1024


class StreamState(Enum):
    LIVE = "live"
    WAITING = "waiting for publisher"
    ENDED = "ended"


class StreamEnded(Exception):
    """The stream ended (or the reader was dropped); `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Subscription:
    """A reader's cursor into a stream."""

    def __init__(self, stream: Stream, max_lag_bytes: int) -> None:
        self.stream = stream
        self.id = 0
        self.protocol = ""
        self.max_lag_bytes = max_lag_bytes
        self.bytes_sent = 0
        self.skips = 0
        self.dropped: str | None = None
        self._skip_times: deque[float] = deque()
        self._cursor: int | None = None
        self._generation = -1

    @property
    def generation(self) -> int:
        """The publisher generation the cursor reads (-1 before the first bytes)."""
        return self._generation

    @property
    def lag_bytes(self) -> int:
        if self._cursor is None:
            return 0
        return self.stream.bytes_between(self._cursor, self.stream.next_index)

    async def receive(self) -> bytes:
        """The next bytes of the stream, waiting for them; StreamEnded when over."""
        stream = self.stream
        while True:
            if self.dropped is not None:
                raise StreamEnded(self.dropped)
            prefix = b""
            if self._generation != stream.generation or self._cursor is None:
                start = stream.gop_start
                if start is None:
                    if stream.state is StreamState.ENDED:
                        raise StreamEnded("stream ended")
                    await stream.wait_for_data()
                    continue
                self._generation = stream.generation
                self._cursor = start
                prefix = stream.tables
            elif self._cursor < stream.first_index or self.lag_bytes > self.max_lag_bytes:
                self._skip_ahead()
                continue
            if self._cursor < stream.next_index:
                data, count = stream.read(self._cursor, RECEIVE_LIMIT)
                self._cursor += count
                self.bytes_sent += len(prefix) + len(data)
                return prefix + data
            if stream.state is StreamState.ENDED:
                raise StreamEnded("stream ended")
            await stream.wait_for_data()

    def _skip_ahead(self) -> None:
        now = trio.current_time()
        self.skips += 1
        self._skip_times.append(now)
        while self._skip_times and now - self._skip_times[0] > SKIP_WINDOW:
            self._skip_times.popleft()
        if len(self._skip_times) >= MAX_SKIPS:
            self.dropped = "too slow: fell behind repeatedly"
            self.stream.note_drop(self)
            return
        self.stream.note_skip(self)
        # Restart at the latest GOP, tables first, as a new reader would.
        self._cursor = None

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
        self.generation = 0
        self.ring_bytes = ring_bytes
        self.bytes_in = 0
        self.subscribers: set[Subscription] = set()
        self.viewers = 0
        self.inspector = TsInspector()
        self.gop_start: int | None = None
        # The current publisher's video, once its packets have described it.
        self.video: VideoProperties | None = None
        # The server's own copy of another stream: served, but not listed (see Broker.publish).
        self.internal = False
        self.on_skip: list = []
        # Outputs that refused this publish's data: their component name, and their own record
        # of why (an LL-HLS packager that failed); cleared when a new publisher comes.
        self.unplayable: dict[str, object] = {}
        self._chunks: deque[bytes] = deque()
        self._first = 0
        self._buffered = 0
        self._wakeup = trio.lowlevel.ParkingLot()

    # Publisher side.

    def publish(self, chunk: bytes) -> ChunkInfo:
        info = self.inspector.inspect(chunk)
        index = self._first + len(self._chunks)
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        self.bytes_in += len(chunk)
        if info.keyframe:
            self.gop_start = index
        while self._buffered > self.ring_bytes and len(self._chunks) > 1:
            self._buffered -= len(self._chunks.popleft())
            self._first += 1
        if self.gop_start is not None and self.gop_start < self._first:
            # A GOP longer than the ring: new readers wait for the next keyframe.
            self.gop_start = None
        self._wakeup.unpark_all()
        return info

    def publisher_left(self) -> None:
        self.state = StreamState.WAITING
        self._wakeup.unpark_all()

    def publisher_returned(self) -> None:
        """A new publisher: its PIDs and timestamps start afresh, so readers resync."""
        self.state = StreamState.LIVE
        self.generation += 1
        self.inspector = TsInspector()
        self.gop_start = None
        self.unplayable.clear()
        self.video = None

    def end(self) -> None:
        self.state = StreamState.ENDED
        self._wakeup.unpark_all()

    # Reader side.

    @property
    def tables(self) -> bytes:
        return self.inspector.tables

    @property
    def first_index(self) -> int:
        return self._first

    @property
    def next_index(self) -> int:
        return self._first + len(self._chunks)

    def subscribe(self, *, max_lag_bytes: int = DEFAULT_MAX_LAG_BYTES) -> Subscription:
        subscription = Subscription(self, max_lag_bytes)
        self.subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)

    async def wait_for_data(self) -> None:
        await self._wakeup.park()

    def read(self, index: int, limit: int) -> tuple[bytes, int]:
        """Chunks from `index`, at least one, up to `limit` bytes; and how many."""
        parts = []
        size = 0
        for i in range(index - self._first, len(self._chunks)):
            chunk = self._chunks[i]
            if parts and size + len(chunk) > limit:
                break
            parts.append(chunk)
            size += len(chunk)
        return b"".join(parts), len(parts)

    def bytes_between(self, start: int, end: int) -> int:
        if start >= end:
            return 0
        if start < self._first:
            return self._buffered
        # Estimate from the ring's average chunk size: exact enough for a lag bound.
        average = self._buffered / max(len(self._chunks), 1)
        return int((end - start) * average)

    def note_skip(self, subscription: Subscription) -> None:
        for callback in self.on_skip:
            callback(self, subscription, dropped=False)

    def note_drop(self, subscription: Subscription) -> None:
        for callback in self.on_skip:
            callback(self, subscription, dropped=True)
