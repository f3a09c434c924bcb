"""Outputs that keep one connection across publishers see one clock that never goes back."""

from __future__ import annotations

from ghostream.media.continuity import Continuity

FRAME = 3600


def test_a_run_keeps_its_spacing_and_a_new_one_follows_the_last() -> None:
    clock = Continuity()
    first = [clock(t) for t in range(900_000, 900_000 + 5 * FRAME, FRAME)]
    assert first == list(range(900_000, 900_000 + 5 * FRAME, FRAME))
    clock.restart()  # a new publisher, its clock back near zero
    second = [clock(t) for t in range(126_000, 126_000 + 3 * FRAME, FRAME)]
    assert second == [first[-1] + FRAME * n for n in (1, 2, 3)]


def test_jumps_start_a_new_run_but_reordering_does_not() -> None:
    clock = Continuity()
    assert [clock(t) for t in (0, 3600, 10800, 7200, 14400)] == [0, 3600, 10800, 7200, 14400]
    # Ten seconds ahead (an encoder that skipped), then two seconds back (one that restarted).
    assert clock(14400 + 900_000) == 14400 + FRAME
    assert clock(14400 + 900_000 + FRAME) == 14400 + 2 * FRAME
    assert clock(1000) == 14400 + 3 * FRAME
