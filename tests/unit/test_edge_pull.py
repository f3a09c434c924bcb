"""An edge's pull of a stream the origin does not have: retries, their pace, letting go.

The origin here answers every attempt with "not found" (the SRT caller is
replaced by one that says so at once) and the clock is Trio's mock clock,
(autojump), so the schedule is checked exactly: the real SRT path is covered by the
interop tests with real servers.
"""

from __future__ import annotations

import itertools
from contextlib import asynccontextmanager

import pytest
import trio

from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import Broker
from ghostream.config import OriginSettings
from ghostream.edge import puller as puller_module
from ghostream.edge.puller import ASKED_RETRY, FIRST_RETRY, MAX_RETRY, EdgePuller
from ghostream.srt.endpoint import SrtRejected
from ghostream.srt.packet import RejectReason

IDLE = 10


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, str]]:
    """When the edge called the origin, and with which stream id."""
    calls: list[tuple[float, str]] = []

    @asynccontextmanager
    async def offline_origin(host: str, port: int, *, streamid: str, **options):
        calls.append((trio.current_time(), streamid))
        raise SrtRejected(RejectReason.NOTFOUND)
        yield

    monkeypatch.setattr(puller_module, "connect", offline_origin)
    return calls


async def test_retries_back_off_and_stop_when_nobody_asks(
    attempts, nursery, autojump_clock
) -> None:
    broker = Broker()
    settings = OriginSettings(url="srt://origin:9710", key="edge-key-1", idle_timeout=IDLE)
    edge = EdgePuller(settings, 0.12, broker, PacketHub(broker))
    await nursery.start(edge.run)
    assert broker.providers[0] == edge.provide
    started = trio.current_time()
    assert not await edge.provide("demo")
    assert attempts == [(started, "#!::r=demo,m=request,s=edge-key-1")]
    # Nobody asks: the waits double up to their cap, until the idle timeout.
    await trio.sleep(IDLE + MAX_RETRY + 1)
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(attempts)]
    assert gaps[:3] == [FIRST_RETRY, FIRST_RETRY * 2, FIRST_RETRY * 4]
    assert max(gaps) == MAX_RETRY
    assert attempts[-1][0] - started < IDLE
    assert "demo" not in edge.pulls


async def test_viewers_asking_cut_the_backoff_short_but_not_below_a_second(
    attempts, nursery, autojump_clock
) -> None:
    broker = Broker()
    settings = OriginSettings(url="srt://origin:9710", idle_timeout=IDLE)
    edge = EdgePuller(settings, 0.12, broker, PacketHub(broker))
    await nursery.start(edge.run)
    assert not await edge.provide("demo")
    await trio.sleep(MAX_RETRY * 2)  # the backoff has reached its cap, still within IDLE
    asked = len(attempts)
    for _ in range(50):
        # Every refused viewer is answered at once, as for any offline stream.
        with trio.fail_after(ASKED_RETRY + 0.01):
            assert not await edge.provide("demo")
        await trio.sleep(0.1)
    times = [when for when, _ in attempts[asked:]]
    assert [streamid for _, streamid in attempts] == ["demo"] * len(attempts)
    assert len(times) > 3
    assert min(b - a for a, b in itertools.pairwise(times)) >= ASKED_RETRY
