"""Per-host slots and once-per-host reports, with a fake clock."""

from __future__ import annotations

from ghostream.per_host import HostSlots, OncePerHost


def test_a_host_holds_at_most_its_slots_and_gets_them_back() -> None:
    slots = HostSlots(2)
    slots.take("192.0.2.1")
    assert not slots.full("192.0.2.1")
    slots.take("192.0.2.1")
    assert slots.full("192.0.2.1") and not slots.full("192.0.2.2")
    slots.give_back("192.0.2.1")
    assert not slots.full("192.0.2.1")
    slots.give_back("192.0.2.1")
    assert slots.count("192.0.2.1") == 0 and not slots._open


def test_a_host_is_reported_once_per_interval_with_what_went_unsaid() -> None:
    now = [0.0]
    reports = OncePerHost(60.0, clock=lambda: now[0])
    assert reports.due("192.0.2.1") == 0
    assert [reports.due("192.0.2.1") for _ in range(1000)] == [None] * 1000
    # Another host is reported on its own.
    assert reports.due("192.0.2.2") == 0
    now[0] = 60.0
    assert reports.due("192.0.2.1") == 1000
    assert reports.due("192.0.2.1") is None


def test_the_table_of_reported_hosts_is_bounded() -> None:
    reports = OncePerHost(60.0, max_hosts=3, clock=lambda: 0.0)
    for n in range(10):
        assert reports.due(f"192.0.2.{n}") == 0
    assert len(reports._reported) == 3
