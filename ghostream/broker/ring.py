"""The ring a live stream keeps for its readers, and the one rule for a reader that falls behind.

A stream's TS chunks (`broker.stream`) and its demuxed packets
(`broker.packets`) are each kept in a `Ring`: appending never waits for a
reader, and the oldest items go once the ring holds more than its capacity.
Every reader follows the ring with its own `Cursor`:

- it starts at the latest start (a video keyframe: the GOP cache), and
  waits for one if the ring has none;
- when it has fallen off the ring, or lags more than it allows while a newer
  start exists, it skips to the latest start, and its owner is told;
- a reader that has to skip `MAX_SKIPS` times within `SKIP_WINDOW` is
  dropped (told too), unless it is the server's own per-stream work, which
  serves many and only skips;
- after a new publisher (`restart`), it starts again at the new one's first
  start, never reading the previous publisher's items as the new one's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Generic, TypeVar

import trio

T = TypeVar("T")

# A reader that needs this many skips within the window is too slow to serve.
MAX_SKIPS = 3
SKIP_WINDOW = 30.0
TOO_SLOW = "too slow: fell behind repeatedly"


class StreamEnded(Exception):
    """The stream ended (or the reader was dropped); `reason` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Ring(Generic[T]):
    """Items numbered from the first ever appended, holding at most `capacity` of `weight`.

    `start` is the newest item a reader may start at, if the ring still holds one.
    """

    def __init__(self, capacity: int, weight: Callable[[T], int] = lambda _: 1) -> None:
        self.capacity = capacity
        self.generation = 0
        self.first = 0
        self.start: int | None = None
        self.buffered = 0
        self._weight = weight
        self._items: deque[T] = deque()
        # The total weight ever appended, as of each item held.
        self._totals: deque[int] = deque()
        self._total = 0
        self._wakeup = trio.lowlevel.ParkingLot()

    @property
    def next(self) -> int:
        return self.first + len(self._items)

    def __getitem__(self, index: int) -> T:
        return self._items[index - self.first]

    def since(self, index: int) -> Iterator[T]:
        """The items from `index` to the newest."""
        return islice(self._items, index - self.first, None)

    def newest(self) -> Iterator[T]:
        """The items from the newest back."""
        return reversed(self._items)

    def append(self, item: T, *, start: bool) -> None:
        """Add an item (`start`: one a reader may start at); readers are woken by `wake`."""
        if start:
            self.start = self.next
        weight = self._weight(item)
        self._items.append(item)
        self._total += weight
        self._totals.append(self._total)
        self.buffered += weight
        while self.buffered > self.capacity and len(self._items) > 1:
            self.buffered -= self._weight(self._items.popleft())
            self._totals.popleft()
            self.first += 1
        if self.start is not None and self.start < self.first:
            # A GOP longer than the ring: new readers wait for the next start.
            self.start = None

    def restart(self) -> None:
        """A new publisher: what the ring holds is not its, and readers start over."""
        self.generation += 1
        self.first = self.next
        self._items.clear()
        self._totals.clear()
        self.buffered = 0
        self.start = None

    def lag(self, index: int) -> float:
        """How far a reader at `index` is behind the newest item, in weight."""
        if index >= self.next:
            return 0
        if index <= self.first:
            return self.buffered
        return self._total - self._totals[index - self.first - 1]

    def wake(self) -> None:
        self._wakeup.unpark_all()

    async def wait(self) -> None:
        await self._wakeup.park()


class Cursor(Generic[T]):
    """A reader's place in a ring, moved by the rule in this module's docstring.

    `on_skip(dropped)` is told of every skip; `fresh` says that the next read
    begins at a start (a reader of TS puts the program tables first).
    """

    def __init__(
        self,
        ring: Ring[T],
        max_lag: float,
        *,
        on_skip: Callable[[bool], None] | None = None,
        droppable: bool = True,
    ) -> None:
        self.ring = ring
        self.max_lag = max_lag
        self.on_skip = on_skip
        self.droppable = droppable
        self.skips = 0
        self.dropped: str | None = None
        self.fresh = False
        self.generation = -1
        self._index: int | None = None
        self._skip_times: deque[float] = deque()

    def place(self) -> int | None:
        """Where to read next, or None to wait for a start; StreamEnded once dropped.

        What is there to read lies between the place and `ring.next`.
        """
        if self.dropped is not None:
            raise StreamEnded(self.dropped)
        ring = self.ring
        index = self._index
        if index is None or self.generation != ring.generation:
            self._start()
        elif index < ring.first or (
            ring.start is not None and ring.start > index and ring.lag(index) > self.max_lag
        ):
            self._fell_behind()
            self._start()
        return self._index

    async def readable(self, ended: Callable[[], str | None]) -> int:
        """The place, once there is something to read there; StreamEnded once dropped or over.

        Over is when `ended()` gives a reason and nothing is left to read.
        """
        while True:
            index = self.place()
            if index is not None and index < self.ring.next:
                return index
            reason = ended()
            if reason is not None:
                raise StreamEnded(reason)
            await self.ring.wait()

    def advance(self, count: int) -> None:
        """`count` items were read from the place."""
        assert self._index is not None
        self._index += count
        self.fresh = False

    def _start(self) -> None:
        self._index = self.ring.start
        self.generation = self.ring.generation
        self.fresh = self._index is not None

    def _fell_behind(self) -> None:
        now = trio.current_time()
        self.skips += 1
        self._skip_times.append(now)
        while now - self._skip_times[0] > SKIP_WINDOW:
            self._skip_times.popleft()
        dropped = self.droppable and len(self._skip_times) >= MAX_SKIPS
        if dropped:
            self.dropped = TOO_SLOW
        if self.on_skip is not None:
            self.on_skip(dropped)
        if dropped:
            raise StreamEnded(TOO_SLOW)
