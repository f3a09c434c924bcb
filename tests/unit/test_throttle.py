"""The failure throttle: exponential, capped, bounded, cleared by a success, keyed by host."""

from __future__ import annotations

from ghostream.auth.throttle import FailureThrottle, host_key


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_delays_double_up_to_a_minute_and_a_success_clears_them() -> None:
    throttle = FailureThrottle(base_delay=1.0, max_delay=60.0, clock=Clock())
    delays = [throttle.failed("host:192.0.2.1") for _ in range(10)]
    assert delays == [0, 1, 2, 4, 8, 16, 32, 60, 60, 60]
    throttle.succeeded("host:192.0.2.1")
    assert throttle.failed("host:192.0.2.1") == 0


def test_the_longest_of_the_keys_delays() -> None:
    throttle = FailureThrottle(base_delay=1.0, clock=Clock())
    for _ in range(5):
        throttle.failed("host:192.0.2.1", "stream:demo")
    assert throttle.failed("host:198.51.100.7", "stream:demo") == 16


def test_a_quiet_key_starts_over() -> None:
    clock = Clock()
    throttle = FailureThrottle(base_delay=1.0, forget_after=900, clock=clock)
    for _ in range(5):
        throttle.failed("host:192.0.2.1")
    clock.now += 901
    assert throttle.failed("host:192.0.2.1") == 0


def test_the_table_is_bounded() -> None:
    throttle = FailureThrottle(max_keys=100, clock=Clock())
    for n in range(10_000):
        throttle.failed(f"host:10.0.{n // 256}.{n % 256}")
    assert len(throttle) == 100


def test_a_host_is_an_ipv4_address_or_an_ipv6_64() -> None:
    assert host_key("192.0.2.1:5000") == host_key("192.0.2.1:6000") == "host:192.0.2.1"
    assert host_key("[::ffff:192.0.2.1]:5000") == "host:192.0.2.1"
    assert (
        host_key("[2001:db8:1:2::5]:5000")
        == host_key("2001:db8:1:2:ffff::9")
        == ("host:2001:db8:1:2::/64")
    )
    assert host_key("[2001:db8:1:3::5]:5000") != host_key("[2001:db8:1:2::5]:5000")
