"""RGB pictures drawn as truecolor ANSI text art, two pixels per character cell.

Each cell is an upper half block (`▀`) whose foreground colour is the upper
pixel and whose background colour is the lower one, so a terminal shows a
`width` × `height` picture in `width` columns and `height / 2` rows, with
pixels about as wide as they are tall.  `draw` writes only the cells that
differ from the picture the terminal already shows, and sets a colour only
when it differs from the one in effect, because a terminal behind a slow
link is limited by bytes, not by cells.
"""

from __future__ import annotations

from dataclasses import dataclass

UPPER_HALF = "▀".encode()
CLEAR = b"\x1b[0m\x1b[2J"
HIDE_CURSOR = b"\x1b[?25l"
SHOW_CURSOR = b"\x1b[?25h"
ALTERNATE_SCREEN = b"\x1b[?1049h"
NORMAL_SCREEN = b"\x1b[?1049l"
RESET = b"\x1b[0m"


@dataclass(frozen=True, slots=True)
class Picture:
    """Packed 8-bit RGB rows, `height` even (one character row per two pixel rows)."""

    width: int
    height: int
    rgb: bytes

    def __post_init__(self) -> None:
        if self.height % 2 or len(self.rgb) != self.width * self.height * 3:
            raise ValueError(f"{self.width}x{self.height} RGB needs an even height and W*H*3 bytes")

    @property
    def rows(self) -> int:
        return self.height // 2


def fit(width: int, height: int, max_width: int, max_height: int) -> tuple[int, int]:
    """The largest size of a `width` × `height` picture's shape within the bounds (even height).

    Pixels are shown square, so the shape is kept; a picture is never enlarged.
    """
    width, height = max(1, width), max(1, height)
    max_width, max_height = max(1, max_width), max(2, max_height)
    scale = min(max_width / width, max_height / height, 1.0)
    fitted_width = max(1, min(max_width, round(width * scale)))
    fitted_height = max(2, min(max_height - max_height % 2, round(height * scale / 2) * 2))
    return fitted_width, fitted_height


def terminal_fit(width: int, height: int, columns: int, rows: int) -> tuple[int, int]:
    """The picture size for a terminal, one row being kept for the status line."""
    return fit(width, height, columns, 2 * (rows - 1))


def draw(previous: Picture | None, current: Picture, *, top: int = 1) -> bytes:
    """Bytes that turn a terminal showing `previous` (None: anything) into one showing `current`.

    The picture's first row is drawn at terminal row `top`; with no previous
    picture of the same size the screen is cleared and every cell drawn.
    """
    width, rgb = current.width, current.rgb
    if previous is None or (previous.width, previous.height) != (width, current.height):
        old = None
        out = [CLEAR]
    else:
        old = previous.rgb
        out = []
    line = width * 3
    foreground = background = b""
    for row in range(current.rows):
        upper_start = 2 * row * line
        lower_start = upper_start + line
        upper = rgb[upper_start:lower_start]
        lower = rgb[lower_start : lower_start + line]
        if old is not None and (
            old[upper_start:lower_start] == upper and old[lower_start : lower_start + line] == lower
        ):
            continue
        cursor_at = -1
        for column in range(width):
            start = column * 3
            fg = upper[start : start + 3]
            bg = lower[start : start + 3]
            if (
                old is not None
                and old[upper_start + start : upper_start + start + 3] == fg
                and old[lower_start + start : lower_start + start + 3] == bg
            ):
                continue
            if cursor_at != column:
                out.append(b"\x1b[%d;%dH" % (top + row, column + 1))
            cursor_at = column + 1
            colours = []
            if fg != foreground:
                colours.append(b"38;2;%d;%d;%d" % (fg[0], fg[1], fg[2]))
                foreground = fg
            if bg != background:
                colours.append(b"48;2;%d;%d;%d" % (bg[0], bg[1], bg[2]))
                background = bg
            if colours:
                out.append(b"\x1b[" + b";".join(colours) + b"m")
            out.append(UPPER_HALF)
    if out:
        out.append(RESET)
    return b"".join(out)
