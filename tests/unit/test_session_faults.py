"""A failing WebRTC session or telnet client is a fault of its stream only: the others go on.

Real peers cannot make the server fail, so the failures are planted: a
session body that raises, a text-art viewer that raises.  What is checked is
what the supervisor makes of them (one log line, a `StreamFault` event, the
`ghostream_stream_faults_total{component}` metric) and that the other
sessions, and the service, keep running.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager

import pytest
import trio
import trio.testing

from ghostream import monitoring
from ghostream.broker.packets import PacketHub
from ghostream.broker.registry import Broker
from ghostream.config import ListenAddress, TelnetSettings, TextTranscoderSettings, WebrtcSettings
from ghostream.history.events import Event, StreamFault
from ghostream.media.textart import Picture
from ghostream.outputs.telnet import TelnetOutput
from ghostream.outputs.telnet.frames import TextStream, TextViewer
from ghostream.webrtc import WebRtcOutput
from ghostream.webrtc.refusals import WebRtcError


def faults_counted(component: str) -> float:
    labels = {"component": component}
    return monitoring.REGISTRY.get_sample_value("ghostream_stream_faults_total", labels) or 0.0


def recording_broker() -> tuple[Broker, list[Event]]:
    broker = Broker()
    events: list[Event] = []
    broker.on_event += [events.append, monitoring.observe]
    return broker, events


def faults(events: list[Event]) -> list[StreamFault]:
    return [e for e in events if isinstance(e, StreamFault)]


# WebRTC: sessions (viewers and WHIP publishes) start through `WebRtcOutput.start_session`.


@asynccontextmanager
async def webrtc_output(broker: Broker) -> AsyncIterator[WebRtcOutput]:
    settings = WebrtcSettings(
        min_port_udp=0, max_port_udp=0, tcp_listen_address=ListenAddress("", 0), stun_servers=[]
    )
    output = WebRtcOutput(settings, broker, hub=PacketHub(broker))
    async with trio.open_nursery() as nursery:
        await nursery.start(output.run)
        yield output
        nursery.cancel_scope.cancel()


RUNNING: set[str] = set()


async def serving(name: str, *, task_status: trio.TaskStatus[str]) -> None:
    RUNNING.add(name)
    try:
        task_status.started("answer")
        await trio.sleep_forever()
    finally:
        RUNNING.discard(name)


async def test_a_webrtc_session_that_fails_is_a_fault_and_the_others_play_on() -> None:
    broker, events = recording_broker()
    before = faults_counted("webrtc")
    failing = trio.Event()

    async def failing_session(*, task_status: trio.TaskStatus[str]) -> None:
        task_status.started("answer")
        await failing.wait()
        raise KeyError("a bug")

    async with webrtc_output(broker) as output:
        assert await output.start_session("webrtc", "other", serving, "other") == "answer"
        assert await output.start_session("webrtc", "demo", failing_session) == "answer"
        failing.set()
        await trio.testing.wait_all_tasks_blocked()
        (fault,) = faults(events)
        assert (fault.stream_id, fault.component, fault.action) == ("demo", "webrtc", "stopped")
        assert fault.reason == "internal error: KeyError: 'a bug'"
        assert faults_counted("webrtc") == pytest.approx(before + 1)
        # The other session plays on, and the output still takes new ones.
        assert await output.start_session("whip", "third", serving, "third") == "answer"
        assert RUNNING == {"other", "third"}
    assert len(faults(events)) == 1


async def test_a_client_mistake_is_answered_and_is_no_fault() -> None:
    broker, events = recording_broker()

    async def bad_offer(*, task_status: trio.TaskStatus[str]) -> None:
        raise WebRtcError(400, "malformed SDP offer")

    async with webrtc_output(broker) as output:
        with pytest.raises(WebRtcError) as refused:
            await output.start_session("webrtc", "demo", bad_offer)
        assert refused.value.status == 400
    assert faults(events) == []


async def test_a_session_that_fails_before_answering_is_a_500_and_a_fault() -> None:
    broker, events = recording_broker()

    async def broken(*, task_status: trio.TaskStatus[str]) -> None:
        raise RuntimeError("a bug in negotiation")

    async with webrtc_output(broker) as output:
        with pytest.raises(WebRtcError) as refused:
            await output.start_session("whip", "demo", broken)
        assert refused.value.status == 500
    ((stream_id, component),) = [(f.stream_id, f.component) for f in faults(events)]
    assert (stream_id, component) == ("demo", "whip")


# Telnet: each client is a task of the listener; showing a stream is supervised per stream.


def picture(value: int) -> Picture:
    return Picture(8, 4, bytes([value, 0, 255 - value]) * 32)


class PlantedPictures:
    """Text art for `good` (frames added by the test); `bad` fails as a bug would."""

    def __init__(self) -> None:
        self.good = TextStream("good", TextTranscoderSettings(), hub=None)  # type: ignore[arg-type]

    def add(self, value: int) -> None:
        self.good.add(picture(value), {(8, 4): picture(value)})

    @asynccontextmanager
    async def watch(self, stream_id: str, terminal: tuple[int, int]) -> AsyncIterator[object]:
        yield TextViewer(self.good, terminal) if stream_id == "good" else Broken()


class Broken:
    def resize(self, columns: int, rows: int) -> None:
        pass

    async def next_frame(self, after: object) -> object:
        raise KeyError("a bug")


async def receive_until(stream: trio.abc.Stream, marker: bytes) -> bytes:
    received = b""
    with trio.fail_after(5):
        while marker not in received:
            data = await stream.receive_some(65536)
            assert data, f"connection closed before {marker!r}: {received!r}"
            received += data
    return received


async def test_a_telnet_client_that_fails_is_a_fault_and_the_others_watch_on() -> None:
    broker, events = recording_broker()
    before = faults_counted("telnet")
    hub = PacketHub(broker)
    output = TelnetOutput(TelnetSettings(), TextTranscoderSettings(), broker, hub=hub)
    pictures = output.pictures = PlantedPictures()  # type: ignore[assignment]
    pictures.add(10)
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    with ExitStack() as live:
        for stream_id in ("good", "bad"):
            live.enter_context(broker.publish(stream_id, "publisher", "srt"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, output._serve, [listener])
            watcher = await trio.open_tcp_stream("127.0.0.1", port)
            failing = await trio.open_tcp_stream("127.0.0.1", port)
            await receive_until(watcher, b"stream name: ")
            await watcher.send_all(b"good\r\n")
            await receive_until(watcher, b"press q to quit")

            await receive_until(failing, b"stream name: ")
            await failing.send_all(b"bad\r\n")
            # The failing client hears why, and is asked for another stream.
            told = await receive_until(failing, b"stream name: ")
            assert b"Stream bad: internal error." in told
            (fault,) = faults(events)
            assert (fault.stream_id, fault.component, fault.action) == ("bad", "telnet", "stopped")
            assert faults_counted("telnet") == pytest.approx(before + 1)

            # The other client still gets the good stream's new pictures.
            pictures.add(200)
            await receive_until(watcher, b"38;2;")
            nursery.cancel_scope.cancel()
