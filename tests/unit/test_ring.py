"""The one ring and its cursor rule, and TS inspected once on its way to the demuxer."""

from __future__ import annotations

import subprocess

import trio
from harness.programs import require

from ghostream.broker.ring import Cursor, Ring, StreamEnded
from ghostream.broker.stream import Stream
from ghostream.media import ts
from ghostream.media.demux import TsDemuxer
from ghostream.media.ts import PACKET_SIZE

CHUNK = 7 * PACKET_SIZE


def filled(count: int, *, every: int = 4, capacity: int = 100) -> Ring[int]:
    """Items 0..count-1, a start every `every` items."""
    ring = Ring[int](capacity)
    for item in range(count):
        ring.append(item, start=item % every == 0)
    return ring


def read(cursor: Cursor[int], count: int) -> list[int]:
    out = []
    for _ in range(count):
        index = cursor.place()
        assert index is not None and index < cursor.ring.next
        out.append(cursor.ring[index])
        cursor.advance(1)
    return out


async def test_a_reader_starts_at_the_latest_start_and_waits_without_one() -> None:
    ring = Ring[int](100)
    cursor = Cursor(ring, max_lag=50)
    ring.append(0, start=False)
    assert cursor.place() is None
    ring.append(1, start=True)
    ring.append(2, start=False)
    assert cursor.place() == 1 and cursor.fresh
    assert read(cursor, 2) == [1, 2] and not cursor.fresh


async def test_a_lagging_reader_skips_to_a_newer_start_only(autojump_clock) -> None:
    ring = filled(10, every=4)
    told: list[bool] = []
    cursor = Cursor(ring, max_lag=3, on_skip=told.append)
    assert read(cursor, 1) == [8]
    for item in range(10, 16):
        ring.append(item, start=False)
    # Behind by more than it allows, but no newer start: it reads on.
    assert read(cursor, 1) == [9] and told == []
    ring.append(16, start=True)
    assert read(cursor, 1) == [16] and cursor.fresh is False
    assert told == [False] and cursor.skips == 1


async def test_a_reader_that_keeps_falling_behind_is_dropped_unless_it_serves_many(
    autojump_clock,
) -> None:
    ring = Ring[int](8)
    told: list[bool] = []
    viewer = Cursor(ring, max_lag=100, on_skip=told.append)
    work = Cursor(ring, max_lag=100, droppable=False)
    item = 0
    outcomes = []
    for _ in range(4):
        for _ in range(10):
            ring.append(item, start=item % 4 == 0)
            item += 1
        # Both fell off the ring since their last read.
        try:
            outcomes.append(read(viewer, 1)[0] % 4)
        except StreamEnded as ended:
            outcomes.append(ended.reason)
        assert read(work, 1)[0] % 4 == 0
        await trio.sleep(1)
    assert outcomes == [0, 0, 0, "too slow: fell behind repeatedly"]
    assert told == [False, False, True]
    assert work.skips == 3 and work.dropped is None


async def test_skips_far_apart_are_forgiven(autojump_clock) -> None:
    ring = Ring[int](8)
    cursor = Cursor(ring, max_lag=100)
    for round_ in range(5):
        for item in range(10 * round_, 10 * round_ + 10):
            ring.append(item, start=item % 4 == 0)
        read(cursor, 1)
        await trio.sleep(20)
    assert cursor.skips == 4 and cursor.dropped is None


async def test_after_a_new_publisher_readers_start_at_its_first_start() -> None:
    ring = filled(6)
    cursor = Cursor(ring, max_lag=100)
    read(cursor, 2)
    ring.restart()
    ring.append(100, start=False)
    assert cursor.place() is None
    ring.append(101, start=True)
    assert read(cursor, 1) == [101] and cursor.fresh is False and cursor.skips == 0


def test_lag_is_the_weight_behind_the_newest_item() -> None:
    ring = Ring[bytes](10, len)
    for data in (b"aaaa", b"bb", b"cccc", b"d"):
        ring.append(data, start=False)
    # The first item went: 11 bytes were more than 10.
    assert ring.first == 1 and ring.buffered == 7
    assert [ring.lag(i) for i in range(0, 5)] == [7, 7, 5, 1, 0]


async def test_each_chunk_is_inspected_once_and_demuxed_as_from_a_file(
    tmp_path, monkeypatch
) -> None:
    require("ffmpeg")
    path = tmp_path / "source.ts"
    subprocess.run(
        ["ffmpeg", "-hide_banner", "-loglevel", "error",
         "-f", "lavfi", "-i", "testsrc2=size=160x90:rate=25",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
         "-t", "1", "-c:v", "libx264", "-g", "10", "-c:a", "aac", "-f", "mpegts", str(path)],
        check=True,
    )  # fmt: skip
    data = path.read_bytes()
    expected = TsDemuxer().feed(data)
    inspected: list[int] = []
    original = ts.TsInspector.inspect

    def counting(self, chunk: bytes) -> ts.ChunkInfo:
        inspected.append(len(chunk))
        return original(self, chunk)

    monkeypatch.setattr(ts.TsInspector, "inspect", counting)
    stream = Stream("once")
    subscription = stream.subscribe()
    demuxer = TsDemuxer()
    got = []
    parts = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    for part in parts:
        stream.publish(part)
        if stream.gop_start is not None:
            got += demuxer.feed(await subscription.receive(), subscription.program)
    # The stream's inspection, once per chunk, and nothing more.
    assert inspected == [len(part) for part in parts]
    assert demuxer.invalid == 0 and got
    assert [(p.track, p.pts, p.data) for p in got] == [(p.track, p.pts, p.data) for p in expected]
