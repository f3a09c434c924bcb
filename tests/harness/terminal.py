"""Debian's `telnet` in a pseudo-terminal, its screen kept by pyte (a terminal emulator).

What the server sends goes through the real client (its option negotiation,
its window-size reports when the terminal is resized) to a terminal, as a
person running `telnet HOST 8023` would see it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pexpect
import pyte

CURSOR_MOVE = re.compile(rb"\x1b\[(\d+);(\d+)H")


class TelnetTerminal:
    def __init__(self, program: str, port: int, rows: int = 24, columns: int = 80) -> None:
        self.screen = pyte.Screen(columns, rows)
        self._stream = pyte.ByteStream(self.screen)
        self.output = bytearray()
        self.ended = False
        self.child = pexpect.spawn(
            program, ["127.0.0.1", str(port)], dimensions=(rows, columns), env={"TERM": "xterm"}
        )

    def read(self, timeout: float = 0.2) -> None:
        try:
            data = self.child.read_nonblocking(65536, timeout)
        except pexpect.TIMEOUT:
            return
        except pexpect.EOF:
            self.ended = True
            return
        self.output += data
        self._stream.feed(data)

    def wait_for(self, what: str, condition: Callable[[], bool], timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout}s; screen:\n{self.text()}")
            self.read()

    def wait_for_text(self, text: str, timeout: float = 15.0) -> None:
        self.wait_for(repr(text), lambda: text.encode() in self.output, timeout)

    def type(self, text: str) -> None:
        self.child.send(text.encode())

    def resize(self, rows: int, columns: int) -> None:
        """The window changes: the client tells the server (NAWS)."""
        self.screen.resize(rows, columns)
        self.child.setwinsize(rows, columns)

    def text(self) -> str:
        return "\n".join(self.screen.display)

    def closed(self) -> bool:
        """Whether the client has exited and all it printed has been read."""
        self.read(0.05)
        return self.ended

    def close(self) -> None:
        self.child.close(force=True)
