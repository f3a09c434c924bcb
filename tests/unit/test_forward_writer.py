"""A forward writer stuck on a target that stopped reading is cut off and joined, not left."""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from ghostream.media.demux import MediaPacket, Track
from ghostream.outputs import forward
from ghostream.outputs.forward import Writer
from ghostream.outputs.forward_socket import TargetConnection

VIDEO = Track("video", "h264", b"")
# An access unit delimiter, then padding: enough for the TS muxer, large enough to fill buffers.
UNIT = b"\x00\x00\x00\x01\x09\xf0" + bytes(64 * 1024)


def unit(number: int) -> MediaPacket:
    return MediaPacket(VIDEO, UNIT, number * 3600, number * 3600, number == 0)


def writer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("forward ")]


@asynccontextmanager
async def silent_target() -> AsyncIterator[int]:
    """A TCP target that takes connections and never reads from them; its port."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")

    async def never_read(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, never_read, listeners)
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def blocked_writer(port: int, limiter: trio.CapacityLimiter, name: str) -> Writer:
    """A writer fed until it takes no more: its write is blocked on the target's full buffers."""
    writer = Writer(f"tcp://127.0.0.1:{port}", [VIDEO], (160, 90))
    writer.queue.put_nowait(unit(0))
    await writer.start(limiter, name)
    number = 1
    with trio.fail_after(30):
        while True:
            try:
                writer.queue.put_nowait(unit(number))
            except queue.Full:
                break
            number += 1
            await trio.sleep(0)
    assert not writer.done.is_set(), writer.failure
    return writer


async def test_a_writer_blocked_on_a_silent_target_is_cut_and_joined(monkeypatch) -> None:
    monkeypatch.setattr(forward, "FINISH_TIMEOUT", 0.5)
    limiter = trio.CapacityLimiter(2)
    async with silent_target() as port:
        writer = await blocked_writer(port, limiter, "silent target")
        with trio.fail_after(forward.JOIN_TIMEOUT):
            await writer.stop("demo", "silent target")
        assert writer.done.is_set() and writer.failure is not None
        assert "write failed" in str(writer.failure)
        assert limiter.borrowed_tokens == 0 and writer_threads() == []


async def test_a_cut_takes_only_the_stopped_writers_connection(monkeypatch) -> None:
    """Two targets on one server: stopping one leaves the other's connection alone."""
    monkeypatch.setattr(forward, "FINISH_TIMEOUT", 0.5)
    limiter = trio.CapacityLimiter(2)
    async with silent_target() as port:
        first = await blocked_writer(port, limiter, "first")
        second = await blocked_writer(port, limiter, "second")
        with trio.fail_after(forward.JOIN_TIMEOUT):
            await first.stop("demo", "first")
        assert first.done.is_set() and not second.done.is_set()
        assert [t.name for t in writer_threads()] == ["forward second"]
        with trio.fail_after(forward.JOIN_TIMEOUT):
            await second.stop("demo", "second")
        assert limiter.borrowed_tokens == 0 and writer_threads() == []


async def test_a_writer_that_ends_cleanly_is_joined_without_a_cut(tmp_path) -> None:
    recording = tmp_path / "out.ts"
    writer = Writer(str(recording), [VIDEO], (160, 90))
    for number in range(3):
        writer.queue.put_nowait(unit(number))
    limiter = trio.CapacityLimiter(1)
    await writer.start(limiter, "file")
    with trio.fail_after(forward.JOIN_TIMEOUT):
        await writer.stop("demo", "file")
    assert writer.failure is None and writer.bytes == 3 * len(UNIT)
    assert recording.stat().st_size > 3 * len(UNIT)
    assert limiter.borrowed_tokens == 0


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("rtmp://example.com/live/key", ("example.com", 1935)),
        ("rtmps://example.com/live/key", ("example.com", 443)),
        ("tcp://127.0.0.1:9000", ("127.0.0.1", 9000)),
        ("srt://127.0.0.1:9000", None),
        ("/recordings/demo.ts", None),
    ],
)
def test_only_tcp_targets_have_a_connection_to_cut(url: str, address: object) -> None:
    assert TargetConnection(url).address == address
