"""The retry rule of forwarding, supervised tasks and edge pulls."""

from ghostream.backoff import Backoff
from ghostream.broker.supervisor import FIRST_RETRY, HEALTHY_AFTER, MAX_RETRY


def test_delays_double_up_to_the_cap() -> None:
    backoff = Backoff(1.0, 60.0)
    assert [backoff.failed() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_a_target_that_worked_for_a_while_is_retried_quickly_again() -> None:
    """A forward that ran longer than HEALTHY_AFTER then broke starts from the first delay."""
    backoff = Backoff(FIRST_RETRY, MAX_RETRY, HEALTHY_AFTER)
    flapping = [backoff.failed(lasted=0.5) for _ in range(8)]
    assert flapping[-1] == MAX_RETRY
    assert backoff.failed(lasted=HEALTHY_AFTER + 1) == FIRST_RETRY
    assert backoff.failed(lasted=0.5) == FIRST_RETRY * 2


def test_an_attempt_shorter_than_healthy_keeps_backing_off() -> None:
    backoff = Backoff(FIRST_RETRY, MAX_RETRY, HEALTHY_AFTER)
    backoff.failed(lasted=0.5)
    assert backoff.failed(lasted=HEALTHY_AFTER - 1) == FIRST_RETRY * 2


def test_reset_makes_the_next_failure_a_first_one() -> None:
    backoff = Backoff(0.25, 4.0)
    for _ in range(5):
        backoff.failed()
    backoff.reset()
    assert backoff.failed() == 0.25
