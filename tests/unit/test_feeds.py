"""Shared per-stream feeds: one running instance per stream, started by its first reader."""

from __future__ import annotations

import trio
import trio.testing

from ghostream.broker.feeds import Feeds
from ghostream.broker.supervisor import Supervisor
from ghostream.history.events import Event, StreamFault


class Work:
    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        self.runs = 0
        self.ended = False
        self.stop = trio.Event()
        self.fail = False

    async def run(self) -> None:
        self.runs += 1
        if self.fail:
            self.fail = False
            raise KeyError("oops")
        await self.stop.wait()


def feeds(events: list[Event], **options) -> Feeds[Work]:
    return Feeds[Work](Supervisor(events.append), "demux", Work.run, **options)


async def test_readers_of_a_stream_share_its_running_feed() -> None:
    running = feeds([])
    async with trio.open_nursery() as nursery:
        first = running.open(nursery, "demo", lambda: Work("demo"))
        again = running.open(nursery, "demo", lambda: Work("other"))
        other = running.open(nursery, "other", lambda: Work("other"))
        assert again is first and other is not first
        assert running.get("demo") is first and "other" in running
        await trio.testing.wait_all_tasks_blocked()
        assert (first.runs, other.runs) == (1, 1)
        first.stop.set()
        await trio.testing.wait_all_tasks_blocked()
        # A feed that stopped is forgotten: the next reader starts a new one.
        assert running.get("demo") is None and "demo" not in running
        assert running.open(nursery, "demo", lambda: Work("demo")) is not first
        nursery.cancel_scope.cancel()


async def test_a_feed_that_is_winding_down_is_replaced_and_outlived() -> None:
    running = feeds([], ended=lambda work: work.ended)
    async with trio.open_nursery() as nursery:
        old = running.open(nursery, "demo", lambda: Work("demo"))
        old.ended = True
        assert running.get("demo") is None
        new = running.open(nursery, "demo", lambda: Work("demo"))
        assert new is not old
        await trio.testing.wait_all_tasks_blocked()
        old.stop.set()
        await trio.testing.wait_all_tasks_blocked()
        # The old feed's end leaves the newer one registered.
        assert running.get("demo") is new
        nursery.cancel_scope.cancel()


async def test_a_failing_feed_is_reported_and_restarted_while_wanted(autojump_clock) -> None:
    events: list[Event] = []
    running = feeds(events, again=lambda work: work.stream_id == "demo")
    async with trio.open_nursery() as nursery:
        wanted = running.open(nursery, "demo", lambda: Work("demo"))
        unwanted = running.open(nursery, "gone", lambda: Work("gone"))
        wanted.fail = unwanted.fail = True
        await trio.sleep(5)
        assert wanted.runs == 2 and running.get("demo") is wanted
        assert unwanted.runs == 1 and running.get("gone") is None
        assert sorted((e.stream_id, e.component, e.action) for e in events) == [
            ("demo", "demux", "restarting in 1 s"),
            ("gone", "demux", "stopped"),
        ]
        assert all(isinstance(e, StreamFault) for e in events)
        nursery.cancel_scope.cancel()
