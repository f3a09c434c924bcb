"""One increasing clock out of a stream whose timestamps start over (reconnects, encoder restarts).

A publisher that reconnects starts its timestamps afresh, an encoder that
restarts may jump back, and after 26.5 hours the PES clock wraps (the
demuxer unwraps that one).  Outputs that must not see time go back keep
their connection open across such a change and pass every timestamp
through a `Continuity`: forwarding (muxers refuse a DTS that goes back),
WebRTC (a browser holds frames whose time lies ahead, or drops those
behind, stalling for seconds) and the transcoder's encoders.  LL-HLS does
not need it: it marks a discontinuity instead, as the format wants.
"""

from __future__ import annotations

CLOCK = 90000


class Continuity:
    """Shifts runs of timestamps so that each run starts one `step` after the newest one out.

    Within a run the spacing is kept exactly.  A new run begins when told
    (`restart`, on a new track) or when a timestamp lands more than
    `max_back` behind or `max_gap` ahead of the newest one out.
    """

    def __init__(
        self, *, step: int = CLOCK // 25, max_back: int = CLOCK, max_gap: int = 5 * CLOCK
    ) -> None:
        self.step = step
        self.max_back = max_back
        self.max_gap = max_gap
        self.offset = 0
        self.newest: int | None = None
        self._restart = False

    def restart(self) -> None:
        """The next timestamp begins a new run (a new publisher, new tracks)."""
        self._restart = True

    def __call__(self, timestamp: int) -> int:
        out = timestamp + self.offset
        newest = self.newest
        if newest is not None and (
            self._restart or out < newest - self.max_back or out > newest + self.max_gap
        ):
            self.offset = newest + self.step - timestamp
            out = newest + self.step
        self._restart = False
        self.newest = out if newest is None else max(newest, out)
        return out
