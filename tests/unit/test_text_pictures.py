"""Text-art frames shared by telnet viewers: the newest only, drawn once per terminal state."""

from __future__ import annotations

import pyte
import trio
import trio.testing

from ghostream.broker.stream import StreamEnded
from ghostream.config import TextTranscoderSettings
from ghostream.media.textart import UPPER_HALF, Picture, draw
from ghostream.outputs.telnet.frames import TextStream, TextViewer


def flat(width: int, height: int, value: int) -> Picture:
    return Picture(width, height, bytes([value, 0, 255 - value]) * width * height)


def stream_of(*values: int) -> TextStream:
    stream = TextStream("demo", TextTranscoderSettings(), hub=None)  # type: ignore[arg-type]
    for value in values:
        base = flat(8, 4, value)
        stream.add(base, {(8, 4): base, (4, 2): flat(4, 2, value)})
    return stream


async def test_a_viewer_that_fell_behind_gets_the_newest_frame_only() -> None:
    stream = stream_of(10)
    viewer = TextViewer(stream, (80, 24))
    first, size = await viewer.next_frame(None)
    assert (first.number, size) == (0, (8, 4))
    for value in (20, 30, 40):
        stream.add(flat(8, 4, value), {(8, 4): flat(8, 4, value)})
    newest, _ = await viewer.next_frame(first)
    assert newest.number == 3
    # What it is sent takes its terminal from the frame it shows to the newest.
    screen = pyte.Screen(8, 2)
    pyte.ByteStream(screen).feed(first.drawing(size, None) + newest.drawing(size, first))
    assert {cell.fg for row in range(2) for cell in screen.buffer[row].values()} == {"2800d7"}


async def test_a_waiting_viewer_wakes_for_the_next_frame_or_the_end() -> None:
    stream = stream_of(10)
    viewer = TextViewer(stream, (80, 24))
    first, _ = await viewer.next_frame(None)
    got = []

    async def wait() -> None:
        got.append((await viewer.next_frame(first))[0].number)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        stream.add(flat(8, 4, 50), {(8, 4): flat(8, 4, 50)})
    assert got == [1]
    stream.ended = "stream ended"
    latest, _ = await viewer.next_frame(None)
    assert latest.number == 1
    try:
        await viewer.next_frame(latest)
    except StreamEnded as ended:
        assert ended.reason == "stream ended"
    else:
        raise AssertionError("no StreamEnded")


async def test_a_resized_terminal_waits_for_a_frame_of_its_size() -> None:
    stream = stream_of(10)
    viewer = TextViewer(stream, (80, 24))
    viewer.resize(4, 2)  # one picture row: 2 pixels high
    assert stream.terminals == {(4, 2): 1}
    frame, size = await viewer.next_frame(None)
    assert size == (4, 2) and frame.pictures[size].width == 4


def test_viewers_in_step_share_one_drawing() -> None:
    stream = stream_of(10)
    shown = stream.frame
    stream.add(flat(8, 4, 20), {(8, 4): flat(8, 4, 20)})
    frame = stream.frame
    assert shown is not None and frame is not None
    drawing = frame.drawing((8, 4), shown)
    assert frame.drawing((8, 4), shown) is drawing
    assert drawing == draw(shown.pictures[(8, 4)], frame.pictures[(8, 4)])
    assert drawing.count(UPPER_HALF) == 16
    # A terminal showing something else (None: just connected) gets the whole picture.
    assert frame.drawing((8, 4), None).startswith(b"\x1b[0m\x1b[2J")
