"""Guessing is slow: each failed attempt waits longer before it is refused.

Failures are counted per key (a source host, a stream id, an admin client);
after `free_failures` of them, a refusal waits `base_delay`, doubled with
each further failure up to `max_delay`.  The wait is the caller's (a
per-connection task sleeps before sending its refusal), so nothing else is
held up, and a success clears the keys at once.  The table is bounded: the
least recently failed keys are forgotten first, and a key quiet for
`forget_after` starts over.

A host is an IPv4 address or an IPv6 /64 (`ghostream.peers.source_host`):
changing the source port or the last 64 bits buys no new tries.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from ghostream.config import AuthSettings
from ghostream.peers import source_host


def host_key(peer: str) -> str:
    """The throttle key of a peer (`host:port` or a bare host)."""
    return f"host:{source_host(peer)}"


def failure_throttle(settings: AuthSettings) -> FailureThrottle:
    """A throttle with the configured delays (publishers, edges and the admin each get one)."""
    return FailureThrottle(
        base_delay=settings.failure_delay / 1000, max_delay=settings.max_failure_delay / 1000
    )


class FailureThrottle:
    def __init__(
        self,
        *,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        free_failures: int = 1,
        forget_after: float = 900.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.free_failures = free_failures
        self.forget_after = max(forget_after, 2 * max_delay)
        self.max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._failures)

    def failed(self, *keys: str) -> float:
        """Count a failure against every key; returns how long its refusal waits."""
        now = self._clock()
        delay = 0.0
        for key in keys:
            count, last = self._failures.pop(key, (0, now))
            if now - last > self.forget_after:
                count = 0
            count += 1
            self._failures[key] = (count, now)
            delay = max(delay, self._delay(count))
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)
        return delay

    def succeeded(self, *keys: str) -> None:
        for key in keys:
            self._failures.pop(key, None)

    def _delay(self, count: int) -> float:
        excess = count - self.free_failures
        if excess <= 0:
            return 0.0
        return min(self.base_delay * 2 ** min(excess - 1, 64), self.max_delay)
