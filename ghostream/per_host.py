"""Limits and reports per sending host, so that one host can never crowd out the others.

A host is an IPv4 address or an IPv6 /64 (`ghostream.peers.source_host`):
a new source port or new last 64 bits is no new host.  `HostSlots` holds
each host to a number of open connections (or sessions); `OncePerHost`
says when a host's refusal is worth a log line and a history event, so
that a host refused a thousand times a second costs one line a minute.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# A refused host is reported at most this often (seconds).
REPORT_INTERVAL = 60.0
# Hosts remembered for their last report; past it the one reported first is forgotten.
MAX_REPORTED_HOSTS = 10_000


class HostSlots:
    """Open connections per host, each host held to `limit` of them.

    The table holds only hosts with something open, so it is bounded by
    what the service bounds anyway (its clients or sessions).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def count(self, host: str) -> int:
        return self._open.get(host, 0)

    def full(self, host: str) -> bool:
        return self.count(host) >= self.limit

    def take(self, host: str) -> None:
        self._open[host] = self.count(host) + 1

    def give_back(self, host: str) -> None:
        left = self.count(host) - 1
        if left > 0:
            self._open[host] = left
        else:
            self._open.pop(host, None)

    @contextmanager
    def held(self, host: str) -> Iterator[None]:
        """One slot of `host` for the duration of the block (taken even when full: check first)."""
        self.take(host)
        try:
            yield
        finally:
            self.give_back(host)


class OncePerHost:
    """When to report a host's refusals: its first, then at most once per `interval`.

    `due` answers None while a report would repeat the last one too soon,
    else how many refusals of that host went unreported since the last.
    """

    def __init__(
        self,
        interval: float = REPORT_INTERVAL,
        *,
        max_hosts: int = MAX_REPORTED_HOSTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self.max_hosts = max_hosts
        self._clock = clock
        # Host → (time of its last report, refusals since it).
        self._reported: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def due(self, host: str) -> int | None:
        now = self._clock()
        last = self._reported.get(host)
        if last is not None and now - last[0] < self.interval:
            self._reported[host] = (last[0], last[1] + 1)
            return None
        self._reported.pop(host, None)
        self._reported[host] = (now, 0)
        while len(self._reported) > self.max_hosts:
            self._reported.popitem(last=False)
        return last[1] if last is not None else 0


def unsaid(count: int) -> str:
    """What a report adds about the refusals left out before it."""
    return f" ({count} more from this host since the last report)" if count else ""
