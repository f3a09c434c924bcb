"""How many watch a stream: viewers and player pages here, and the audience of the edges.

Every number the streamer sees (the player's counter and `/_stats/ID/`, the
`ghostream_edge_viewers` metric) comes from here, so they agree.  An edge's
pull is a viewer of this server's stream but not a person: it is counted
through the report of the edge's own audience instead, which in a chain of
edges already holds the edges behind it.  The origin answers each report
with its totals, so that a player served by an edge shows the same number.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from ghostream.broker.registry import Broker
from ghostream.peers import source_host

# A browser page polls the counter every 20 s; one not seen for this long has left.
PAGE_VIEWER_TTL = 40.0
MAX_PAGE_VIEWERS = 100_000
# Pages counted per address (an IPv6 /64): a household's few screens, never one
# host's made-up ids.  A new id past it takes the place of that host's oldest.
PAGES_PER_HOST = 4
# Edges report every few seconds; one silent for this long is gone (or restarted under a new id).
REPORT_TTL = 10.0
MAX_EDGES = 1024


def same_stream(stream: str, wanted: str) -> bool:
    """A quality variant (`id@480p`) counts toward its stream."""
    return stream == wanted or stream.startswith(wanted + "@")


class PageViewers:
    """Browser pages that poll `/_stats/ID/?uid=…`, each counted once while it polls.

    The id is the page's word alone, so one address counts at most
    `PAGES_PER_HOST` pages however many ids it makes up.  Page polls are
    counted here only, never written to the history: a view there is a
    session or media fetched.
    """

    def __init__(self, per_host: int = PAGES_PER_HOST) -> None:
        self.per_host = per_host
        # Page id → (stream id, last poll, host), the longest silent first.
        self._seen: dict[str, tuple[str, float, str]] = {}
        # Host → its page ids, the longest silent first.
        self._hosts: dict[str, OrderedDict[str, None]] = {}

    def saw(self, uid: str, stream_id: str, peer: str) -> None:
        """A page (`uid`) of `stream_id` polled from `peer` (an address, with or without port)."""
        host = source_host(peer)
        self._forget(uid)
        pages = self._hosts.setdefault(host, OrderedDict())
        if len(pages) >= self.per_host:
            self._forget(next(iter(pages)))
            pages = self._hosts.setdefault(host, OrderedDict())
        pages[uid] = None
        self._seen[uid] = (stream_id, time.monotonic(), host)
        if len(self._seen) > MAX_PAGE_VIEWERS:
            self._expire(force_oldest=True)

    def count(self, stream_id: str, already_counted: set[str]) -> int:
        """Pages of a stream, except those whose WebRTC session is counted as a viewer."""
        self._expire()
        return sum(
            1
            for uid, (stream, _, _) in self._seen.items()
            if same_stream(stream, stream_id) and uid not in already_counted
        )

    def _expire(self, *, force_oldest: bool = False) -> None:
        limit = time.monotonic() - PAGE_VIEWER_TTL
        for uid, (_, seen, _) in list(self._seen.items()):
            if seen >= limit and not force_oldest:
                break
            self._forget(uid)
            force_oldest = False

    def _forget(self, uid: str) -> None:
        entry = self._seen.pop(uid, None)
        if entry is None:
            return
        host = entry[2]
        pages = self._hosts[host]
        del pages[uid]
        if not pages:
            del self._hosts[host]


@dataclass(frozen=True, slots=True)
class EdgeReport:
    counts: dict[str, int]
    received: float


class Audience:
    def __init__(self, broker: Broker, sessions: Callable[[], set[str]] = set) -> None:
        self.broker = broker
        self.pages = PageViewers()
        # Page ids whose WebRTC session is already a counted viewer.
        self._sessions = sessions
        self._pulls: Counter[str] = Counter()
        self._reports: dict[str, EdgeReport] = {}
        # On an edge: the origin's totals, from its answer to the last report.
        self._upstream = EdgeReport({}, float("-inf"))

    @contextmanager
    def edge_pull(self, stream_id: str) -> Iterator[None]:
        """Mark an attending viewer of `stream_id` as an edge for the duration of the block."""
        self._pulls[stream_id] += 1
        try:
            yield
        finally:
            self._pulls[stream_id] -= 1
            if not self._pulls[stream_id]:
                del self._pulls[stream_id]

    def edges_pulling(self, stream_id: str) -> int:
        return self._pulls[stream_id]

    def count(self, stream_id: str) -> int:
        """People watching a stream or its variants, here and on every edge behind this server."""
        return self.here(stream_id) + self.on_edges(stream_id)

    def total(self, stream_id: str) -> int:
        """The number shown to viewers: the origin's total on an edge that has heard it lately."""
        count = self.count(stream_id)
        if time.monotonic() - self._upstream.received > REPORT_TTL:
            return count
        # Our own viewers may have come since the origin last heard of them.
        return max(count, self._upstream.counts.get(stream_id, 0))

    def heard_from_origin(self, totals: Mapping[str, int]) -> None:
        self._upstream = EdgeReport(dict(totals), time.monotonic())

    def here(self, stream_id: str) -> int:
        viewers = sum(
            summary.viewers - self._pulls[summary.id]
            for summary in self.broker.summaries()
            if same_stream(summary.id, stream_id)
        )
        return viewers + self.pages.count(stream_id, self._sessions())

    def on_edges(self, stream_id: str) -> int:
        self._expire()
        return sum(report.counts.get(stream_id, 0) for report in self._reports.values())

    def edge_viewers(self) -> dict[str, int]:
        """Per stream, the viewers edges report (what the metric shows)."""
        self._expire()
        totals: Counter[str] = Counter()
        for report in self._reports.values():
            totals.update(report.counts)
        return dict(totals)

    def report(self) -> dict[str, int]:
        """What an edge tells its origin: the audience of every stream live here.

        Pages of streams that are not live count nowhere else either, and
        leaving them out keeps the report as small as the set of streams.
        """
        self._expire()
        ids = {s.id for s in self.broker.summaries()}
        counts = {stream_id: self.count(stream_id) for stream_id in ids}
        return {stream_id: count for stream_id, count in counts.items() if count > 0}

    def receive(self, edge: str, counts: Mapping[str, int]) -> None:
        """An edge's report; it replaces that edge's last one.

        Only streams live here are kept: an edge can only have pulled those,
        and it keeps the table (and the metric's labels) bounded.
        """
        live = {s.id for s in self.broker.summaries()}
        kept = {stream_id: count for stream_id, count in counts.items() if stream_id in live}
        self._reports.pop(edge, None)
        self._reports[edge] = EdgeReport(kept, time.monotonic())
        while len(self._reports) > MAX_EDGES:
            del self._reports[next(iter(self._reports))]

    def _expire(self) -> None:
        limit = time.monotonic() - REPORT_TTL
        for edge, report in list(self._reports.items()):
            if report.received >= limit:
                break
            del self._reports[edge]
