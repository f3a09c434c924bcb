"""The per-stream error boundary: what a failing component costs (one log line, one event)."""

from __future__ import annotations

import json
import logging

import pytest
import trio

from ghostream import monitoring
from ghostream.broker.supervisor import PeerFailed, Supervisor
from ghostream.history import queries
from ghostream.history.events import Event, StreamFault
from ghostream.history.log import EventLog
from ghostream.media.errors import MalformedStream, UnsupportedStream


def recording() -> tuple[Supervisor, list[Event]]:
    events: list[Event] = []
    return Supervisor(events.append), events


async def test_malformed_data_restarts_the_component_with_growing_backoff(
    autojump_clock, caplog
) -> None:
    supervisor, events = recording()
    starts: list[float] = []

    async def packager() -> None:
        starts.append(trio.current_time())
        raise MalformedStream("H.264 picture of -240x90 after cropping")

    with caplog.at_level(logging.INFO):
        await supervisor.run("demo", "llhls", packager, again=lambda: len(starts) < 4)
    assert [round(b - a) for a, b in zip(starts, starts[1:], strict=False)] == [1, 2, 4]
    assert all(isinstance(e, StreamFault) for e in events) and len(events) == 4
    assert [e.action for e in events] == [
        "restarting in 1 s", "restarting in 2 s", "restarting in 4 s", "stopped",
    ]  # fmt: skip
    assert events[0].reason == "malformed stream: H.264 picture of -240x90 after cropping"
    lines = [r for r in caplog.records if r.name == "ghostream.broker.supervisor"]
    assert lines[0].getMessage() == (
        "demo: llhls restarting in 1 s: malformed stream: H.264 picture of -240x90 after cropping"
    )
    # The publisher's mistake is no bug: no traceback unless the server runs with -v.
    assert all(r.exc_info is None for r in lines)


async def test_a_bug_is_contained_with_its_traceback(caplog) -> None:
    supervisor, events = recording()

    async def demux() -> None:
        raise KeyError("oops")

    await supervisor.run("demo", "demux", demux)
    (fault,) = events
    assert isinstance(fault, StreamFault) and fault.action == "stopped"
    assert fault.reason == "internal error: KeyError: 'oops'"
    (record,) = [r for r in caplog.records if r.name == "ghostream.broker.supervisor"]
    assert record.levelno == logging.ERROR and record.exc_info is not None


async def test_a_failure_inside_a_nursery_is_judged_by_what_failed() -> None:
    supervisor, events = recording()

    async def feed() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.sleep_forever)
            raise MalformedStream("ADTS frame of 3 bytes")

    await supervisor.run("radio", "opus", feed)
    (fault,) = events
    assert isinstance(fault, StreamFault)
    assert fault.reason == "malformed stream: ADTS frame of 3 bytes"


async def test_what_an_output_does_not_carry_is_no_fault(caplog) -> None:
    supervisor, events = recording()

    async def packager() -> None:
        raise UnsupportedStream("it has no video (audio only)")

    with caplog.at_level(logging.INFO):
        await supervisor.run("radio", "llhls", packager, again=lambda: True)
    assert events == []
    assert "radio: llhls stopped: it has no video (audio only)" in caplog.text


async def test_cancellation_passes_through() -> None:
    supervisor, events = recording()
    with trio.move_on_after(0.01) as scope:
        await supervisor.run("demo", "srt", trio.sleep_forever)
    assert scope.cancelled_caught and events == []


def test_faults_are_counted_by_component() -> None:
    before = monitoring.REGISTRY.get_sample_value(
        "ghostream_stream_faults_total", {"component": "forward"}
    )
    monitoring.observe(StreamFault("demo", "forward", 0.0, "malformed stream: x", "stopped"))
    after = monitoring.REGISTRY.get_sample_value(
        "ghostream_stream_faults_total", {"component": "forward"}
    )
    assert after == pytest.approx((before or 0) + 1)


async def test_faults_are_kept_in_the_history(tmp_path) -> None:
    history = EventLog.open(tmp_path / "history.sqlite3")
    try:
        supervisor = Supervisor(history.record)

        async def packager() -> None:
            raise MalformedStream("unknown H.264 profile_idc 3")

        await supervisor.run("demo", "llhls", packager)
        (event,) = await history.query(queries.events, stream="demo")
        assert (event["kind"], event["protocol"]) == ("fault", "llhls")
        assert event["reason"] == "malformed stream: unknown H.264 profile_idc 3"
        assert json.loads(event["detail"]) == {"action": "stopped"}
    finally:
        history.close()


async def test_what_a_client_causes_is_raised_as_it_is_and_no_fault() -> None:
    supervisor, events = recording()

    async def session() -> None:
        async with trio.open_nursery():
            raise LookupError("the client's offer")

    with pytest.raises(LookupError):
        await supervisor.run("demo", "webrtc", session, passes=(LookupError,))
    assert events == []


async def test_a_peer_that_fails_is_a_fault_without_traceback(caplog) -> None:
    supervisor, events = recording()

    async def target() -> None:
        raise PeerFailed("rtmp://example.com/live/**** failed: cannot open")

    await supervisor.run("demo", "forward", target)
    (fault,) = events
    assert isinstance(fault, StreamFault)
    assert fault.reason == "rtmp://example.com/live/**** failed: cannot open"
    (record,) = [r for r in caplog.records if r.name == "ghostream.broker.supervisor"]
    assert record.levelno == logging.WARNING and record.exc_info is None


async def test_no_restart_once_the_stream_is_gone(autojump_clock) -> None:
    supervisor, events = recording()
    live = [True]
    starts: list[float] = []

    async def target() -> None:
        starts.append(trio.current_time())
        raise PeerFailed("refused")

    async def end_stream() -> None:
        await trio.sleep(1.5)
        live[0] = False

    async with trio.open_nursery() as nursery:
        nursery.start_soon(end_stream)
        await supervisor.run("demo", "forward", target, again=lambda: live[0])
        stopped = trio.current_time()
    # A restart after 1 s; the next wait, of 2 s, ends within a second of the stream.
    assert starts == [0, 1] and stopped == 2
