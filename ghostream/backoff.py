"""Retry delays that double after each failure and start small again after a healthy run.

Forwarding targets, supervised per-stream tasks and edge pulls share this
rule: a peer that keeps failing is not hammered, and one that worked for a
while and then broke is retried quickly, as after a first failure.
"""

from __future__ import annotations

import math


class Backoff:
    def __init__(self, first: float, cap: float, healthy_after: float = math.inf) -> None:
        self.first = first
        self.cap = cap
        self.healthy_after = healthy_after
        self._next = first

    def reset(self) -> None:
        """The peer worked: the next failure is treated as a first one."""
        self._next = self.first

    def failed(self, lasted: float = 0.0) -> float:
        """The delay before the next attempt, after one that ran `lasted` seconds and failed."""
        if lasted > self.healthy_after:
            self._next = self.first
        delay = self._next
        self._next = min(delay * 2, self.cap)
        return delay
