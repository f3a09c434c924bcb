"""Text art as a terminal shows it: the renderer's bytes fed to pyte, a real terminal emulator."""

from __future__ import annotations

import pyte
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghostream.media.textart import UPPER_HALF, Picture, draw, fit, terminal_fit


def screen_after(*drawings: bytes, columns: int = 20, rows: int = 10) -> pyte.Screen:
    screen = pyte.Screen(columns, rows)
    stream = pyte.ByteStream(screen)
    for data in drawings:
        stream.feed(data)
    return screen


def cells(screen: pyte.Screen, picture: Picture) -> list[list[tuple[str, str, str]]]:
    return [
        [
            (screen.buffer[row][column].data, screen.buffer[row][column].fg,
             screen.buffer[row][column].bg)
            for column in range(picture.width)
        ]
        for row in range(picture.rows)
    ]  # fmt: skip


def expected_cells(picture: Picture) -> list[list[tuple[str, str, str]]]:
    def pixel(x: int, y: int) -> str:
        offset = (y * picture.width + x) * 3
        return picture.rgb[offset : offset + 3].hex()

    return [
        [
            ("▀", pixel(column, 2 * row), pixel(column, 2 * row + 1))
            for column in range(picture.width)
        ]
        for row in range(picture.rows)
    ]


def gradient(width: int, height: int, shift: int = 0) -> Picture:
    rgb = bytes(
        value
        for y in range(height)
        for x in range(width)
        for value in ((x * 12 + shift) % 256, (y * 20) % 256, (x * y + shift) % 256)
    )
    return Picture(width, height, rgb)


def test_each_cell_shows_its_upper_pixel_over_its_lower_pixel() -> None:
    picture = gradient(12, 8)
    screen = screen_after(draw(None, picture))
    assert cells(screen, picture) == expected_cells(picture)


def test_only_changed_cells_are_drawn_again() -> None:
    before = gradient(12, 8)
    after = bytearray(before.rgb)
    after[(3 * 12 + 5) * 3] ^= 0xFF  # pixel (5, 3): the cell at row 1, column 5
    after[(6 * 12 + 0) * 3 + 1] ^= 0xFF  # pixel (0, 6): the cell at row 3, column 0
    changed = Picture(12, 8, bytes(after))
    delta = draw(before, changed)
    assert delta.count(UPPER_HALF) == 2
    assert b"\x1b[2;6H" in delta and b"\x1b[4;1H" in delta
    screen = screen_after(draw(None, before), delta)
    assert cells(screen, changed) == expected_cells(changed)
    assert draw(changed, changed) == b""


def test_a_colour_is_set_only_when_it_changes() -> None:
    flat = Picture(10, 4, bytes([10, 20, 30]) * 40)
    drawing = draw(None, flat)
    assert drawing.count(b"38;2;10;20;30") == 1 and drawing.count(b"48;2;10;20;30") == 1
    assert drawing.count(UPPER_HALF) == 20


def test_a_picture_of_another_size_clears_the_screen_first() -> None:
    drawing = draw(gradient(12, 8), gradient(6, 4))
    assert drawing.startswith(b"\x1b[0m\x1b[2J")
    assert drawing.count(UPPER_HALF) == 12


def test_pictures_are_drawn_from_the_row_asked() -> None:
    assert draw(None, gradient(2, 2), top=5).count(b"\x1b[5;1H") == 1


@given(
    st.integers(1, 6),
    st.integers(1, 4),
    st.data(),
)
def test_any_change_leaves_the_terminal_showing_the_new_picture(width, rows, data) -> None:
    size = width * rows * 2 * 3
    colours = st.binary(min_size=size, max_size=size)
    first = Picture(width, rows * 2, data.draw(colours))
    second = Picture(width, rows * 2, data.draw(colours))
    screen = screen_after(draw(None, first), draw(first, second))
    assert cells(screen, second) == expected_cells(second)


@pytest.mark.parametrize(
    ("source", "bounds", "fitted"),
    [
        ((160, 90), (80, 45), (80, 44)),  # 16:9 in the default size
        ((320, 240), (80, 45), (60, 44)),  # 4:3 keeps its shape
        ((1920, 1080), (80, 45), (80, 44)),
        ((40, 20), (80, 45), (40, 20)),  # never enlarged
        ((81, 45), (80, 45), (80, 44)),
        ((100, 1), (80, 45), (80, 2)),  # at least one character row
    ],
)
def test_pictures_keep_their_shape_within_the_bounds(source, bounds, fitted) -> None:
    assert fit(*source, *bounds) == fitted


def test_a_terminal_keeps_a_row_for_the_status_line() -> None:
    assert terminal_fit(80, 44, 80, 24) == (80, 44)
    assert terminal_fit(80, 44, 40, 12) == (40, 22)
    assert terminal_fit(80, 44, 200, 5) == (15, 8)
    width, height = terminal_fit(80, 44, 1, 1)
    assert width >= 1 and height >= 2


def test_a_picture_needs_an_even_height_and_all_its_bytes() -> None:
    with pytest.raises(ValueError):
        Picture(2, 3, bytes(18))
    with pytest.raises(ValueError):
        Picture(2, 2, bytes(11))
