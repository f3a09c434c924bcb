"""Shared per-stream feeds: the one running instance of a piece of work for each stream.

A demux, an audio re-encoder, a packager, a transcoder, a pull: each is done
once per stream for all its readers.  The first reader starts it; later ones
find it running and join it.  `Feeds` is that get-or-start, written once: it
runs each feed under the supervisor's error boundary, in the nursery of the
service that owns it, and forgets it when it stops, so the next reader
starts a fresh one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import trio

from ghostream.broker.supervisor import Supervisor

T = TypeVar("T")


class Feeds(Generic[T]):
    """The running feed of each stream, of one kind (`component`), started on first demand.

    `run(feed)` is the feed's work; it is restarted after a failure while
    `again(feed)` says so.  A feed for which `ended(feed)` holds is still
    winding down: it is not handed out, and a new one replaces it.
    """

    def __init__(
        self,
        supervisor: Supervisor,
        component: str,
        run: Callable[[T], Awaitable[object]],
        *,
        again: Callable[[T], bool] | None = None,
        ended: Callable[[T], bool] | None = None,
    ) -> None:
        self.supervisor = supervisor
        self.component = component
        self._run = run
        self._again = again
        self._ended = ended
        self._running: dict[str, T] = {}

    def get(self, stream_id: str) -> T | None:
        """The stream's running feed, if any."""
        feed = self._running.get(stream_id)
        if feed is None or (self._ended is not None and self._ended(feed)):
            return None
        return feed

    def __contains__(self, stream_id: str) -> bool:
        return self.get(stream_id) is not None

    def open(self, nursery: trio.Nursery | None, stream_id: str, make: Callable[[], T]) -> T:
        """The stream's running feed, or a new one from `make()` started in `nursery`."""
        feed = self.get(stream_id)
        if feed is not None:
            return feed
        assert nursery is not None, f"the service of {self.component} is not running"
        feed = make()
        self._running[stream_id] = feed
        nursery.start_soon(self._registered, stream_id, feed, name=f"{self.component} {stream_id}")
        return feed

    async def _registered(self, stream_id: str, feed: T) -> None:
        again = self._again
        try:
            await self.supervisor.run(
                stream_id,
                self.component,
                lambda: self._run(feed),
                again=None if again is None else lambda: again(feed),
            )
        finally:
            # A newer feed under the same stream id is left alone.
            if self._running.get(stream_id) is feed:
                del self._running[stream_id]
