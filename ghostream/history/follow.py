"""Following the log: every event after a given id, then each new one as it is written.

Webhooks and the admin's live push read the log the same way: a cursor (the
id of the last event handled) and a filter of kinds.  What they get is read
back from the database, not taken from the broker, so a follower that was
away (a receiver down, a restart, a client reconnecting with `since`) gets
exactly what it missed, in the log's order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection

from ghostream.history import queries
from ghostream.history.log import EventLog

BATCH = 100


async def follow(
    history: EventLog, after: int, kinds: Collection[str] = ()
) -> AsyncIterator[list[dict]]:
    """Batches of events newer than `after`, oldest first, forever; waits while there are none.

    An empty batch is never yielded, but the cursor still moves past events
    the filter skipped, so a rare kind is not searched for again and again.
    """
    while True:
        rows, newest = await history.query(queries.events_after, after, tuple(kinds), BATCH)
        if rows:
            after = rows[-1]["id"]
            yield rows
            if len(rows) == BATCH:
                continue
        after = max(after, newest)
        await history.wait_beyond(after)
