"""LL-HLS players counted as viewers: distinct clients that fetched media in the last 10 s.

An LL-HLS player keeps no connection open: it fetches a part or a segment
every fraction of a second.  A client (its address and User-Agent, or the
player page's own id) that fetched one joins the stream's viewers as
`llhls`, and leaves once it has fetched nothing for `ACTIVE_WINDOW`
seconds.  Who is fetching is held in memory only; the history sees the
same joins and leaves as for any other protocol.

A cache or CDN in front of the origin fetches each part once for all the
players behind it: it counts as one viewer.  One address counts at most
`PAGES_PER_HOST` page ids; the pages it fetches for past those count as one
more viewer, so made-up ids add nothing to the count or the history.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass

import trio

from ghostream.audience import PAGES_PER_HOST
from ghostream.broker.registry import Broker, StreamNotFound, Viewer
from ghostream.peers import source_host

PROTOCOL = "llhls"
ACTIVE_WINDOW = 10.0
SWEEP_INTERVAL = 1.0
# Clients followed at once; past it the one silent the longest is let go first.
MAX_CLIENTS = 100_000
PAGE = "page:"


@dataclass(slots=True)
class Client:
    viewer: Viewer
    peer: str
    seen: float
    # The host whose page id this client is, counted against its few; "" otherwise.
    page_host: str = ""


def client_key(host: str, user_agent: str, page_id: str = "") -> str:
    """Who fetches: the player page's id if it sent one, else its address and User-Agent."""
    if page_id:
        return PAGE + page_id[:64]
    digest = hashlib.sha256(user_agent.encode(errors="replace")).hexdigest()[:16]
    return f"{host}|{digest}"


class HlsAudience:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        # Oldest fetch first: a client moves to the end each time it fetches.
        self._clients: dict[tuple[str, str], Client] = {}
        # Page ids followed per host.
        self._pages: Counter[str] = Counter()

    def saw(self, stream_id: str, client: str, peer: str, size: int) -> None:
        """A client fetched `size` bytes of a stream's media."""
        key = (stream_id, client)
        entry = self._clients.pop(key, None)
        page_host = ""
        if entry is None and client.startswith(PAGE):
            page_host = source_host(peer)
            if self._pages[page_host] >= PAGES_PER_HOST:
                key, page_host = (stream_id, f"{page_host}|{PAGE}"), ""
                entry = self._clients.pop(key, None)
        if entry is None:
            if len(self._clients) >= MAX_CLIENTS:
                self._let_go(next(iter(self._clients)))
            try:
                viewer = self.broker.join(stream_id, peer, PROTOCOL)
            except StreamNotFound:
                return
            entry = Client(viewer, peer, 0.0, page_host)
            if page_host:
                self._pages[page_host] += 1
        entry.seen = trio.current_time()
        entry.viewer.bytes_sent += size
        self._clients[key] = entry

    def page_ids(self) -> set[str]:
        """Player pages counted here (their counter polls must not count them again)."""
        return {client[len(PAGE) :] for _, client in self._clients if client.startswith(PAGE)}

    def expire(self, now: float) -> None:
        limit = now - ACTIVE_WINDOW
        for key, entry in list(self._clients.items()):
            if entry.seen > limit:
                break
            self._let_go(key, "stopped fetching")

    def _let_go(self, key: tuple[str, str], reason: str = "too many LL-HLS clients") -> None:
        entry = self._clients.pop(key)
        if entry.page_host:
            self._pages[entry.page_host] -= 1
            if not self._pages[entry.page_host]:
                del self._pages[entry.page_host]
        self.broker.leave(entry.viewer, entry.peer, reason)

    async def run(self) -> None:
        try:
            while True:
                await trio.sleep(SWEEP_INTERVAL)
                self.expire(trio.current_time())
        finally:
            for key in list(self._clients):
                self._let_go(key, "server stopping")
